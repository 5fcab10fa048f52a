"""Episodes: horizon cuts, churn (terminal) versus timeout, one-step episodes."""

from __future__ import annotations

import datetime as dt

import polars as pl

from etl import EtlConfig, EtlResult, build_transitions

T0 = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)


def _run(days_by_user: dict[str, list[float]], data_days: float,
         config: EtlConfig | None = None) -> pl.DataFrame:
    rows = []
    for user, days in days_by_user.items():
        for i, d in enumerate(days):
            rows.append({"event_id": f"{user}-{i}", "event_ts": T0 + dt.timedelta(days=d),
                         "user_id": user, "session_id": f"{user}-s{i}",
                         "event_type": "decision", "decision_id": f"{user}-d{i:02d}",
                         "action": "pct_5", "propensity": 0.2})
    events = pl.DataFrame(rows)
    orders = pl.DataFrame(schema={"order_id": pl.String, "order_ts": pl.Datetime("us", "UTC"),
                                  "user_id": pl.String, "quantity": pl.Int32,
                                  "unit_price": pl.Float64})
    res: EtlResult = build_transitions(events, orders, config,
                                       data_end=T0 + dt.timedelta(days=data_days))
    return res.transitions.sort("decision_id")


def test_horizon_of_ten_decisions_then_churn() -> None:
    tr = _run({"u1": [float(d) for d in range(12)]}, data_days=40)
    assert tr["step"].to_list() == [*range(10), 0, 1]
    assert tr["episode_id"].n_unique() == 2
    assert tr["timeout"].to_list() == [False] * 9 + [True, False, False]  # cut by the horizon
    assert tr["terminal"].to_list() == [False] * 11 + [True]  # then churned
    assert not (tr["terminal"] & tr["timeout"]).any()


def test_horizon_of_thirty_days() -> None:
    tr = _run({"u1": [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]}, data_days=45)
    assert tr["step"].to_list() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    assert tr["timeout"][7] and not tr["terminal"][7]
    # the last decision: data ends 9 days later (< churn_days): timeout, not terminal
    assert tr["timeout"][9] and not tr["terminal"][9]


def test_churn_gap_ends_the_episode_as_terminal() -> None:
    tr = _run({"u1": [0, 1, 20, 21]}, data_days=50)
    assert tr["step"].to_list() == [0, 1, 0, 1]
    assert tr["terminal"].to_list() == [False, True, False, True]
    assert not tr["timeout"].any()
    assert tr["episode_id"][0] != tr["episode_id"][2]


def test_one_step_episodes_are_terminal() -> None:
    tr = _run({"u1": [0, 1, 2], "u2": [0.5]}, data_days=5,
              config=EtlConfig(episode_mode="one_step"))
    assert tr["episode_id"].to_list() == tr["decision_id"].to_list()
    assert tr["step"].to_list() == [0] * 4
    assert tr["terminal"].all() and not tr["timeout"].any()


def test_episode_ids_are_deterministic_from_user_and_start() -> None:
    tr = _run({"u1": [0, 1]}, data_days=30)
    start_us = int((T0 - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds() * 1_000_000)
    assert tr["episode_id"].to_list() == [f"u1/{start_us}"] * 2
