"""The raw-log and transition schemas the ETL reads and writes (``docs/architecture.md``)."""

from __future__ import annotations

import polars as pl

SCHEMA_VERSION = 1
UTC = "UTC"
TS = pl.Datetime("us", UTC)

EVENT_TYPES = (
    "page_view",
    "impression",
    "view_item",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "begin_checkout",
    "purchase",
    "refund",
    "decision",
    "other",
)
ORDER_STATUSES = ("placed", "cancelled", "returned", "refunded")
PROMOTION_TIERS = ("none", "pct_5", "pct_10", "free_shipping")

# Raw columns: name -> dtype; `None` marks the action column, whose type decides the action space.
EVENT_COLUMNS: dict[str, pl.DataType] = {
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
    "propensity": pl.Float64(),
    "policy_id": pl.String(),
}
EVENT_REQUIRED = ("event_id", "event_ts", "event_type")
ORDER_COLUMNS: dict[str, pl.DataType] = {
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
ORDER_REQUIRED = ("order_id", "order_ts", "quantity", "unit_price")
IDENTITY_COLUMNS = ("user_id", "anonymous_id", "session_id")

# Columns the ETL adds to every raw row: where it came from (for quarantine and accounting).
SOURCE_FILE = "_source_file"
ROW_NR = "_row_nr"
PART_DATE = "_part_date"
NAIVE_TS = "_naive_ts"

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_table": pl.String(),
    "source_file": pl.String(),
    "row_number": pl.Int64(),
    "partition_date": pl.Date(),
    "reason": pl.String(),
    "column": pl.String(),
    "raw": pl.String(),
}


def transition_schema(n_features: int, continuous: bool) -> dict[str, pl.DataType]:
    """The transition table's columns and types, in order."""
    action: pl.DataType = pl.Array(pl.Float32, 1) if continuous else pl.Int32()
    return {
        "episode_id": pl.String(),
        "step": pl.Int32(),
        "decision_id": pl.String(),
        "user_id": pl.String(),
        "session_id": pl.String(),
        "decision_ts": TS,
        "observation": pl.Array(pl.Float32, n_features),
        "action": action,
        "reward": pl.Float64(),
        "terminal": pl.Boolean(),
        "timeout": pl.Boolean(),
        "behaviour_propensity": pl.Float64(),
        "propensity_source": pl.String(),
        "revenue": pl.Float64(),
        "margin": pl.Float64(),
        "discount_cost": pl.Float64(),
        "returns": pl.Float64(),
    }
