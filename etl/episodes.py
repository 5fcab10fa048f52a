"""Episodes: which decisions form an episode, step numbers, terminal versus timeout.

- ``promotion``: one stitched user over a horizon. A user's decisions are cut into runs where
  consecutive decisions are at most ``churn_days`` apart; each run is cut into episodes of at most
  ``horizon_steps`` decisions and ``horizon_days`` from the episode's first decision. The last step
  of an episode is ``terminal`` when the user churned (the next decision is more than
  ``churn_days`` later, or there is none and the data extends ``churn_days`` past it) and
  ``timeout`` otherwise (cut by the horizon or by the end of the data).
- ``recommendation``: one session; the session's last decision is terminal, unless the session
  may still be running at the end of the data (its last event is within the session gap of the
  data's end): then timeout.
- ``one_step``: every decision is its own episode, step 0, terminal.

Episode ids are derived from the data, never from the run: ``<user>/<first decision's time in
epoch microseconds>`` (promotion), ``<user>/<session>`` (recommendation), the decision_id
(one_step). Any run that sees the same decisions (a backfill, or nightly runs with their
lookback, in any order) gives the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from etl.clean import SESSION, US_PER_MINUTE, USER, days_us
from etl.config import EtlConfig

EPISODE_COLUMNS = ("decision_id", "episode_id", "step", "terminal", "timeout")


def episode_mode(config: EtlConfig) -> str:
    """The episode mode in force (``auto`` resolved by scenario)."""
    if config.episode_mode != "auto":
        return config.episode_mode
    return config.scenario


def episodes(
    decisions: pl.DataFrame,
    config: EtlConfig,
    data_end_us: int,
    session_last_us: pl.DataFrame | None = None,
    *,
    keep: Sequence[str] = (),
) -> pl.DataFrame:
    """Episode id, step, terminal and timeout per decision (``EPISODE_COLUMNS``).

    ``decisions``: decision_id, ``_user``, ``_session_key``, event_ts. ``session_last_us``:
    (``_session_key``, ``_last``) the last event time of each session (recommendation only).
    ``keep``: further columns of ``decisions`` carried into the result unchanged. Rows come
    episode by episode, each in step order.
    """
    mode = episode_mode(config)
    dec = decisions.select(
        "decision_id", USER, SESSION, pl.col("event_ts").dt.epoch("us").alias("_ts"), *keep
    ).sort(USER, "_ts", "decision_id")
    if mode == "one_step":
        return dec.select(
            "decision_id",
            pl.col("decision_id").alias("episode_id"),
            pl.lit(0, dtype=pl.Int32).alias("step"),
            pl.lit(True).alias("terminal"),
            pl.lit(False).alias("timeout"),
            *keep,
        )
    if mode == "recommendation":
        return _sessions(dec, config, data_end_us, session_last_us, keep)
    return _promotion(dec, config, data_end_us, keep)


def _promotion(
    dec: pl.DataFrame, config: EtlConfig, data_end_us: int, keep: Sequence[str]
) -> pl.DataFrame:
    churn = days_us(config.churn_days)
    horizon = days_us(config.horizon_days)
    # rows are sorted by user and time: consecutive rows of one user, integer run ids; runs stay
    # contiguous (and in order) through the loop, so every window below is a forward fill over
    # run starts instead of a grouping
    same_user = (pl.col(USER) == pl.col(USER).shift(1)).fill_null(False)
    gap = pl.col("_ts") - pl.col("_ts").shift(1)
    new_run = ~same_user | (gap > churn)
    nxt_same = (pl.col(USER) == pl.col(USER).shift(-1)).fill_null(False)
    dec = dec.with_columns(
        pl.when(nxt_same).then(pl.col("_ts").shift(-1)).alias("_next"),
        new_run.cast(pl.UInt32).cum_sum().alias("_run"),
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_i"),
    )
    done: list[pl.DataFrame] = []
    rest = dec.select("_i", "_run", "_ts")
    while rest.height:
        # the first remaining decision of each run starts an episode
        idx = pl.int_range(pl.len(), dtype=pl.Int64)
        first = pl.when(pl.col("_run") != pl.col("_run").shift(1).fill_null(-1)).then(idx)
        rest = rest.with_columns(first.forward_fill().alias("_first"))
        rest = rest.with_columns(
            pl.col("_ts").gather(pl.col("_first")).alias("_start"),
            (idx - pl.col("_first")).cast(pl.Int32).alias("step"),
        )
        inside = (pl.col("_ts") < pl.col("_start") + horizon) & (
            pl.col("step") < config.horizon_steps
        )
        done.append(rest.filter(inside).select("_i", "_start", "step"))
        rest = rest.filter(~inside).select("_i", "_run", "_ts")
    steps = pl.concat([
        pl.DataFrame(schema={"_i": pl.UInt32, "_start": pl.Int64, "step": pl.Int32}), *done
    ]).sort("_i")
    out = dec.with_columns(steps["_start"], steps["step"])
    # an episode's rows are contiguous: its last step is followed by another episode (or none)
    last = ((pl.col("_run") != pl.col("_run").shift(-1))
            | (pl.col("_start") != pl.col("_start").shift(-1))).fill_null(True)
    churned = pl.when(pl.col("_next").is_not_null()).then(
        pl.col("_next") - pl.col("_ts") > churn
    ).otherwise(pl.col("_ts") + churn <= data_end_us)
    return out.select(
        "decision_id",
        pl.concat_str([pl.col(USER), pl.col("_start").cast(pl.String)], separator="/").alias(
            "episode_id"
        ),
        pl.col("step").cast(pl.Int32),
        (last & churned).alias("terminal"),
        (last & ~churned).alias("timeout"),
        *keep,
    )


def _sessions(
    dec: pl.DataFrame, config: EtlConfig, data_end_us: int, session_last_us: pl.DataFrame | None,
    keep: Sequence[str],
) -> pl.DataFrame:
    gap = round(config.session_gap_minutes * US_PER_MINUTE)
    if session_last_us is None:
        session_last_us = dec.group_by(SESSION).agg(pl.col("_ts").max().alias("_last"))
    dec = dec.sort(USER, SESSION, "_ts", "decision_id").join(
        session_last_us, on=SESSION, how="left", maintain_order="left"
    )
    step = pl.int_range(pl.len(), dtype=pl.Int32).over(USER, SESSION)
    dec = dec.with_columns(step.alias("step"))
    last = pl.col("step") == pl.col("step").max().over(USER, SESSION)
    open_at_end = pl.col("_last").fill_null(pl.col("_ts")) + gap > data_end_us
    return dec.select(
        "decision_id",
        pl.concat_str([pl.col(USER), pl.col(SESSION)], separator="/").alias("episode_id"),
        pl.col("step"),
        (last & ~open_at_end).alias("terminal"),
        (last & open_at_end).alias("timeout"),
        *keep,
    )
