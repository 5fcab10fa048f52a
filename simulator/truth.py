"""The truth record: one row per decision with its reward (computed from the emitted orders as the
contract defines it), the episode split, and the hidden state at the decision."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from simulator.config import SimulatorConfig
from simulator.engine import Engine
from simulator.model import US_PER_DAY, action_labels

TS = pl.Datetime("us", "UTC")


def promotion_rewards(
    decisions: pl.DataFrame, orders: pl.DataFrame, settlement_days: int
) -> pl.DataFrame:
    """Net-margin reward parts per decision, from raw rows, exactly as the contract defines them.

    ``decisions`` needs ``decision_id``, ``session_id`` and ``decision_ts``; order lines are
    attributed to the decision of their session, reversals through ``parent_order_id`` and only
    when ``order_ts <= decision_ts + settlement_days``. Returns ``decision_id, revenue, margin,
    discount_cost, returns, reward`` (zeros where nothing was bought).
    """
    placed = orders.filter(pl.col("status") == "placed")
    parts = placed.group_by("session_id").agg(
        (pl.col("quantity") * pl.col("unit_price") - pl.col("discount_amount"))
        .sum()
        .alias("revenue"),
        pl.col("margin").sum().alias("margin"),
        pl.col("discount_amount").sum().alias("discount_cost"),
    )
    parent_session = placed.select(
        pl.col("order_id").alias("parent_order_id"), pl.col("session_id").alias("_parent_session")
    ).unique("parent_order_id")
    window = pl.duration(days=settlement_days)
    reversals = (
        orders.filter(pl.col("status") != "placed")
        .join(parent_session, on="parent_order_id", how="inner")
        .join(
            decisions.select("session_id", "decision_ts"),
            left_on="_parent_session",
            right_on="session_id",
            how="inner",
        )
        .filter(pl.col("order_ts") <= pl.col("decision_ts") + window)
        .group_by("_parent_session")
        .agg((pl.col("margin") - pl.col("discount_amount")).sum().alias("returns"))
        .rename({"_parent_session": "session_id"})
    )
    out = (
        decisions.select("decision_id", "session_id")
        .join(parts, on="session_id", how="left")
        .join(reversals, on="session_id", how="left")
        .with_columns(pl.col("revenue", "margin", "discount_cost", "returns").fill_null(0.0))
        .with_columns(
            (pl.col("margin") - pl.col("discount_cost") - pl.col("returns")).alias("reward")
        )
    )
    return out.select("decision_id", "revenue", "margin", "discount_cost", "returns", "reward")


def split_episodes(
    user: np.ndarray, ts: np.ndarray, max_decisions: int, max_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """Episode index per user and step per decision (input sorted by user, then time).

    A user's decisions form episodes of at most ``max_decisions`` decisions and ``max_days``
    days from the episode's first decision; the next decision starts a new episode.
    """
    n = len(user)
    episode = np.zeros(n, np.int64)
    step = np.zeros(n, np.int64)
    if n == 0:
        return episode, step
    first = np.r_[True, user[1:] != user[:-1]]
    start_idx = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    rank = np.arange(n) - start_idx
    ep_start_ts = ts.copy()
    cur_ep = np.zeros(n, np.int64)
    cur_step = np.zeros(n, np.int64)
    for j in range(1, int(rank.max()) + 1):
        idx = np.flatnonzero(rank == j)
        prev = idx - 1
        new = (cur_step[prev] + 1 >= max_decisions) | (
            ts[idx] - ep_start_ts[prev] >= max_days * US_PER_DAY
        )
        cur_ep[idx] = cur_ep[prev] + new
        cur_step[idx] = np.where(new, 0, cur_step[prev] + 1)
        ep_start_ts[idx] = np.where(new, ts[idx], ep_start_ts[prev])
    episode[:] = cur_ep
    step[:] = cur_step
    return episode, step


@dataclass(frozen=True)
class _Episodes:
    """The episode split of the sorted decisions and how each decision ends its episode."""

    episode: np.ndarray
    step: np.ndarray
    terminal: np.ndarray
    timeout: np.ndarray


def build_truth(engine: Engine, events: pl.DataFrame, orders: pl.DataFrame) -> pl.DataFrame:
    """The truth record of a finished simulation (sorted by episode, then step)."""
    cfg: SimulatorConfig = engine.config
    parts = engine.truth_parts
    if not parts:
        return empty_truth(cfg)
    cols = _sorted_columns(parts)
    df = _decision_ids(cols, engine.pop.user_code[cols["_u"]], cfg.scenario)
    if cfg.scenario == "promotion":
        episodes = _promotion_episodes(cols, cfg)
        rewards = promotion_rewards(df, orders, cfg.settlement_days)
        df = df.join(rewards, on="decision_id", how="left", maintain_order="left")
    else:
        episodes = _recommendation_episodes(cols)
        df = df.with_columns(*_recommendation_rewards(cols, cfg))
    return _with_decision_columns(df, cols, episodes, engine)


def _sorted_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The engine's per-round truth blocks concatenated and sorted by user, then time."""
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((cols["ts"], cols["_u"]))
    return {k: v[order] for k, v in cols.items()}


def _decision_ids(
    cols: dict[str, np.ndarray], user_code: np.ndarray, scenario: str
) -> pl.DataFrame:
    """``_u``, ``decision_id``, ``user_id``, ``session_id`` and ``decision_ts`` per decision."""
    return pl.DataFrame(
        {
            "_u": cols["_u"],
            "_s": cols["_s"],
            "dstep": cols["step"].astype(np.int64),
            "ts": cols["ts"],
            "_uc": user_code,
        }
    ).select(
        pl.col("_u"),
        (
            pl.format("d{}", pl.col("_s").cast(pl.String).str.zfill(10))
            if scenario == "promotion"
            else pl.format(
                "d{}-{}",
                pl.col("_s").cast(pl.String).str.zfill(10),
                pl.col("dstep").cast(pl.String).str.zfill(2),
            )
        ).alias("decision_id"),
        pl.format("u{}", pl.col("_uc").cast(pl.String).str.zfill(7)).alias("user_id"),
        pl.format("s{}", pl.col("_s").cast(pl.String).str.zfill(10)).alias("session_id"),
        pl.from_epoch(pl.col("ts"), time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("decision_ts"),
    )


def _promotion_episodes(cols: dict[str, np.ndarray], cfg: SimulatorConfig) -> _Episodes:
    """Promotion: episodes of at most ``horizon_decisions`` decisions and ``horizon_days``
    days; terminal at the user's last decision when the user churned there, else a timeout."""
    episode, step = split_episodes(cols["_u"], cols["ts"], cfg.horizon_decisions, cfg.horizon_days)
    last_of_user = np.r_[cols["_u"][1:] != cols["_u"][:-1], True]
    last_of_episode = np.r_[
        (cols["_u"][1:] != cols["_u"][:-1]) | (episode[1:] != episode[:-1]), True
    ]
    terminal = last_of_user & cols["churned"]
    timeout = last_of_episode & ~terminal
    return _Episodes(episode, step, terminal, timeout)


def _recommendation_episodes(cols: dict[str, np.ndarray]) -> _Episodes:
    """Recommendation: episode = session (numbered per user), step = page index."""
    sess = cols["_s"]
    first_of_user = np.r_[True, cols["_u"][1:] != cols["_u"][:-1]]
    new_session = np.r_[True, sess[1:] != sess[:-1]]
    sess_rank = np.cumsum(new_session)
    user_first_rank = np.maximum.accumulate(np.where(first_of_user, sess_rank, 0))
    episode = sess_rank - user_first_rank
    step = cols["step"].astype(np.int64)
    terminal = cols["last"].astype(bool)
    timeout = np.zeros(len(sess), bool)
    return _Episodes(episode, step, terminal, timeout)


def _recommendation_rewards(cols: dict[str, np.ndarray], cfg: SimulatorConfig) -> list[pl.Series]:
    """The recommendation reward parts and their weighted sum (``cfg.rec_reward``)."""
    w = cfg.rec_reward
    reward = (
        w.click * cols["click"]
        + w.add_to_cart * cols["add_to_cart"]
        + w.purchase * cols["purchase"]
        + w.revenue * cols["revenue"]
    )
    return [
        pl.Series("revenue", cols["revenue"]),
        pl.Series("click", cols["click"]),
        pl.Series("add_to_cart", cols["add_to_cart"]),
        pl.Series("purchase", cols["purchase"]),
        pl.Series("reward", reward),
    ]


def _action_columns(cols: dict[str, np.ndarray], engine: Engine) -> tuple[pl.Series, pl.Series]:
    """``action`` (float rate or int index) and ``action_label`` (null when continuous)."""
    if engine.continuous:
        action = pl.Series("action", cols["action_f"], pl.Float64)
        label = pl.Series("action_label", np.full(len(cols["action_f"]), None), pl.String)
    else:
        labels = np.array(action_labels(engine.config))
        action = pl.Series("action", cols["action_i"], pl.Int32)
        label = pl.Series("action_label", labels[cols["action_i"]], pl.String)
    return action, label


def _with_decision_columns(
    df: pl.DataFrame, cols: dict[str, np.ndarray], episodes: _Episodes, engine: Engine
) -> pl.DataFrame:
    """The episode, action, flag and hidden-state columns, in the truth record's order."""
    action, label = _action_columns(cols, engine)
    hidden = [k for k in cols if k.startswith("h_")]
    df = df.with_columns(
        pl.format(
            "{}-e{}", pl.col("user_id"), pl.Series(episodes.episode).cast(pl.String).str.zfill(2)
        ).alias("episode_id"),
        pl.Series("episode", episodes.episode, pl.Int32),
        pl.Series("step", episodes.step, pl.Int32),
        action,
        label,
        pl.Series("propensity", cols["prop"], pl.Float64).fill_nan(None),
        pl.Series("terminal", episodes.terminal, pl.Boolean),
        pl.Series("timeout", episodes.timeout, pl.Boolean),
        pl.Series("churned", cols["churned"], pl.Boolean),
        pl.Series("is_bot", cols["is_bot"], pl.Boolean),
        *[pl.Series(k, cols[k], pl.Float64) for k in hidden],
    )
    front = [
        "decision_id",
        "user_id",
        "session_id",
        "episode_id",
        "episode",
        "step",
        "decision_ts",
        "action",
        "action_label",
        "propensity",
        "reward",
    ]
    parts_cols = (
        ["revenue", "margin", "discount_cost", "returns"]
        if engine.config.scenario == "promotion"
        else ["click", "add_to_cart", "purchase", "revenue"]
    )
    back = ["terminal", "timeout", "churned", "is_bot", *hidden]
    return df.select(*front, *parts_cols, *back).sort("episode_id", "step")


def empty_truth(cfg: SimulatorConfig) -> pl.DataFrame:
    """A truth frame with no rows (nothing happened in the window)."""
    return pl.DataFrame(
        schema={
            "decision_id": pl.String,
            "user_id": pl.String,
            "session_id": pl.String,
            "episode_id": pl.String,
            "episode": pl.Int32,
            "step": pl.Int32,
            "decision_ts": TS,
            "reward": pl.Float64,
            "terminal": pl.Boolean,
            "timeout": pl.Boolean,
            "is_bot": pl.Boolean,
        }
    )


def episode_returns(truth: pl.DataFrame, gamma: float) -> pl.DataFrame:
    """Discounted and undiscounted return per episode of the real (non-bot) users."""
    return (
        truth.filter(~pl.col("is_bot"))
        .group_by("episode_id")
        .agg(
            (pl.col("reward") * pl.lit(gamma) ** pl.col("step").cast(pl.Float64))
            .sum()
            .alias("discounted"),
            pl.col("reward").sum().alias("undiscounted"),
            pl.len().alias("length"),
        )
        .sort("episode_id")
    )
