"""The raw-log contract is written down on both sides of the simulator/ETL boundary.

Neither package may import the other (docs/architecture.md), so each keeps its own copy of the
raw schema; this test keeps the two copies equal.
"""

from __future__ import annotations

from etl import schema as etl_schema
from simulator import frames, model


def test_event_and_order_schemas_agree() -> None:
    sim_events = frames.event_schema(continuous=False)
    for name, dtype in etl_schema.EVENT_COLUMNS.items():
        assert sim_events[name] == dtype, name
    assert frames.ORDER_SCHEMA == etl_schema.ORDER_COLUMNS


def test_vocabularies_agree() -> None:
    assert model.EVENT_TYPES == etl_schema.EVENT_TYPES
    assert tuple(model.STATUSES) == etl_schema.ORDER_STATUSES
    assert tuple(model.TIERS) == etl_schema.PROMOTION_TIERS
