"""Raw-log frames: the contract schemas, numpy blocks -> polars, the row-level dirt.

The events and orders frames follow ``docs/architecture.md`` (raw logs) exactly; the internal
column ``_u`` (the simulator's user index) rides along until :func:`public` drops it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from simulator.engine import Engine, Pending
from simulator.model import (
    CHANNELS,
    CURRENCY,
    DEVICES,
    ET,
    EVENT_TYPES,
    STATUSES,
    US_PER_S,
    action_labels,
)

TS = pl.Datetime("us", "UTC")

EVENT_SCHEMA_BASE: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "event_ts": TS,
    "ingest_ts": TS,
    "user_id": pl.String(),
    "anonymous_id": pl.String(),
    "session_id": pl.String(),
    "event_type": pl.String(),
    "item_id": pl.String(),
    "item_category": pl.String(),
    "price": pl.Float64(),
    "currency": pl.String(),
    "order_id": pl.String(),
    "position": pl.Int32(),
    "decision_id": pl.String(),
    "action": pl.String(),
    "propensity": pl.Float64(),
    "policy_id": pl.String(),
    "device": pl.String(),
    "channel": pl.String(),
}

ORDER_SCHEMA: dict[str, pl.DataType] = {
    "order_id": pl.String(),
    "line_no": pl.Int32(),
    "order_ts": TS,
    "ingest_ts": TS,
    "user_id": pl.String(),
    "anonymous_id": pl.String(),
    "session_id": pl.String(),
    "item_id": pl.String(),
    "quantity": pl.Int32(),
    "unit_price": pl.Float64(),
    "currency": pl.String(),
    "discount_amount": pl.Float64(),
    "margin": pl.Float64(),
    "status": pl.String(),
    "parent_order_id": pl.String(),
}


def event_schema(continuous: bool) -> dict[str, pl.DataType]:
    """The events schema; ``action`` is float64 for the continuous promotion, else string."""
    schema = dict(EVENT_SCHEMA_BASE)
    if continuous:
        schema["action"] = pl.Float64()
    return schema


def _zfill(col: str, width: int) -> pl.Expr:
    return pl.col(col).cast(pl.String).str.zfill(width)


def _ts(col: str) -> pl.Expr:
    return pl.from_epoch(pl.col(col), time_unit="us").dt.replace_time_zone("UTC")


def _session_id() -> pl.Expr:
    return pl.format("s{}", _zfill("_s", 10))


def _decision_id(scenario: str) -> pl.Expr:
    if scenario == "promotion":
        return pl.format("d{}", _zfill("_s", 10))
    return pl.format("d{}-{}", _zfill("_s", 10), _zfill("dstep", 2))


def _with_event_sequence(engine: Engine, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sort a round's events by session and time and number them within their session."""
    order = np.lexsort((raw["_k"], raw["ts"], raw["_s"]))
    out = {k: v[order] for k, v in raw.items()}
    s = out["_s"]
    n = len(s)
    if n == 0:
        out["_seq"] = np.zeros(0, np.int64)
        return out
    first = np.r_[True, s[1:] != s[:-1]]
    grp_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    out["_seq"] = engine.event_seq[out["_u"]] + np.arange(n) - grp_start
    engine.event_seq += np.bincount(out["_u"], minlength=len(engine.event_seq))
    return out


class _Lookups:
    """String ids precomputed once per simulation and gathered per row (much faster than
    formatting every row)."""

    def __init__(self, engine: Engine) -> None:
        pop, cat = engine.pop, engine.catalog
        self.user = pl.Series(pop.user_code).cast(pl.String).str.zfill(7)
        self.user = pl.select(pl.concat_str([pl.lit("u"), pl.lit(self.user)])).to_series()
        anon = pl.Series(pop.anon_code.reshape(-1)).cast(pl.String)
        self.anon = pl.select(pl.concat_str([pl.lit("a"), pl.lit(anon)])).to_series()
        items = pl.Series(np.arange(len(cat.price))).cast(pl.String).str.zfill(5)
        self.item = pl.select(pl.concat_str([pl.lit("i"), pl.lit(items)])).to_series()
        cats = pl.Series(cat.category).cast(pl.String).str.zfill(2)
        self.item_category = pl.select(pl.concat_str([pl.lit("cat_"), pl.lit(cats)])).to_series()
        self.seq = pl.Series(np.arange(100_000)).cast(pl.String).str.zfill(4)
        self.step = pl.Series(np.arange(1000)).cast(pl.String).str.zfill(2)
        self.event_type = pl.Series(list(EVENT_TYPES))
        self.device = pl.Series(list(DEVICES))
        self.channel = pl.Series(list(CHANNELS))
        self.labels = pl.Series(list(action_labels(engine.config)), dtype=pl.String)


def _lookups(engine: Engine) -> _Lookups:
    cached = getattr(engine, "_lookups", None)
    if cached is None:
        cached = _Lookups(engine)
        engine._lookups = cached  # type: ignore[attr-defined]
    return cached


def _idx(values: np.ndarray, valid: np.ndarray | None = None) -> pl.Series:
    """Gather indices, null where ``valid`` is false (or where the value is negative)."""
    ok = values >= 0 if valid is None else valid
    return pl.Series(np.where(ok, values, 0), dtype=pl.Int64).set(pl.Series(~ok), None)


def _session_strings(codes: np.ndarray) -> tuple[pl.Series, np.ndarray]:
    uniq, inv = np.unique(codes, return_inverse=True)
    digits = pl.Series(uniq).cast(pl.String).str.zfill(10)
    return digits, inv


def _from_epoch(values: np.ndarray) -> pl.Series:
    return pl.Series(values, dtype=pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def finish_round_events(engine: Engine, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The numpy part of a round's events: sequence numbers, arrival times, duplicates (dirt).

    Must be called once per round, right after :meth:`Engine.step` (it uses the round's dirt
    stream and advances the per-session event counters).
    """
    cfg = engine.config
    raw = _with_event_sequence(engine, raw)
    n = len(raw["ts"])
    rng = engine._dirt_rng(2)
    ingest = raw["ts"] + US_PER_S + rng.integers(0, 300_000, n)
    late = rng.random(n) < cfg.dirt.late_rate
    late_by = ((1200 + rng.random(n) * 30 * 3600) * US_PER_S).astype(np.int64)
    if cfg.dirt.late_events:
        ingest = np.where(late, raw["ts"] + late_by, ingest)
    raw["_ingest"] = ingest
    if cfg.dirt.duplicates and n:
        dup = np.flatnonzero(rng.random(n) < cfg.dirt.duplicate_rate)
        raw = {k: np.concatenate([v, v[dup]]) for k, v in raw.items()}
    return raw


def concat_blocks(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    """Concatenate per-round numpy blocks (``None`` when there are none)."""
    if not blocks:
        return None
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def events_frame(
    engine: Engine, raw: dict[str, np.ndarray], *, log_propensity: bool, policy_id: str
) -> pl.DataFrame:
    """Finished event blocks (:func:`finish_round_events`) as a raw-log events frame, plus
    ``_u``, ``_ts``, ``_s`` and ``_seq`` (for fast numeric sorting)."""
    df = _event_columns(engine, raw, log_propensity=log_propensity)
    return _public_event_columns(
        df, scenario=engine.config.scenario, continuous=engine.continuous, policy_id=policy_id
    )


def _event_columns(
    engine: Engine, raw: dict[str, np.ndarray], *, log_propensity: bool
) -> pl.DataFrame:
    """The event blocks' columns gathered into strings and nullable values (the ids still in
    parts: ``_sd`` session digits, ``_seqs`` sequence digits, ``_dstep`` decision step)."""
    lk = _lookups(engine)
    n = len(raw["ts"])
    ingest = raw["_ingest"]
    u = raw["_u"]
    item = raw["item"]
    has_item = item >= 0
    is_decision = raw["etype"] == ET["decision"]
    digits, inv = _session_strings(raw["_s"])
    sess_digits = digits.gather(inv)
    price = pl.Series(raw["price"]).fill_nan(None)
    if engine.continuous:
        action = pl.Series(np.where(is_decision, raw["action_f"], np.nan)).fill_nan(None)
    else:
        action = lk.labels.gather(_idx(raw["action_i"], is_decision))
    if log_propensity:
        propensity = pl.Series(np.where(is_decision, raw["prop"], np.nan)).fill_nan(None)
    else:
        propensity = pl.Series(np.full(n, None), dtype=pl.Float64)
    anonymous = raw["ts"] < raw["_login"]
    step = lk.step.gather(_idx(raw["dstep"], is_decision))
    return pl.DataFrame(
        {
            "_u": u,
            "_ts": raw["ts"],
            "_s": raw["_s"],
            "_seq": raw["_seq"],
            "_sd": sess_digits,
            "_seqs": lk.seq.gather(pl.Series(raw["_seq"])),
            "_dstep": step,
            "event_ts": _from_epoch(raw["ts"]),
            "ingest_ts": _from_epoch(ingest),
            "user_id": lk.user.gather(_idx(u, ~anonymous)),
            "anonymous_id": lk.anon.gather(pl.Series(u * 3 + raw["sdev"].astype(np.int64))),
            "event_type": lk.event_type.gather(pl.Series(raw["etype"].astype(np.int64))),
            "item_id": lk.item.gather(_idx(item, has_item)),
            "item_category": lk.item_category.gather(_idx(item, has_item)),
            "price": price,
            "_order": raw["order"],
            "position": pl.Series(raw["position"], dtype=pl.Int32).set(
                pl.Series(raw["position"] < 0), None
            ),
            "_dec": is_decision,
            "action": action,
            "propensity": propensity,
            "device": lk.device.gather(_idx(raw["device"].astype(np.int64))),
            "channel": lk.channel.gather(_idx(raw["channel"].astype(np.int64))),
        }
    )


def _public_event_columns(
    df: pl.DataFrame, *, scenario: str, continuous: bool, policy_id: str
) -> pl.DataFrame:
    """The events contract's columns (and order) from :func:`_event_columns`, ids assembled."""
    if scenario == "promotion":
        decision_id = pl.concat_str([pl.lit("d"), pl.col("_sd")])
    else:
        decision_id = pl.concat_str([pl.lit("d"), pl.col("_sd"), pl.lit("-"), pl.col("_dstep")])
    out = df.select(
        "_u",
        "_ts",
        "_s",
        "_seq",
        pl.concat_str([pl.lit("s"), pl.col("_sd"), pl.lit("-"), pl.col("_seqs")]).alias("event_id"),
        "event_ts",
        "ingest_ts",
        "user_id",
        "anonymous_id",
        pl.concat_str([pl.lit("s"), pl.col("_sd")]).alias("session_id"),
        "event_type",
        "item_id",
        "item_category",
        "price",
        pl.when(pl.col("price").is_not_null()).then(pl.lit(CURRENCY)).alias("currency"),
        pl.when(pl.col("_order"))
        .then(pl.concat_str([pl.lit("o"), pl.col("_sd")]))
        .alias("order_id"),
        "position",
        pl.when(pl.col("_dec")).then(decision_id).alias("decision_id"),
        "action",
        "propensity",
        pl.when(pl.col("_dec")).then(pl.lit(policy_id)).alias("policy_id"),
        "device",
        "channel",
    ).cast(event_schema(continuous))  # type: ignore[arg-type]
    return out


def orders_frame(engine: Engine, raw: dict[str, np.ndarray]) -> pl.DataFrame:
    """One round's order-line blocks as a raw-log orders frame (plus ``_u``)."""
    pop = engine.pop
    df = pl.DataFrame(
        {
            "_u": raw["_u"],
            "_s": raw["_s"],
            "ts": raw["ts"],
            "_uc": pop.user_code[raw["_u"]],
            "_ac": pop.anon_code[raw["_u"], raw["sdev"]],
            "line_no": raw["line"],
            "_item": raw["item"],
            "quantity": raw["qty"],
            "unit_price": raw["price"],
            "discount_amount": raw["disc"],
            "margin": raw["margin"],
            "_status": raw["status"].astype(np.int64),
            "_rev": raw["rev_n"],
        }
    )
    parent = pl.format("o{}", _zfill("_s", 10))
    return (
        df.select(
            pl.col("_u"),
            pl.when(pl.col("_rev") > 0)
            .then(pl.format("o{}-R{}", _zfill("_s", 10), pl.col("_rev")))
            .otherwise(parent)
            .alias("order_id"),
            pl.col("line_no"),
            _ts("ts").alias("order_ts"),
            (_ts("ts") + pl.duration(seconds=1)).alias("ingest_ts"),
            pl.format("u{}", _zfill("_uc", 7)).alias("user_id"),
            pl.format("a{}", pl.col("_ac")).alias("anonymous_id"),
            _session_id().alias("session_id"),
            pl.format("i{}", _zfill("_item", 5)).alias("item_id"),
            pl.col("quantity"),
            pl.col("unit_price"),
            pl.lit(CURRENCY).alias("currency"),
            pl.col("discount_amount"),
            pl.col("margin"),
            pl.col("_status").replace_strict(list(range(4)), list(STATUSES)).alias("status"),
            pl.when(pl.col("_rev") > 0).then(parent).alias("parent_order_id"),
        ).cast({"_u": pl.Int64(), **ORDER_SCHEMA})  # type: ignore[dict-item]
    )


def decisions_frame(engine: Engine, p: Pending, policy_id: str) -> pl.DataFrame:
    """The pending decisions as decision-event rows (action and propensity still null)."""
    cfg = engine.config
    df = pl.DataFrame(
        {
            "_s": p.session,
            "dstep": p.step,
            "ts": p.ts,
            "_login": p.login_ts,
            "_uc": engine.pop.user_code[p.users],
            "_ac": engine.pop.anon_code[p.users, p.device],
            "_dev": p.device.astype(np.int64),
            "_ch": p.channel.astype(np.int64),
            "_seq": engine.event_seq[p.users],
        }
    )
    schema = event_schema(engine.continuous)
    return df.select(
        pl.format("{}-{}", _session_id(), _zfill("_seq", 4)).alias("event_id"),
        _ts("ts").alias("event_ts"),
        _ts("ts").alias("ingest_ts"),
        pl.when(pl.col("ts") >= pl.col("_login"))
        .then(pl.format("u{}", _zfill("_uc", 7)))
        .alias("user_id"),
        pl.format("a{}", pl.col("_ac")).alias("anonymous_id"),
        _session_id().alias("session_id"),
        pl.lit("decision").alias("event_type"),
        pl.lit(None).alias("item_id"),
        pl.lit(None).alias("item_category"),
        pl.lit(None).alias("price"),
        pl.lit(None).alias("currency"),
        pl.lit(None).alias("order_id"),
        pl.lit(None).alias("position"),
        _decision_id(cfg.scenario).alias("decision_id"),
        pl.lit(None).alias("action"),
        pl.lit(None).alias("propensity"),
        pl.lit(policy_id).alias("policy_id"),
        pl.col("_dev").replace_strict(list(range(3)), list(DEVICES)).alias("device"),
        pl.col("_ch").replace_strict(list(range(4)), list(CHANNELS)).alias("channel"),
    ).cast(schema)  # type: ignore[arg-type]


def public(frame: pl.DataFrame) -> pl.DataFrame:
    """Drop the simulator's internal columns."""
    return frame.select([c for c in frame.columns if not c.startswith("_")])
