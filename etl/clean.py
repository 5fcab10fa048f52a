"""Cleaning: duplicates, late rows, identity stitching, sessions and the bot rule.

All functions are pure (frames in, frames out) and work on any subset of users, so that the same
code runs over the whole data, over one user-hash bucket, or inside a distributed worker. The two
global steps, :func:`duplicate_rows` and :func:`identity_links`, are computed once over all valid
rows and handed to the per-partition transform.
"""

from __future__ import annotations

import polars as pl

from etl.config import EtlConfig
from etl.schema import ROW_NR, SOURCE_FILE

USER = "_user"  # the stitched user: user_id, else the user its anonymous_id logs in as
SESSION = "_session_key"  # session_id, else the derived (gap-based) session
DEVICE = "_device"
US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
US_PER_MINUTE = 60_000_000
MICRO = 1_000_000  # money is summed in integer micro-units of the reporting currency

LINK_USER = "_link_user"
LINK_TS = "_link_ts"


def days_us(days: float) -> int:
    """A duration in days as integer microseconds."""
    return round(days * US_PER_DAY)


def duplicate_rows(events: pl.LazyFrame, orders: pl.LazyFrame) -> pl.LazyFrame:
    """The rows to drop as duplicates: every copy of an id but the first to arrive.

    Events are keyed by ``event_id``, order lines by ``(order_id, line_no)`` (``item_id`` when
    the source has no line numbers); the first copy is the
    one with the earliest ``ingest_ts`` (then ``event_ts``, source file and row number). Returns
    ``(source_table, _source_file, _row_nr)``.
    """
    ev = events.select("event_id", "ingest_ts", "event_ts", SOURCE_FILE, ROW_NR)
    # candidates by a 64-bit hash first (small state whatever the id strings), then exactly
    h = pl.col("event_id").hash(seed=7).alias("_h")
    repeated = (
        ev.select(h).group_by("_h").agg(pl.len()).filter(pl.col("len") > 1).select("_h")
    )
    ev = (
        ev.with_columns(h).join(repeated, on="_h", how="semi").drop("_h")
        .sort("event_id", "ingest_ts", "event_ts", SOURCE_FILE, ROW_NR, nulls_last=True)
        .filter(~pl.col("event_id").is_first_distinct())
        .select(pl.lit("events").alias("source_table"), SOURCE_FILE, ROW_NR)
    )
    od = orders.select(
        "order_id", line_key().alias("_line"), "ingest_ts", "order_ts", SOURCE_FILE, ROW_NR
    )
    rep = od.group_by("order_id", "_line").agg(pl.len()).filter(pl.col("len") > 1).drop("len")
    od = (
        od.join(rep, on=["order_id", "_line"], how="semi")
        .sort("order_id", "_line", "ingest_ts", "order_ts", SOURCE_FILE, ROW_NR, nulls_last=True)
        .filter(~pl.struct("order_id", "_line").is_first_distinct())
        .select(pl.lit("orders").alias("source_table"), SOURCE_FILE, ROW_NR)
    )
    return pl.concat([ev, od])


def line_key() -> pl.Expr:
    """The key of an order line within its order: line_no, else (sources without line numbers)
    the item_id."""
    return pl.coalesce(
        pl.col("line_no").cast(pl.String), pl.lit("item:") + pl.col("item_id"), pl.lit("")
    )


def identity_links(events: pl.LazyFrame, orders: pl.LazyFrame) -> pl.LazyFrame:
    """anonymous_id -> the user_id it first appears with, and when (``_link_ts``).

    Built from every valid row that carries both ids. An anonymous id seen with several users
    (a shared device) is linked to the first one.
    """
    pairs = pl.concat(
        [
            events.select("anonymous_id", "user_id", pl.col("event_ts").alias("ts")),
            orders.select("anonymous_id", "user_id", pl.col("order_ts").alias("ts")),
        ]
    ).filter(pl.col("anonymous_id").is_not_null() & pl.col("user_id").is_not_null())
    first = pl.col("ts").min()
    return (
        pairs.group_by("anonymous_id")
        .agg(
            pl.col("user_id").filter(pl.col("ts") == first).min().alias(LINK_USER),
            first.alias(LINK_TS),
        )
        .sort("anonymous_id")
    )


def with_user(frame: pl.DataFrame, links: pl.DataFrame) -> pl.DataFrame:
    """Add ``_user`` (the stitched user) and the link columns of the row's anonymous_id.

    Stitching only applies to rows without a user_id, so only those rows look up the identity
    map; the link columns are null on rows that carry a user_id (nothing downstream reads them
    there), and no lookup is made at all when every row carries one.
    """
    anon = pl.col("user_id").is_null()
    n_anon = int(frame.select(anon.sum()).item())
    if n_anon == 0:
        return frame.with_columns(
            pl.lit(None, dtype=links.schema[LINK_USER]).alias(LINK_USER),
            pl.lit(None, dtype=links.schema[LINK_TS]).alias(LINK_TS),
            pl.col("user_id").alias(USER),
        )
    # join the (masked) key column alone: cheaper than joining the whole frame
    found = frame.select(pl.when(anon).then(pl.col("anonymous_id")).alias("anonymous_id")).join(
        links, on="anonymous_id", how="left", maintain_order="left"
    )
    out = frame.with_columns(found[LINK_USER], found[LINK_TS])
    return out.with_columns(user_key_expr().alias(USER))


def user_key_expr() -> pl.Expr:
    """The stitched user of a row that carries ``_link_user`` (identity-map join)."""
    return pl.coalesce(
        pl.col("user_id"),
        pl.col(LINK_USER),
        pl.lit("anon:") + pl.col("anonymous_id"),
        pl.lit("session:") + pl.col("session_id"),
    )


def too_late(ts_col: str, config: EtlConfig) -> pl.Expr:
    """Rows that arrived more than ``max_lateness_days`` after they happened."""
    late = pl.col("ingest_ts") - pl.col(ts_col) > pl.duration(
        microseconds=days_us(config.max_lateness_days)
    )
    return late.fill_null(False)


def sessionise(events: pl.DataFrame, config: EtlConfig) -> pl.DataFrame:
    """Add ``_session_key``: the session_id, or a session derived by the inactivity gap.

    Rows without session_id are grouped per stitched user and device (anonymous_id, else
    user_id), ordered by time; a gap above ``session_gap_minutes`` starts a new session, named
    ``<user>|<device>|<start in epoch microseconds>``. The rule only looks back in time, so a
    session that crosses midnight stays whole and sessions are the same whichever later rows
    exist.
    """
    gap = round(config.session_gap_minutes * US_PER_MINUTE)
    missing = pl.col("session_id").is_null()
    given = events.filter(~missing).with_columns(pl.col("session_id").alias(SESSION))
    todo = events.filter(missing)
    if todo.height:
        todo = todo.with_columns(
            pl.coalesce("anonymous_id", "user_id", pl.lit("")).alias(DEVICE)
        ).sort(USER, DEVICE, "event_ts", "event_id")
        ts = pl.col("event_ts").dt.epoch("us")
        same = (pl.col(USER) == pl.col(USER).shift(1)) & (pl.col(DEVICE) == pl.col(DEVICE).shift(1))
        new = ~same.fill_null(False) | (ts - ts.shift(1) > gap)
        start = pl.when(new).then(ts).forward_fill()  # rows are contiguous per user and device
        derived = pl.concat_str([pl.col(USER), pl.col(DEVICE), start.cast(pl.String)],
                                separator="|")
        todo = todo.with_columns(derived.alias(SESSION)).drop(DEVICE)
        return pl.concat([given, todo])
    return given


def bot_flag(events: pl.DataFrame, config: EtlConfig) -> pl.Series:
    """True for events dropped by the bot rule (see ``BotRule``); same row order as ``events``.

    Causal: an event is judged only on the events of its session up to and including itself.
    """
    flag = pl.repeat(False, events.height, dtype=pl.Boolean, eager=True).alias("bot")
    if not config.bots.enabled or events.height == 0:
        return flag
    rule = config.bots
    idx = pl.int_range(pl.len(), dtype=pl.UInt32).alias("_i")
    frame = events.select(SESSION, "event_ts", "event_id").with_columns(idx)
    # only sessions longer than a threshold can trip it: candidates by a 64-bit hash of the
    # session key (sessions that share a hash only add candidates; the rule below runs on the
    # keys themselves)
    least = min(rule.max_events_per_minute, rule.max_events_per_session)
    h = pl.col(SESSION).hash(seed=3)
    big = frame.group_by(h.alias("_h")).agg(pl.len().alias("_n")).filter(pl.col("_n") > least)
    frame = frame.filter(h.is_in(big["_h"].implode()) & pl.col(SESSION).is_not_null())
    if frame.height == 0:
        return flag
    frame = frame.sort(SESSION, "event_ts", "event_id")
    minute = pl.col("event_ts").dt.truncate("1m")
    n_session = pl.int_range(1, pl.len() + 1).over(SESSION)
    n_minute = pl.int_range(1, pl.len() + 1).over(SESSION, minute)
    trigger = (n_session > rule.max_events_per_session) | (n_minute > rule.max_events_per_minute)
    flagged = frame.with_columns(trigger.alias("_t")).with_columns(
        pl.col("_t").cum_max().over(SESSION).alias("bot")
    ).filter("bot")
    return flag.scatter(flagged["_i"], True)
