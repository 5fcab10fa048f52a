"""Attribution and reward: against the rewards the hand-built logs record independently."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from etl import EtlConfig, EtlResult, build_transitions
from tests.etl.synth import ORDER_SCHEMA, Logs, make_logs, reward_of


def test_net_margin_reward_matches_reference(logs: Logs, result: EtlResult) -> None:
    tr = result.transitions
    assert tr.height == len(logs.truth)
    got = {r["decision_id"]: r for r in tr.iter_rows(named=True)}
    for dec, parts in logs.truth.items():
        row = got[dec]
        assert row["reward"] == pytest.approx(reward_of(parts), abs=1e-6)
        for part in ("revenue", "margin", "discount_cost", "returns"):
            assert row[part] == pytest.approx(parts[part], abs=1e-6), (dec, part)
    assert (tr["returns"] > 0).sum() > 0, "the fixture should contain netted returns"


def _one_order(status_rows: list[tuple[str, float, int]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A single decision with one placed line (margin 30, discount 5) and some reversals."""
    t0 = dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC)
    events = pl.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "event_ts": [t0, t0 + dt.timedelta(minutes=5)],
            "user_id": ["u1", "u1"],
            "anonymous_id": ["a1", "a1"],
            "session_id": ["s1", "s1"],
            "event_type": ["decision", "purchase"],
            "decision_id": ["d1", None],
            "action": ["pct_10", None],
            "propensity": [0.2, None],
        }
    )
    rows = [("o1", 1, t0 + dt.timedelta(minutes=5), "s1", 2, 50.0, 5.0, 30.0, "placed", None)]
    for i, (status, days, qty) in enumerate(status_rows):
        rows.append((f"o1-R{i}", 1, t0 + dt.timedelta(days=days), None, qty, 50.0,
                     5.0 * qty / 2, 30.0 * qty / 2, status, "o1"))
    orders = pl.DataFrame(
        [
            {"order_id": r[0], "line_no": r[1], "order_ts": r[2], "user_id": "u1",
             "anonymous_id": "a1", "session_id": r[3], "item_id": "i1", "quantity": r[4],
             "unit_price": r[5], "currency": "EUR", "discount_amount": r[6], "margin": r[7],
             "status": r[8], "parent_order_id": r[9]}
            for r in rows
        ],
        schema={k: v for k, v in ORDER_SCHEMA.items() if k != "ingest_ts"},
    )
    return events, orders


@pytest.mark.parametrize(
    ("reversals", "returns"),
    [
        ([], 0.0),
        ([("returned", 3.0, 1)], 15.0 - 2.5),  # half the line back inside the window
        ([("returned", 20.0, 1)], 0.0),  # after the 14-day settlement window: not counted
        ([("cancelled", 0.1, 2)], 30.0 - 5.0),  # whole line cancelled
        ([("refunded", 1.0, 1), ("returned", 13.0, 1)], 2 * (15.0 - 2.5)),
    ],
)
def test_returns_netted_inside_settlement_window(
    reversals: list[tuple[str, float, int]], returns: float
) -> None:
    events, orders = _one_order(reversals)
    tr = build_transitions(events, orders).transitions
    row = tr.row(0, named=True)
    assert row["margin"] == 30.0 and row["discount_cost"] == 5.0
    assert row["returns"] == pytest.approx(returns)
    assert row["reward"] == pytest.approx(30.0 - 5.0 - returns)
    assert row["revenue"] == pytest.approx(2 * 50.0 - 5.0)


def test_other_reward_definitions() -> None:
    events, orders = _one_order([("returned", 3.0, 1)])
    rev = build_transitions(events, orders, EtlConfig(reward="revenue")).transitions
    assert rev["reward"][0] == pytest.approx(95.0 - (50.0 - 2.5))
    buy = build_transitions(events, orders, EtlConfig(reward="purchase")).transitions
    assert buy["reward"][0] == 1.0
    weighted = EtlConfig(reward="weighted")
    w = build_transitions(events, orders, weighted).transitions
    weights = weighted.reward_weights
    assert w["reward"][0] == pytest.approx(weights.purchase * 1 + weights.revenue * 47.5)


def test_orders_without_session_use_the_attribution_window() -> None:
    events, orders = _one_order([])
    late = orders.with_columns(
        pl.lit(None, dtype=pl.String).alias("session_id"),
        (pl.col("order_ts") + pl.duration(hours=30)).alias("order_ts"),
    )
    no_session = orders.with_columns(pl.lit(None, dtype=pl.String).alias("session_id"))
    assert build_transitions(events, no_session).transitions["margin"][0] == 30.0
    assert build_transitions(events, late).transitions["margin"][0] == 0.0


def test_continuous_actions_are_rates() -> None:
    logs = make_logs(10, 10, seed=3, continuous=True)
    res = build_transitions(logs.events, logs.orders)
    tr = res.transitions
    assert tr.schema["action"] == pl.Array(pl.Float32, 1)
    assert res.manifest["action_space"] == {"type": "continuous", "low": [0.0], "high": [0.3]}
    want = logs.events.filter(pl.col("event_type") == "decision").select("decision_id", "action")
    got = tr.select("decision_id", pl.col("action").arr.first().alias("a")).join(
        want, on="decision_id"
    )
    assert (got["a"] - got["action"]).abs().max() < 1e-6  # type: ignore[operator]
    for dec, parts in logs.truth.items():
        r = tr.filter(pl.col("decision_id") == dec)["reward"][0]
        assert r == pytest.approx(reward_of(parts), abs=1e-6)
