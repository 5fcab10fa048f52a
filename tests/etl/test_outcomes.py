"""Outcomes on the decision row (``[etl.outcomes]``): a bandit impression log, one row per
decision with its click, conversion and revenue, maps straight to rewards."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from etl import EtlConfig, build_transitions, run_etl
from etl.config import DecisionOutcomes

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
# (user, minutes after T0, action, clicked, converted, revenue)
LOG = [
    ("u1", 0, "banner_a", 1, 0, 0.0),
    ("u2", 5, "banner_b", 1, 1, 30.0),
    ("u3", 9, "banner_a", 0, 0, None),
    ("u4", 12, "banner_c", True, True, 12.5),
]


def bandit_log() -> pl.DataFrame:
    """One row per decision, outcomes on the row; no user sessions, no orders."""
    return pl.DataFrame(
        {
            "event_id": [f"imp-{i}" for i in range(len(LOG))],
            "event_ts": [T0 + dt.timedelta(minutes=m) for _, m, *_ in LOG],
            "anonymous_id": [u for u, *_ in LOG],
            "session_id": [f"s-{u}" for u, *_ in LOG],
            "event_type": ["decision"] * len(LOG),
            "decision_id": [f"d{i}" for i in range(len(LOG))],
            "action": [a for _, _, a, *_ in LOG],
            "propensity": [1 / 3] * len(LOG),
            "click": [int(c) for *_, c, _, _ in LOG],
            "converted": [bool(v) for *_, v, _ in LOG],
            "revenue": [r for *_, r in LOG],
        }
    )


def no_orders() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "order_id": pl.String,
            "order_ts": pl.Datetime("us", "UTC"),
            "quantity": pl.Int32,
            "unit_price": pl.Float64,
        }
    )


def _config(**kw: object) -> EtlConfig:
    return EtlConfig.model_validate(
        {
            "episode_mode": "one_step",
            "bots": {"enabled": False},
            "outcomes": {"click": "click", "purchase": "converted", "revenue": "revenue"},
            **kw,
        }
    )


def _by_decision(trans: pl.DataFrame) -> dict[str, dict[str, object]]:
    return {r["decision_id"]: r for r in trans.iter_rows(named=True)}


def test_weighted_reward_from_outcome_columns() -> None:
    # hand computation, default weights (click 1, add_to_cart 2, purchase 5, revenue 0):
    # reward = clicked + 5 * converted
    res = build_transitions(bandit_log(), no_orders(), _config(), as_of=dt.date(2026, 2, 1))
    rows = _by_decision(res.transitions)
    assert {d: r["reward"] for d, r in rows.items()} == {"d0": 1.0, "d1": 6.0, "d2": 0.0, "d3": 6.0}
    assert {d: r["revenue"] for d, r in rows.items()} == {
        "d0": 0.0,
        "d1": 30.0,
        "d2": 0.0,
        "d3": 12.5,
    }
    assert res.manifest["reward"]["kind"] == "weighted"  # auto with outcome columns
    assert res.counts["events"]["used"] == 4


def test_revenue_and_purchase_rewards() -> None:
    res = build_transitions(
        bandit_log(), no_orders(), _config(reward="revenue"), as_of=dt.date(2026, 2, 1)
    )
    assert _by_decision(res.transitions)["d1"]["reward"] == 30.0
    assert res.transitions["reward"].sum() == pytest.approx(42.5)
    res = build_transitions(
        bandit_log(), no_orders(), _config(reward="purchase"), as_of=dt.date(2026, 2, 1)
    )
    assert res.transitions.sort("decision_id")["reward"].to_list() == [0.0, 1.0, 0.0, 1.0]
    weights = {"click": 0.5, "add_to_cart": 0.0, "purchase": 0.0, "revenue": 0.1}
    res = build_transitions(
        bandit_log(), no_orders(), _config(reward_weights=weights), as_of=dt.date(2026, 2, 1)
    )
    got = res.transitions.sort("decision_id")["reward"].to_list()
    assert got == pytest.approx([0.5, 0.5 + 3.0, 0.0, 0.5 + 1.25])


def test_outcome_columns_read_from_files(tmp_path: Path) -> None:
    src = tmp_path / "raw" / "events" / "date=2026-01-05"
    src.mkdir(parents=True)
    bandit_log().write_csv(src / "part-00000.csv")
    res = run_etl(tmp_path / "raw", tmp_path / "out", _config(), as_of="2026-02-01")
    assert res.transitions.sort("decision_id")["reward"].to_list() == [1.0, 6.0, 0.0, 6.0]
    assert res.manifest["config"]["outcomes"]["purchase"] == "converted"


def test_outcomes_refuse_a_margin_reward() -> None:
    with pytest.raises(ValidationError, match="give no margin"):
        _config(reward="net_margin")
    assert DecisionOutcomes(click="c").columns() == {"click": "c"}
