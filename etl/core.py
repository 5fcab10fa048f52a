"""The core transform: one partition of users' raw rows -> their transitions and quarantine.

:func:`transform_partition` is a pure function of polars frames (no file I/O, no global state):
the local engine runs it once over all users or once per user-hash bucket, and a distributed
engine can run the very same function per partition (e.g. inside Spark's ``mapInArrow``). The
few global inputs are computed once, over all valid rows, by :func:`global_inputs`: the identity
map, the duplicate rows to drop, the end of the data and (optionally) a fitted scaling.

Stages inside, in order: validate (quarantine, one reason per row) -> drop duplicates ->
drop rows later than the lateness rule -> stitch identities -> sessionise -> bot rule ->
episodes (over every decision in the partition) -> for the decisions to output: features as of
the decision, attribution and reward -> transition rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from etl.attribute import attribute
from etl.clean import (
    LINK_TS,
    LINK_USER,
    SESSION,
    USER,
    bot_flag,
    duplicate_rows,
    identity_links,
    line_key,
    sessionise,
    too_late,
    with_user,
)
from etl.config import EtlConfig
from etl.episodes import episode_mode, episodes
from etl.errors import EtlError
from etl.features import FeatureSpec, Scaling, raw_features
from etl.io import TableMapping, _parse_ts
from etl.schema import (
    EVENT_COLUMNS,
    NAIVE_TS,
    ORDER_COLUMNS,
    PART_DATE,
    QUARANTINE_SCHEMA,
    ROW_NR,
    SOURCE_FILE,
    TS,
)
from etl.source import decision_id_fill, source_columns
from etl.validate import (
    ACTION_IDX,
    ACTION_VAL,
    REASON,
    ActionSpace,
    encode_action,
    event_reason,
    is_valid,
    order_reason,
    quarantine_rows,
)
from etl.workers import in_order

DROP = "_drop"
DEC_ROW = "_dec_row"
RAW_OBS = "_raw_obs"
COUNT_SCHEMA: dict[str, pl.DataType] = {
    "table": pl.String(),
    "date": pl.Date(),
    "outcome": pl.String(),  # used | quarantined | dropped
    "reason": pl.String(),
    "n": pl.Int64(),
}


@dataclass
class GlobalInputs:
    """The small inputs every partition shares, computed once over all users."""

    space: ActionSpace
    links: pl.DataFrame
    duplicates: pl.DataFrame
    data_end_us: int
    scaling: Scaling | None = None
    output_dates: tuple[dt.date, dt.date] | None = None  # decision dates to emit (inclusive)
    count_dates: tuple[dt.date, dt.date] | None = None  # partition dates to account for
    extra: dict[str, object] = field(default_factory=dict)
    as_of_end_us: int | None = None  # the end of the run date: later rows are future_event


@dataclass
class PartitionOutput:
    """What a partition gives back: its transitions, quarantine rows and row counts."""

    transitions: pl.DataFrame
    quarantine: pl.DataFrame
    counts: pl.DataFrame


def normalize_frame(
    frame: pl.DataFrame, table: str, config: EtlConfig, space: ActionSpace,
    *, source: str | None = None,
) -> pl.DataFrame:
    """An in-memory raw-log frame in the canonical schema, with source columns and action codes.

    For frames that already follow the raw-log schema (the simulator's, a test's); files go
    through :func:`etl.io.scan_table`, which also applies the column mapping.
    """
    columns = EVENT_COLUMNS if table == "events" else ORDER_COLUMNS
    exprs: list[pl.Expr] = []
    naive: list[pl.Expr] = []
    for col, target in columns.items():
        if col not in frame.columns:
            exprs.append(pl.lit(None, dtype=target).alias(col))
        elif target == TS:
            parsed, flag = _parse_ts(col, frame.schema[col], TableMapping())
            exprs.append(parsed.alias(col))
            naive.append(flag)
        else:
            exprs.append(pl.col(col).cast(target, strict=False))
    if table == "events":
        if "action" in frame.columns:
            kind = pl.Float64 if space.continuous else pl.String
            exprs.append(pl.col("action").cast(kind, strict=False))
        else:
            exprs.append(pl.lit(None, dtype=pl.Float64 if space.continuous else pl.String)
                         .alias("action"))
        for col, dtype in source_columns(config).items():
            exprs.append(pl.col(col).cast(dtype) if col in frame.columns
                         else pl.lit(None, dtype=dtype).alias(col))
    ts_col = "event_ts" if table == "events" else "order_ts"
    out = frame.select(
        *exprs,
        (pl.any_horizontal(naive) if naive else pl.lit(False)).fill_null(False).alias(NAIVE_TS),
        pl.lit(source or f"<memory:{table}>").alias(SOURCE_FILE),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW_NR),
    )
    out = out.with_columns(
        pl.coalesce(pl.col("ingest_ts"), pl.col(ts_col)).dt.date().alias(PART_DATE)
    )
    return with_codes(out, table, space, config)


def with_codes(frame: pl.DataFrame, table: str, space: ActionSpace,
               config: EtlConfig | None = None) -> pl.DataFrame:
    """Add the action codes (events) the validation and features need, and the decision ids
    of impression decisions (``[etl.decisions]``: the event id when none is logged)."""
    if table != "events":
        return frame
    fill = decision_id_fill(config) if config is not None else []
    if fill:
        frame = frame.with_columns(fill)
    if ACTION_IDX not in frame.columns:
        return frame.with_columns(encode_action(space))
    return frame


def _fx(config: EtlConfig) -> pl.Expr:
    rates = config.currencies
    return (
        pl.col("currency")
        .replace_strict(list(rates), list(rates.values()), default=None, return_dtype=pl.Float64)
        .fill_null(1.0)
        .alias("_fx")
    )


def _drop_duplicates(frame: pl.DataFrame, table: str, duplicates: pl.DataFrame | None,
                     config: EtlConfig) -> pl.Expr:
    if duplicates is None:
        dups = duplicate_rows(
            frame.lazy() if table == "events" else _empty_events(),
            frame.lazy() if table == "orders" else _empty_orders(),
        ).collect()
    else:
        dups = duplicates
    dups = dups.filter(pl.col("source_table") == table)
    if dups.height == 0:  # nothing to drop: no per-row key to build
        return pl.lit(False)
    keys = dups.select(pl.concat_str([SOURCE_FILE, pl.col(ROW_NR).cast(pl.String)],
                                     separator="\x00").alias("_k"))["_k"]
    row_key = pl.concat_str([SOURCE_FILE, pl.col(ROW_NR).cast(pl.String)], separator="\x00")
    return row_key.is_in(keys.implode())


def _empty_events() -> pl.LazyFrame:
    return pl.LazyFrame(schema={**EVENT_COLUMNS, SOURCE_FILE: pl.String, ROW_NR: pl.Int64})


def _empty_orders() -> pl.LazyFrame:
    return pl.LazyFrame(schema={**ORDER_COLUMNS, SOURCE_FILE: pl.String, ROW_NR: pl.Int64})


def prepare_events(
    events: pl.DataFrame, links: pl.DataFrame, config: EtlConfig,
    duplicates: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Valid events -> cleaned events with ``_user``, ``_session_key``, ``_fx`` and ``_drop``.

    ``_drop`` is null for rows that are used, else the reason they are dropped
    (``duplicate_event_id``, ``too_late``, ``bot``). Row order is not meaningful.
    """
    dup = _drop_duplicates(events, "events", duplicates, config)
    ev = events.with_columns(
        pl.when(dup).then(pl.lit("duplicate_event_id"))
        .when(too_late("event_ts", config)).then(pl.lit("too_late"))
        .otherwise(pl.lit(None, dtype=pl.String)).alias(DROP),
        _fx(config),
    )
    ev = with_user(ev, links)
    kept = sessionise(ev.filter(pl.col(DROP).is_null()), config)
    kept = kept.with_columns(
        pl.when(bot_flag(kept, config)).then(pl.lit("bot")).otherwise(pl.lit(None, pl.String))
        .alias(DROP)
    )
    gone = ev.filter(pl.col(DROP).is_not_null()).with_columns(
        pl.lit(None, dtype=pl.String).alias(SESSION)
    )
    return pl.concat([kept, gone.select(kept.columns)])


def prepare_orders(
    orders: pl.DataFrame, links: pl.DataFrame, config: EtlConfig,
    duplicates: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Valid order lines -> with ``_user``, ``_fx`` and ``_drop`` (``duplicate_order_line``,
    ``too_late``)."""
    dup = _drop_duplicates(orders, "orders", duplicates, config)
    od = orders.with_columns(
        pl.when(dup).then(pl.lit("duplicate_order_line"))
        .when(too_late("order_ts", config)).then(pl.lit("too_late"))
        .otherwise(pl.lit(None, dtype=pl.String)).alias(DROP),
        _fx(config),
        pl.col("status").fill_null("placed"),
    )
    return with_user(od, links)


def prepare_decisions(events: pl.DataFrame) -> pl.DataFrame:
    """The decision rows among cleaned events."""
    return events.filter(pl.col("event_type") == "decision")


def history_and_pending(
    events: pl.DataFrame, orders: pl.DataFrame, pending: pl.DataFrame,
    config: EtlConfig, space: ActionSpace,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """For the online hook: raw rows so far and pending decisions -> (history events, history
    orders, pending decisions with session keys, identity links), cleaned as the ETL cleans."""
    ev = normalize_frame(events, "events", config, space)
    od = normalize_frame(orders, "orders", config, space)
    pend = normalize_frame(pending, "events", config, space, source="<pending>")
    ev = ev.filter(is_valid(event_reason(config, space)))
    od = od.filter(is_valid(order_reason(config)))
    ev, od = _relevant(ev, od, pend)
    links = identity_links(ev.lazy(), od.lazy()).collect()
    both = pl.concat([ev.with_columns(pl.lit(False).alias("_pending")),
                      pend.with_columns(pl.lit(True).alias("_pending"))])
    # duplicates only among the history; the pending rows are never dropped
    dups = duplicate_rows(ev.lazy(), od.lazy()).collect()
    prepped = prepare_events(both, links, config, dups)
    history = prepped.filter(~pl.col("_pending") & pl.col(DROP).is_null())
    dec = prepped.filter(pl.col("_pending")).sort(ROW_NR)
    od_clean = prepare_orders(od, links, config, dups).filter(pl.col(DROP).is_null())
    return history, od_clean, dec, links


def _relevant(
    events: pl.DataFrame, orders: pl.DataFrame, pending: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Only the rows that can matter to the pending decisions' users: their user ids, their
    anonymous ids, and every id linked to those (a superset of each decision's history)."""
    pairs = pl.concat([
        events.select("anonymous_id", "user_id"), orders.select("anonymous_id", "user_id")
    ]).drop_nulls().unique()
    anons = pending["anonymous_id"].drop_nulls()
    users = pl.concat([
        pending["user_id"].drop_nulls(),
        pairs.filter(pl.col("anonymous_id").is_in(anons.implode()))["user_id"],
    ])
    anons = pl.concat([anons, pairs.filter(pl.col("user_id").is_in(users.implode()))[
        "anonymous_id"]])
    sessions = pending["session_id"].drop_nulls()

    def keep() -> pl.Expr:
        return (
            pl.col("user_id").is_in(users.implode()).fill_null(False)
            | pl.col("anonymous_id").is_in(anons.implode()).fill_null(False)
            | pl.col("session_id").is_in(sessions.implode()).fill_null(False)
        )

    return events.filter(keep()), orders.filter(keep())


def global_inputs(
    events: pl.LazyFrame | Sequence[pl.LazyFrame],
    orders: pl.LazyFrame | Sequence[pl.LazyFrame],
    config: EtlConfig,
    space: ActionSpace,
    *,
    data_end_us: int | None = None,
    link_events: Sequence[pl.LazyFrame] | None = None,
    link_orders: Sequence[pl.LazyFrame] | None = None,
    stitched_only: bool = False,
    workers: int = 1,
    as_of_end_us: int | None = None,
) -> GlobalInputs:
    """Identity map, duplicate rows and data end, computed once over all valid rows.

    ``events`` / ``orders``: the rows, as one lazy frame each or as pieces of it (one per input
    file, say). Pieces are read one at a time (``workers`` at the same time, results combined in
    piece order), each projected to the few columns the global steps need, so memory follows
    the largest pieces plus the results: the identity map, 8 bytes per valid row for duplicate
    detection (64-bit id hashes; only the rows of repeated hashes are read again, and compared
    exactly) and the duplicate rows. ``link_events`` / ``link_orders``: build the identity map
    from these rows instead (a nightly run stitches ids over every partition but transforms a
    window). ``stitched_only``: keep only the links of anonymous ids that rows without a user_id
    carry in ``events`` / ``orders``, the only ones the transform looks up (the same output, a
    far smaller map; a partial map that is merged with others, as Spark's, needs them all).
    ``as_of_end_us``: the end of the run date; later rows are not valid (``future_event``).

    The end of the data (unless ``data_end_us`` is given) is midnight after the latest time
    (event or arrival) of a valid row, of ``link_events`` / ``link_orders`` too when given, and
    never after ``as_of_end_us``: folder names play no part.
    """
    ev_parts = [events] if isinstance(events, pl.LazyFrame) else list(events)
    od_parts = [orders] if isinstance(orders, pl.LazyFrame) else list(orders)
    valid_ev = [_valid(p, "events", config, space, as_of_end_us) for p in ev_parts]
    valid_od = [_valid(p, "orders", config, space, as_of_end_us) for p in od_parts]
    wanted = _stitched_ids([*ev_parts, *od_parts], workers) if stitched_only else None
    own_links = link_events is None and link_orders is None
    links = _Links()
    hashes: dict[str, list[np.ndarray]] = {"events": [], "orders": []}
    end: dt.datetime | None = None
    for table, parts in (("events", valid_ev), ("orders", valid_od)):
        ts_col = "event_ts" if table == "events" else "order_ts"

        def piece(lf: pl.LazyFrame, table: str = table, ts_col: str = ts_col
                  ) -> list[pl.DataFrame]:
            queries = [lf.select(_id_hash(table)), _latest(lf, ts_col)]
            if own_links:
                queries.append(_link_partial(lf, ts_col, wanted))
            return pl.collect_all(queries)

        for got in in_order(piece, parts, workers):
            hashes[table].append(got[0]["_h"].to_numpy())
            piece_end = got[1]["m"][0]
            if piece_end is not None and (end is None or piece_end > end):
                end = piece_end
            if own_links:
                links.add(got[2])
    if not own_links:
        for table, link_parts in (("events", link_events or []), ("orders", link_orders or [])):
            ts_col = "event_ts" if table == "events" else "order_ts"
            queries = [
                [_link_partial(v, ts_col, wanted), _latest(v, ts_col)]
                for v in (_valid(lf, table, config, space, as_of_end_us) for lf in link_parts)
            ]
            for got_links in in_order(pl.collect_all, queries, workers):
                links.add(got_links[0])
                piece_end = got_links[1]["m"][0]
                if piece_end is not None and (end is None or piece_end > end):
                    end = piece_end
    links_df = links.result()
    dups_df = _duplicates(valid_ev, valid_od, hashes)
    if data_end_us is None:
        data_end_us = end_of_data(end, as_of_end_us)
    return GlobalInputs(space, links_df, dups_df, data_end_us, as_of_end_us=as_of_end_us)


def _latest(lf: pl.LazyFrame, ts_col: str) -> pl.LazyFrame:
    """The latest time (event or arrival) of the rows, as ``m``."""
    return lf.select(pl.max_horizontal(ts_col, "ingest_ts").max().alias("m"))


def end_of_data(latest: dt.datetime | None, as_of_end_us: int | None) -> int:
    """The end of the data (epoch microseconds): midnight after the day of the latest valid
    row (0 without rows), at most the end of the run date."""
    if latest is None:
        return 0
    last = dt.datetime.combine(latest.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    end = (last - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    return end if as_of_end_us is None else min(end, as_of_end_us)


def _stitched_ids(parts: Sequence[pl.LazyFrame], workers: int) -> pl.Series:
    """The anonymous ids of rows without a user_id (valid or not: a superset is safe)."""
    def ids(lf: pl.LazyFrame) -> pl.DataFrame:
        return (
            lf.select("anonymous_id", "user_id")
            .filter(pl.col("user_id").is_null() & pl.col("anonymous_id").is_not_null())
            .select(pl.col("anonymous_id").unique())
            .collect()
        )

    found = [pl.DataFrame(schema={"anonymous_id": pl.String()}), *in_order(ids, parts, workers)]
    return pl.concat(found)["anonymous_id"].unique().sort()


def _valid(lf: pl.LazyFrame, table: str, config: EtlConfig, space: ActionSpace,
           as_of_end_us: int | None) -> pl.LazyFrame:
    if table == "events":
        return lf.with_columns(*decision_id_fill(config), *encode_action(space)).filter(
            is_valid(event_reason(config, space, as_of_end_us))
        )
    return lf.filter(is_valid(order_reason(config, as_of_end_us)))


def _id_hash(table: str) -> pl.Expr:
    """64-bit hash of the duplicate key: event_id, or (order_id, line key) for order lines."""
    if table == "events":
        return pl.col("event_id").hash(seed=7).alias("_h")
    key = pl.concat_str([pl.col("order_id"), line_key()], separator="\x00")
    return key.hash(seed=7).alias("_h")


_NO_ORDERS = {"anonymous_id": pl.String(), "user_id": pl.String(), "order_ts": TS}


def _link_partial(lf: pl.LazyFrame, ts_col: str, wanted: pl.Series | None = None
                  ) -> pl.LazyFrame:
    """:func:`identity_links` of one piece (its "first by time" combines across pieces), of the
    ``wanted`` anonymous ids only when given."""
    pairs = lf.select("anonymous_id", "user_id", pl.col(ts_col).alias("event_ts"))
    if wanted is not None:
        pairs = pairs.filter(pl.col("anonymous_id").is_in(wanted.implode()))
    return identity_links(pairs, pl.LazyFrame(schema=_NO_ORDERS))


class _Links:
    """The identity map, combined from partials (per anonymous id: the earliest link, then the
    least user id: :func:`identity_links` of the partials' links), merged in batches."""

    def __init__(self) -> None:
        self.parts: list[pl.DataFrame] = []
        self.pending = 0

    def add(self, partial: pl.DataFrame) -> None:
        self.parts.append(partial)
        self.pending += partial.height
        if len(self.parts) > 1 and self.pending > 4 * self.parts[0].height + 1_000_000:
            self.parts = [self.result()]
            self.pending = 0

    def result(self) -> pl.DataFrame:
        if len(self.parts) == 1:
            return self.parts[0]
        pairs = (
            pl.concat(self.parts).lazy().select(
                "anonymous_id", pl.col(LINK_USER).alias("user_id"),
                pl.col(LINK_TS).alias("event_ts"),
            )
            if self.parts
            else pl.LazyFrame(schema={"anonymous_id": pl.String(), "user_id": pl.String(),
                                      "event_ts": TS})
        )
        return identity_links(pairs, pl.LazyFrame(schema=_NO_ORDERS)).collect()


def _duplicates(
    events: list[pl.LazyFrame], orders: list[pl.LazyFrame], hashes: dict[str, list[np.ndarray]]
) -> pl.DataFrame:
    """:func:`duplicate_rows` over all pieces: only rows whose key hash repeats are read again
    (all copies of a key then meet, so the answer is the global one)."""
    columns = {
        "events": ["event_id", "ingest_ts", "event_ts", SOURCE_FILE, ROW_NR],
        "orders": ["order_id", "line_no", "item_id", "ingest_ts", "order_ts", SOURCE_FILE,
                   ROW_NR],
    }
    found: dict[str, pl.LazyFrame] = {}
    for table, parts in (("events", events), ("orders", orders)):
        values = np.concatenate(hashes[table]) if hashes[table] else np.zeros(0, np.uint64)
        values.sort()
        repeated = np.unique(values[1:][values[1:] == values[:-1]])
        keep = pl.Series("_r", repeated, dtype=pl.UInt64).implode()
        rows = [lf.filter(_id_hash(table).is_in(keep)).select(columns[table]) for lf in parts]
        if repeated.size:
            found[table] = pl.concat(pl.collect_all(rows)).lazy()
        else:
            found[table] = pl.concat([r.head(0) for r in rows]).collect().lazy()
    return duplicate_rows(found["events"], found["orders"]).collect()


def _counts(
    frame: pl.DataFrame, table: str, outcome: str, reason: pl.Expr | str
) -> pl.DataFrame:
    """Rows per partition date and reason (``reason``: a column, or one reason for all rows)."""
    if isinstance(reason, str):  # one reason: group by the date alone
        grouped = frame.group_by(pl.col(PART_DATE).alias("date")).agg(
            pl.len().cast(pl.Int64).alias("n")
        ).with_columns(pl.lit(reason).alias("reason"))
    else:
        grouped = frame.group_by(pl.col(PART_DATE).alias("date"), reason.alias("reason")).agg(
            pl.len().cast(pl.Int64).alias("n")
        )
    return grouped.select(pl.lit(table).alias("table"), "date", pl.lit(outcome).alias("outcome"),
                          "reason", "n")


def _unknown_context(decisions: pl.DataFrame, config: EtlConfig) -> pl.DataFrame:
    """Decisions per decision date whose context value is not among the configured values
    (their one-hot features are all zero), per context column (``reason``); nulls are not
    counted (not logged)."""
    parts = [empty_counts()]
    for col, values in config.context_columns.items():
        unknown = pl.col(col).is_not_null() & ~pl.col(col).is_in(values)
        parts.append(
            decisions.filter(unknown)
            .group_by(pl.col("event_ts").dt.date().alias("date"))
            .agg(pl.len().cast(pl.Int64).alias("n"))
            .select(pl.lit("decisions").alias("table"), "date",
                    pl.lit("unknown_context").alias("outcome"), pl.lit(col).alias("reason"), "n")
        )
    return pl.concat(parts)


def decision_actions(events: pl.LazyFrame, continuous: bool) -> pl.LazyFrame:
    """Decision events per action label: ``action`` (the label; null for a missing label and
    for continuous actions) and ``n``."""
    label = pl.lit(None, dtype=pl.String) if continuous else pl.col("action").cast(pl.String)
    return (
        events.filter(pl.col("event_type") == "decision")
        .group_by(label.alias("action"))
        .agg(pl.len().cast(pl.Int64).alias("n"))
    )


def action_counts(frames: Sequence[pl.DataFrame]) -> tuple[dict[str, int], int]:
    """Partial :func:`decision_actions` combined: (label -> decisions, all decision events)."""
    both = pl.concat([pl.DataFrame(schema={"action": pl.String, "n": pl.Int64}), *frames])
    summed = both.group_by("action").agg(pl.col("n").sum()).sort("action", nulls_last=True)
    found = {str(a): int(n) for a, n in summed.drop_nulls("action").iter_rows()}
    return found, int(summed["n"].sum())


def require_decisions(n_decisions: int, n_events: int, config: EtlConfig) -> None:
    """Raise :class:`EtlError` for logs without decision events (unless the config allows it:
    clickstream-only sources)."""
    if n_decisions == 0 and config.require_decisions:
        raise EtlError(
            f"no decision events in {n_events} rows: map the events that record what the "
            "platform chose (event_type 'decision' with decision_id and action; see the "
            "[etl.mapping] event_type_map), or set [etl] require_decisions = false to load "
            "clickstream history only"
        )


def _in_dates(col: str, dates: tuple[dt.date, dt.date] | None) -> pl.Expr:
    if dates is None:
        return pl.lit(True)
    return pl.col(col).is_between(dates[0], dates[1])


def transform_partition(
    events: pl.DataFrame, orders: pl.DataFrame, g: GlobalInputs, config: EtlConfig
) -> PartitionOutput:
    """All stages for one partition of users (see the module docstring).

    ``events`` / ``orders``: raw rows in the canonical schema with the source columns
    (``_source_file``, ``_row_nr``, ``_part_date``, ``_naive_ts``), every row of each user in the
    partition. Transitions carry the raw features in ``_raw_obs`` when ``g.scaling`` is None (the
    engine fits the scaling over all partitions and applies it), else the scaled ``observation``.
    """
    spec = FeatureSpec.from_config(config, g.space)
    events = with_codes(events, "events", g.space, config)
    events = events.with_columns(event_reason(config, g.space, g.as_of_end_us))
    orders = orders.with_columns(order_reason(config, g.as_of_end_us))
    quarantine = _quarantined(events, orders, g, config)
    ev, od, counts, bot_sessions = _cleaned(events, orders, g, config)
    decisions, excluded = _decisions(ev, bot_sessions, spec, config)
    counts = pl.concat([counts, _excluded_counts(excluded, g)])
    eps, all_eps, out_dec = _episodes(ev, decisions, g, config)
    counts = pl.concat([counts, _unknown_context(out_dec, config)])
    raw = raw_features(ev, od, out_dec, g.links, spec)
    rewards = attribute(out_dec, ev, od, config)
    trans = _transitions(out_dec, eps, all_eps, rewards, _observations(raw, g, spec), g.space)
    return PartitionOutput(trans, quarantine.sort("source_table", "source_file", "row_number"),
                           counts)


def _quarantined(
    events: pl.DataFrame, orders: pl.DataFrame, g: GlobalInputs, config: EtlConfig
) -> pl.DataFrame:
    """The rows that failed validation, within the dates this partition counts."""
    ctx = list(source_columns(config))
    return pl.concat([
        quarantine_rows(events.filter(pl.col(REASON).is_not_null()), "events", ["action", *ctx]),
        quarantine_rows(orders.filter(pl.col(REASON).is_not_null()), "orders", []),
    ]).filter(_in_dates("partition_date", g.count_dates))


def _cleaned(
    events: pl.DataFrame, orders: pl.DataFrame, g: GlobalInputs, config: EtlConfig
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Valid rows cleaned (duplicates, bots, ... dropped with a reason), the row accounting,
    and the sessions that turned out to be bots."""
    bad_ev = events.filter(pl.col(REASON).is_not_null())
    bad_od = orders.filter(pl.col(REASON).is_not_null())
    ev = prepare_events(events.filter(pl.col(REASON).is_null()), g.links, config, g.duplicates)
    od = prepare_orders(orders.filter(pl.col(REASON).is_null()), g.links, config, g.duplicates)
    counts = pl.concat([
        _counts(bad_ev, "events", "quarantined", pl.col(REASON)),
        _counts(bad_od, "orders", "quarantined", pl.col(REASON)),
        _counts(ev.filter(pl.col(DROP).is_not_null()), "events", "dropped", pl.col(DROP)),
        _counts(od.filter(pl.col(DROP).is_not_null()), "orders", "dropped", pl.col(DROP)),
        _counts(ev.filter(pl.col(DROP).is_null()), "events", "used", ""),
        _counts(od.filter(pl.col(DROP).is_null()), "orders", "used", ""),
    ]).filter(_in_dates("date", g.count_dates))
    bot_sessions = ev.filter(pl.col(DROP) == "bot").select(SESSION).unique()
    return (ev.filter(pl.col(DROP).is_null()), od.filter(pl.col(DROP).is_null()), counts,
            bot_sessions)


def _decisions(
    ev: pl.DataFrame, bot_sessions: pl.DataFrame, spec: FeatureSpec, config: EtlConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the decisions that make transitions, those of bot sessions). Decisions of a
    session that turned bot stay in the feature history (the online hook cannot know the
    future) but make no transitions."""
    base = ["decision_id", "event_type", "event_ts", "user_id", "anonymous_id", "session_id",
            USER, SESSION, LINK_USER, LINK_TS, "propensity", ACTION_IDX, ACTION_VAL]
    own = [*source_columns(config), *spec.row_columns, *config.outcomes.columns().values()]
    if config.outcomes.columns():
        own.append("_fx")
    all_decisions = prepare_decisions(ev.select(*dict.fromkeys([*base, *own])))
    if not bot_sessions.height:
        return all_decisions, all_decisions.clear()
    decisions = all_decisions.join(bot_sessions, on=SESSION, how="anti", maintain_order="left")
    return decisions, all_decisions.join(bot_sessions, on=SESSION, how="semi")


def _excluded_counts(excluded: pl.DataFrame, g: GlobalInputs) -> pl.DataFrame:
    return excluded.group_by(pl.col("event_ts").dt.date().alias("date")).agg(
        pl.len().cast(pl.Int64).alias("n")
    ).select(pl.lit("decisions").alias("table"), "date", pl.lit("excluded").alias("outcome"),
             pl.lit("bot_session").alias("reason"), "n").filter(_in_dates("date", g.output_dates))


def _episodes(
    ev: pl.DataFrame, decisions: pl.DataFrame, g: GlobalInputs, config: EtlConfig
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(episodes of the output decisions, every episode, the output decisions).

    Episodes come episode by episode, in step order, with each decision's row number: the other
    per-decision parts are gathered into that order (no joins on decision_id), which leaves the
    final sort little to do."""
    session_last = None  # only session episodes end with their session's last event
    if episode_mode(config) == "recommendation":
        session_last = ev.group_by(SESSION).agg(
            pl.col("event_ts").dt.epoch("us").max().alias("_last")
        )
    eps = episodes(decisions.with_row_index(DEC_ROW), config, g.data_end_us, session_last,
                   keep=[DEC_ROW])
    all_eps, out_dec = eps, decisions
    if g.output_dates is not None:
        emit = decisions.select(
            pl.col("event_ts").dt.date().is_between(*g.output_dates)
        ).to_series()
        out_dec = decisions.filter(emit)
        at = emit.cast(pl.Int64).cum_sum() - 1  # the row within out_dec
        eps = eps.filter(emit.gather(eps[DEC_ROW]))
        eps = eps.with_columns(at.gather(eps[DEC_ROW]).cast(pl.UInt32).alias(DEC_ROW))
    return eps, all_eps, out_dec


def _observations(raw: np.ndarray, g: GlobalInputs, spec: FeatureSpec) -> pl.Series:
    """Scaled observations, or the raw features when the engine fits the scaling later."""
    n_feat = len(spec.names)
    if g.scaling is not None:
        return pl.Series("observation", g.scaling.apply(raw), dtype=pl.Array(pl.Float32, n_feat))
    return pl.Series(RAW_OBS, raw, dtype=pl.Array(pl.Float64, n_feat))


def _transitions(
    out_dec: pl.DataFrame,
    eps: pl.DataFrame,
    all_eps: pl.DataFrame,
    rewards: pl.DataFrame,
    obs: pl.Series,
    space: ActionSpace,
) -> pl.DataFrame:
    """One row per output decision in the transition schema, sorted by (episode, step)."""
    if space.continuous:
        action = pl.col(ACTION_VAL).cast(pl.Float32).reshape((-1, 1)).alias("action")
    else:
        action = pl.col(ACTION_IDX).cast(pl.Int32).alias("action")
    parts = out_dec.select(
        "decision_id", USER, SESSION, "event_ts", "propensity",
        ACTION_VAL if space.continuous else ACTION_IDX,
    ).with_columns(obs)
    if parts["decision_id"].n_unique() < parts.height:  # joins pair up repeated decision_ids
        joined = parts.join(all_eps.drop(DEC_ROW), on="decision_id", how="left",
                            maintain_order="left").join(rewards, on="decision_id", how="left",
                                                        maintain_order="left")
    else:
        parts = parts.drop("decision_id").hstack(rewards.drop("decision_id"))
        joined = pl.concat(
            [eps.drop(DEC_ROW), parts.select(pl.all().gather(eps[DEC_ROW]))], how="horizontal"
        )
    return joined.select(
        "episode_id",
        "step",
        "decision_id",
        pl.col(USER).alias("user_id"),
        pl.col(SESSION).alias("session_id"),
        pl.col("event_ts").alias("decision_ts"),
        obs.name,
        action,
        "reward",
        "terminal",
        "timeout",
        pl.col("propensity").alias("behaviour_propensity"),
        pl.when(pl.col("propensity").is_not_null()).then(pl.lit("logged"))
        .otherwise(pl.lit("missing")).alias("propensity_source"),
        "revenue",
        "margin",
        "discount_cost",
        "returns",
    ).sort("episode_id", "step")


def empty_quarantine() -> pl.DataFrame:
    """An empty quarantine frame."""
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def empty_counts() -> pl.DataFrame:
    """An empty counts frame."""
    return pl.DataFrame(schema=COUNT_SCHEMA)


__all__ = [
    "GlobalInputs",
    "PartitionOutput",
    "global_inputs",
    "normalize_frame",
    "transform_partition",
]
