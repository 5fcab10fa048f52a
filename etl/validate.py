"""Row-level validation: one quarantine reason per bad row (the first that applies), and the
column it is about.

Reasons, in the order they are checked:

events
    ``null_event_id``, ``null_timestamp``, ``timestamp_without_timezone``, ``future_event``
    (event_ts later than ingest_ts, or event_ts / ingest_ts later than the end of the run date,
    by more than ``clock_skew_tolerance_minutes``), ``null_identity`` (user_id, anonymous_id and
    session_id all null), ``unknown_event_type``, ``unknown_currency``, ``non_finite`` (NaN or
    infinite price or propensity), ``out_of_range`` (price beyond ``max_amount``, position
    beyond ``max_count``), ``negative_price``, and on decision events ``null_decision_id``,
    ``bad_action`` (missing, a label outside the configured or default labels, or a continuous
    rate outside the action bounds), ``unknown_action`` (a label outside a vocabulary that was
    discovered from the logs) and ``bad_propensity`` (discrete: outside (0, 1]; continuous: a
    density that is not > 0 and finite; null is allowed: the propensity was not logged).
orders
    ``null_order_id``, ``null_timestamp``, ``timestamp_without_timezone``, ``future_event``,
    ``null_identity``, ``non_finite`` (unit_price, discount_amount, margin), ``out_of_range``
    (those beyond ``max_amount``, quantity beyond ``max_count``), ``bad_quantity`` (null, zero
    or negative), ``bad_price`` (unit_price null or negative), ``unknown_status``,
    ``unknown_currency``, ``reversal_without_parent`` (a cancelled/returned/refunded row without
    parent_order_id).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from etl.config import EtlConfig
from etl.errors import EtlError
from etl.schema import (
    EVENT_COLUMNS,
    EVENT_TYPES,
    NAIVE_TS,
    ORDER_COLUMNS,
    ORDER_STATUSES,
    PART_DATE,
    PROMOTION_TIERS,
    QUARANTINE_SCHEMA,
    ROW_NR,
    SOURCE_FILE,
    TS,
)

EVENT_REASONS = (
    "null_event_id",
    "null_timestamp",
    "timestamp_without_timezone",
    "future_event",
    "null_identity",
    "unknown_event_type",
    "unknown_currency",
    "non_finite",
    "out_of_range",
    "negative_price",
    "null_decision_id",
    "bad_action",
    "unknown_action",
    "bad_propensity",
)
ORDER_REASONS = (
    "null_order_id",
    "null_timestamp",
    "timestamp_without_timezone",
    "future_event",
    "null_identity",
    "non_finite",
    "out_of_range",
    "bad_quantity",
    "bad_price",
    "unknown_status",
    "unknown_currency",
    "reversal_without_parent",
)
REASON = "_reason"
COLUMN = "_reason_column"
EVENT_FLOATS = ("price", "propensity")
ORDER_MONEY = ("unit_price", "discount_amount", "margin")
ACTION_IDX = "_action_idx"
ACTION_VAL = "_action_val"


@dataclass(frozen=True)
class ActionSpace:
    """The decision's action space: discrete labels or a continuous interval.

    ``discovered``: the labels were found in the logs (no ``action_labels`` in the config and
    the scenario's default does not apply); a label outside them is then ``unknown_action``
    rather than ``bad_action``.
    """

    continuous: bool
    labels: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 0.3
    discovered: bool = False

    @property
    def n(self) -> int:
        """Number of discrete actions (1 for continuous: the rate's dimension)."""
        return 1 if self.continuous else len(self.labels)

    def to_manifest(self) -> dict[str, object]:
        """The ``action_space`` entry of the manifest."""
        if self.continuous:
            return {"type": "continuous", "low": [self.low], "high": [self.high]}
        return {"type": "discrete", "n": self.n, "labels": list(self.labels)}

    @classmethod
    def from_config(cls, config: EtlConfig, continuous: bool) -> ActionSpace:
        """The action space a config describes (labels defaulted by scenario)."""
        if continuous:
            return cls(True, (), config.continuous_low, config.continuous_high)
        if config.action_labels is not None:
            return cls(False, tuple(config.action_labels))
        return cls(False, default_labels(config))

    @classmethod
    def from_manifest(cls, entry: dict[str, object]) -> ActionSpace:
        """Inverse of :meth:`to_manifest`."""
        if entry["type"] == "continuous":
            low = entry["low"]
            high = entry["high"]
            assert isinstance(low, list) and isinstance(high, list)
            return cls(True, (), float(low[0]), float(high[0]))
        labels = entry["labels"]
        assert isinstance(labels, list)
        return cls(False, tuple(str(x) for x in labels))


def default_labels(config: EtlConfig) -> tuple[str, ...]:
    """The scenario's default discrete labels (used when the config gives none)."""
    if config.scenario == "recommendation":
        return tuple(f"cat_{i:02d}" for i in range(config.n_categories))
    return PROMOTION_TIERS


def resolve_action_space(
    config: EtlConfig, continuous: bool, found: dict[str, int], stored: ActionSpace | None
) -> ActionSpace:
    """The action space of a run: the config's labels; else the vocabulary stored in the
    dataset's manifest (``stored``, nightly runs: never re-indexed); else the scenario's default
    when the decision events use any of its labels (``found``: label -> decisions); else the
    sorted labels found (discovered)."""
    if continuous:
        return ActionSpace.from_config(config, True)
    default = default_labels(config)
    if config.action_labels is not None:
        labels = tuple(config.action_labels)
        if stored is not None and not stored.continuous and stored.labels != labels:
            raise EtlError(
                f"the dataset's manifest has action labels {list(stored.labels)} but the config "
                f"gives {labels and list(labels)}: a nightly run cannot change the action "
                "space; write a new dataset folder (a backfill) or fix [etl] action_labels"
            )
        return ActionSpace(False, labels)
    if stored is not None and not stored.continuous:
        return ActionSpace(False, stored.labels, discovered=stored.labels != default)
    if not found or any(label in found for label in default):
        return ActionSpace(False, default)
    return ActionSpace(False, tuple(sorted(found)), discovered=True)


def action_hint(space: ActionSpace, found: dict[str, int], limit: int = 8) -> str:
    """What a ``bad_action`` / ``unknown_action`` message adds: the labels expected and the
    labels the decision events use (with their counts), most frequent first."""
    if space.continuous:
        return f"actions must be rates in [{space.low}, {space.high}]"
    ranked = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{label!r}: {n}" for label, n in ranked[:limit])
    more = f", and {len(ranked) - limit} more" if len(ranked) > limit else ""
    return (
        f"actions expected: {list(space.labels)}; the decision events use {{{shown}{more}}} "
        "(set [etl] action_labels, or scenario / n_categories)"
    )


def encode_action(space: ActionSpace) -> list[pl.Expr]:
    """``_action_idx`` (int32, discrete) and ``_action_val`` (float64 rate, continuous)."""
    if space.continuous:
        val = pl.col("action").cast(pl.Float64)
        ok = val.is_finite() & (val >= space.low) & (val <= space.high)
        return [
            pl.lit(0, dtype=pl.Int32).alias(ACTION_IDX),
            pl.when(ok).then(val).alias(ACTION_VAL),
        ]
    idx = pl.col("action").replace_strict(
        list(space.labels), list(range(space.n)), default=None, return_dtype=pl.Int32
    )
    return [idx.alias(ACTION_IDX), pl.lit(None, dtype=pl.Float64).alias(ACTION_VAL)]


Check = tuple[pl.Expr, str, str]  # (the row is bad, reason, column)


def _first(checks: list[Check]) -> list[pl.Expr]:
    """``_reason`` and ``_reason_column`` of the first check that applies (a null condition
    counts as applying)."""
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    column: pl.Expr = pl.lit(None, dtype=pl.String)
    for cond, why, col in reversed(checks):
        hit = cond.fill_null(True)
        reason = pl.when(hit).then(pl.lit(why)).otherwise(reason)
        column = pl.when(hit).then(pl.lit(col)).otherwise(column)
    return [reason.alias(REASON), column.alias(COLUMN)]


def _identity_missing() -> pl.Expr:
    return (
        pl.col("user_id").is_null()
        & pl.col("anonymous_id").is_null()
        & pl.col("session_id").is_null()
    )


def _future(ts_col: str, config: EtlConfig, as_of_end_us: int | None) -> pl.Expr:
    """Rows from the future: their time later than their arrival, or their time or arrival
    later than the end of the run date, by more than the clock-skew tolerance."""
    tol = round(config.clock_skew_tolerance_minutes * 60_000_000)
    ahead = (pl.col(ts_col) - pl.col("ingest_ts")) > pl.duration(microseconds=tol)
    cond = ahead.fill_null(False)
    if as_of_end_us is not None:
        bound = pl.lit(as_of_end_us + tol, dtype=pl.Int64).cast(TS)
        latest = pl.max_horizontal(pl.col(ts_col), pl.col("ingest_ts"))
        cond = cond | (latest > bound).fill_null(False)
    return cond


def _numbers(config: EtlConfig, floats: tuple[str, ...], money: tuple[str, ...],
             counts: tuple[str, ...]) -> list[Check]:
    """Non-finite floats, then money and counts beyond their maximum (nulls pass)."""
    checks: list[Check] = [
        (~pl.col(c).is_finite().fill_null(True), "non_finite", c) for c in floats
    ]
    checks += [
        ((pl.col(c).abs() > config.max_amount).fill_null(False), "out_of_range", c)
        for c in money
    ]
    checks += [
        ((pl.col(c) > config.max_count).fill_null(False), "out_of_range", c) for c in counts
    ]
    return checks


def event_reason(
    config: EtlConfig, space: ActionSpace, as_of_end_us: int | None = None
) -> list[pl.Expr]:
    """The quarantine reason of an events row and its column (both null when the row is good).

    Needs the columns added by :func:`encode_action`. ``as_of_end_us``: the end of the run
    date (epoch microseconds); rows later than it are ``future_event``.
    """
    known = list(config.currencies)
    decision = pl.col("event_type") == "decision"
    unknown_action = pl.lit(False)
    if space.continuous:
        bad_prop = pl.col("propensity").is_not_null() & ~(
            pl.col("propensity").is_finite() & (pl.col("propensity") > 0)
        )
        bad_action = pl.col(ACTION_VAL).is_null()
    else:
        bad_prop = pl.col("propensity").is_not_null() & ~(
            (pl.col("propensity") > 0) & (pl.col("propensity") <= 1)
        )
        bad_action = pl.col(ACTION_IDX).is_null()
        if space.discovered:
            bad_action = pl.col("action").is_null()
            unknown_action = pl.col(ACTION_IDX).is_null()
    return _first(
        [
            (pl.col("event_id").is_null(), "null_event_id", "event_id"),
            (pl.col("event_ts").is_null(), "null_timestamp", "event_ts"),
            (pl.col(NAIVE_TS), "timestamp_without_timezone", "event_ts"),
            (_future("event_ts", config, as_of_end_us), "future_event", "event_ts"),
            (_identity_missing(), "null_identity", "user_id"),
            (~pl.col("event_type").is_in(list(EVENT_TYPES)), "unknown_event_type", "event_type"),
            (
                pl.col("currency").is_not_null() & ~pl.col("currency").is_in(known),
                "unknown_currency",
                "currency",
            ),
            *_numbers(config, EVENT_FLOATS, ("price",), ("position",)),
            (pl.col("price").is_not_null() & ~(pl.col("price") >= 0), "negative_price", "price"),
            (decision & pl.col("decision_id").is_null(), "null_decision_id", "decision_id"),
            (decision & bad_action, "bad_action", "action"),
            ((decision & unknown_action).fill_null(False), "unknown_action", "action"),
            ((decision & bad_prop).fill_null(False), "bad_propensity", "propensity"),
        ]
    )


def order_reason(config: EtlConfig, as_of_end_us: int | None = None) -> list[pl.Expr]:
    """The quarantine reason of an orders row and its column (null when the row is good)."""
    known = list(config.currencies)
    reversal = pl.col("status") != "placed"
    return _first(
        [
            (pl.col("order_id").is_null(), "null_order_id", "order_id"),
            (pl.col("order_ts").is_null(), "null_timestamp", "order_ts"),
            (pl.col(NAIVE_TS), "timestamp_without_timezone", "order_ts"),
            (_future("order_ts", config, as_of_end_us), "future_event", "order_ts"),
            (_identity_missing(), "null_identity", "user_id"),
            *_numbers(config, ORDER_MONEY, ORDER_MONEY, ("quantity",)),
            (~(pl.col("quantity") > 0), "bad_quantity", "quantity"),
            (~(pl.col("unit_price") >= 0), "bad_price", "unit_price"),
            (
                ~pl.col("status").fill_null("placed").is_in(list(ORDER_STATUSES)),
                "unknown_status",
                "status",
            ),
            (
                pl.col("currency").is_not_null() & ~pl.col("currency").is_in(known),
                "unknown_currency",
                "currency",
            ),
            (
                (reversal & pl.col("parent_order_id").is_null()).fill_null(False),
                "reversal_without_parent",
                "parent_order_id",
            ),
        ]
    )


def is_valid(reason: list[pl.Expr]) -> pl.Expr:
    """The filter that keeps the good rows of :func:`event_reason` / :func:`order_reason`."""
    return reason[0].is_null()


def quarantine_rows(bad: pl.DataFrame, table: str, extra_columns: list[str]) -> pl.DataFrame:
    """Quarantine rows (``QUARANTINE_SCHEMA``) from rows that carry a ``_reason``."""
    base = list(EVENT_COLUMNS if table == "events" else ORDER_COLUMNS)
    cols = [c for c in [*base, *extra_columns] if c in bad.columns]
    raw = pl.struct(
        [
            pl.col(c).dt.to_string("%Y-%m-%dT%H:%M:%S%.6f%:z").alias(c)
            if isinstance(bad.schema[c], pl.Datetime)
            else pl.col(c)
            for c in cols
        ]
    ).struct.json_encode()
    return bad.select(
        pl.lit(table).alias("source_table"),
        pl.col(SOURCE_FILE).alias("source_file"),
        pl.col(ROW_NR).cast(pl.Int64).alias("row_number"),
        pl.col(PART_DATE).alias("partition_date"),
        pl.col(REASON).alias("reason"),
        pl.col(COLUMN).alias("column"),
        raw.alias("raw"),
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
