"""Row-level validation: one quarantine reason per bad row (the first that applies).

Reasons, in the order they are checked:

events
    ``null_event_id``, ``null_timestamp``, ``timestamp_without_timezone``, ``null_identity``
    (user_id, anonymous_id and session_id all null), ``unknown_event_type``,
    ``unknown_currency``, ``negative_price``, and on decision events ``null_decision_id``,
    ``bad_action`` (missing, an unknown label, or a continuous rate outside the action bounds)
    and ``bad_propensity`` (discrete: outside (0, 1]; continuous: a density that is not > 0 and
    finite; null is allowed: the propensity was not logged).
orders
    ``null_order_id``, ``null_timestamp``, ``timestamp_without_timezone``, ``null_identity``,
    ``bad_quantity`` (null, zero or negative), ``bad_price`` (unit_price null or negative,
    discount or margin not finite), ``unknown_status``, ``unknown_currency``,
    ``reversal_without_parent`` (a cancelled/returned/refunded row without parent_order_id).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from etl.config import EtlConfig
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
)

EVENT_REASONS = (
    "null_event_id",
    "null_timestamp",
    "timestamp_without_timezone",
    "null_identity",
    "unknown_event_type",
    "unknown_currency",
    "negative_price",
    "null_decision_id",
    "bad_action",
    "bad_propensity",
)
ORDER_REASONS = (
    "null_order_id",
    "null_timestamp",
    "timestamp_without_timezone",
    "null_identity",
    "bad_quantity",
    "bad_price",
    "unknown_status",
    "unknown_currency",
    "reversal_without_parent",
)
REASON = "_reason"
ACTION_IDX = "_action_idx"
ACTION_VAL = "_action_val"


@dataclass(frozen=True)
class ActionSpace:
    """The decision's action space: discrete labels or a continuous interval."""

    continuous: bool
    labels: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 0.3

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
            labels = tuple(config.action_labels)
        elif config.scenario == "recommendation":
            labels = tuple(f"cat_{i:02d}" for i in range(config.n_categories))
        else:
            labels = PROMOTION_TIERS
        return cls(False, labels)

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


def _first(conditions: list[tuple[pl.Expr, str]]) -> pl.Expr:
    expr: pl.Expr = pl.lit(None, dtype=pl.String)
    for cond, reason in reversed(conditions):
        expr = pl.when(cond.fill_null(True)).then(pl.lit(reason)).otherwise(expr)
    return expr.alias(REASON)


def _identity_missing() -> pl.Expr:
    return (
        pl.col("user_id").is_null()
        & pl.col("anonymous_id").is_null()
        & pl.col("session_id").is_null()
    )


def event_reason(config: EtlConfig, space: ActionSpace) -> pl.Expr:
    """The quarantine reason of an events row (null when the row is good).

    Needs the columns added by :func:`encode_action`.
    """
    known = list(config.currencies)
    decision = pl.col("event_type") == "decision"
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
    return _first(
        [
            (pl.col("event_id").is_null(), "null_event_id"),
            (pl.col("event_ts").is_null(), "null_timestamp"),
            (pl.col(NAIVE_TS), "timestamp_without_timezone"),
            (_identity_missing(), "null_identity"),
            (~pl.col("event_type").is_in(list(EVENT_TYPES)), "unknown_event_type"),
            (
                pl.col("currency").is_not_null() & ~pl.col("currency").is_in(known),
                "unknown_currency",
            ),
            (pl.col("price").is_not_null() & ~(pl.col("price") >= 0), "negative_price"),
            (decision & pl.col("decision_id").is_null(), "null_decision_id"),
            (decision & bad_action, "bad_action"),
            ((decision & bad_prop).fill_null(False), "bad_propensity"),
        ]
    )


def order_reason(config: EtlConfig) -> pl.Expr:
    """The quarantine reason of an orders row (null when the row is good)."""
    known = list(config.currencies)
    reversal = pl.col("status") != "placed"
    return _first(
        [
            (pl.col("order_id").is_null(), "null_order_id"),
            (pl.col("order_ts").is_null(), "null_timestamp"),
            (pl.col(NAIVE_TS), "timestamp_without_timezone"),
            (_identity_missing(), "null_identity"),
            (~(pl.col("quantity") > 0), "bad_quantity"),
            (
                ~(pl.col("unit_price") >= 0)
                | ~pl.col("discount_amount").fill_null(0.0).is_finite()
                | ~pl.col("margin").fill_null(0.0).is_finite(),
                "bad_price",
            ),
            (~pl.col("status").fill_null("placed").is_in(list(ORDER_STATUSES)), "unknown_status"),
            (
                pl.col("currency").is_not_null() & ~pl.col("currency").is_in(known),
                "unknown_currency",
            ),
            (
                (reversal & pl.col("parent_order_id").is_null()).fill_null(False),
                "reversal_without_parent",
            ),
        ]
    )


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
        raw.alias("raw"),
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
