"""Cleaning: identity stitching, sessions by inactivity gap (across midnight), duplicates."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from etl import EtlConfig, ObservationBuilder, build_transitions

T0 = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)


def _events(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {"event_id": pl.String, "event_ts": pl.Datetime("us", "UTC"), "user_id": pl.String,
              "anonymous_id": pl.String, "session_id": pl.String, "event_type": pl.String,
              "decision_id": pl.String, "action": pl.String, "propensity": pl.Float64}
    full = [{k: r.get(k) for k in schema} for r in rows]
    for i, r in enumerate(full):
        r["event_id"] = r["event_id"] or f"e{i:04d}"
    return pl.DataFrame(full, schema=schema)


def _no_orders() -> pl.DataFrame:
    return pl.DataFrame(schema={"order_id": pl.String, "line_no": pl.Int32,
                                "order_ts": pl.Datetime("us", "UTC"), "user_id": pl.String,
                                "anonymous_id": pl.String, "session_id": pl.String,
                                "quantity": pl.Int32, "unit_price": pl.Float64})


def _at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def _dec(minutes: float, dec: str, **kw: Any) -> dict[str, Any]:
    return {"event_ts": _at(minutes), "event_type": "decision", "decision_id": dec,
            "action": "none", "propensity": 0.4, **kw}


def test_identity_stitching_and_as_of_identity() -> None:
    day = 24 * 60
    rows = [
        # device a1: anonymous for two sessions, logs in as u1 in the third
        _dec(0, "d1", anonymous_id="a1", session_id="s1"),
        {"event_ts": _at(1), "event_type": "view_item", "anonymous_id": "a1", "session_id": "s1"},
        {"event_ts": _at(2), "event_type": "view_item", "anonymous_id": "a1", "session_id": "s1"},
        _dec(day, "d2", anonymous_id="a1", session_id="s2"),
        {"event_ts": _at(day + 1), "event_type": "view_item", "anonymous_id": "a1",
         "session_id": "s2"},
        _dec(2 * day, "d3", anonymous_id="a1", session_id="s3"),
        {"event_ts": _at(2 * day + 1), "event_type": "page_view", "anonymous_id": "a1",
         "user_id": "u1", "session_id": "s3"},  # the login
        _dec(3 * day, "d4", anonymous_id="a1", session_id="s4"),  # anonymous again (cookie)
        _dec(4 * day, "d5", user_id="u1", anonymous_id="a2", session_id="s5"),  # other device
        # device b1 never logs in
        _dec(0, "d6", anonymous_id="b1", session_id="t1"),
        _dec(day, "d7", anonymous_id="b1", session_id="t2"),
    ]
    res = build_transitions(_events(rows), _no_orders())
    tr = res.transitions.sort("decision_ts", "decision_id")
    users = dict(zip(tr["decision_id"], tr["user_id"], strict=True))
    assert {users[d] for d in ("d1", "d2", "d3", "d4", "d5")} == {"u1"}
    assert users["d6"] == users["d7"] == "anon:b1"
    episodes = dict(zip(tr["decision_id"], tr["episode_id"], strict=True))
    assert len({episodes[d] for d in ("d1", "d2", "d3", "d4", "d5")}) == 1
    steps = dict(zip(tr["decision_id"], tr["step"], strict=True))
    assert [steps[d] for d in ("d1", "d2", "d3", "d4", "d5")] == [0, 1, 2, 3, 4]

    names = ObservationBuilder.from_manifest(res.manifest).feature_names
    builder = ObservationBuilder.from_manifest(res.manifest)
    raw = tr["observation"].to_numpy() * builder.scaling.std + builder.scaling.mean
    n_events = dict(zip(tr["decision_id"], raw[:, names.index("n_events")].round(3), strict=True))
    # as of d3 the device was not linked yet: its anonymous history (5 rows) counts for it
    assert n_events["d3"] == 5
    # d4 (after the login): the device's rows + the login row, under u1
    assert n_events["d4"] == 7
    # d5 on another device of u1: everything of u1 known by then
    assert n_events["d5"] == 8
    assert n_events["d6"] == 0 and n_events["d7"] == 1


def test_sessions_by_inactivity_gap_stay_whole_across_midnight() -> None:
    late = dt.datetime(2026, 1, 5, 23, 50, tzinfo=dt.UTC)

    def at(minutes: float) -> dt.datetime:
        return late + dt.timedelta(minutes=minutes)

    rows = [
        {"event_ts": at(0), "event_type": "decision", "decision_id": "r1", "action": "cat_01",
         "propensity": 0.1, "user_id": "u1"},
        {"event_ts": at(5), "event_type": "page_view", "user_id": "u1"},
        {"event_ts": at(25), "event_type": "decision", "decision_id": "r2", "action": "cat_02",
         "propensity": 0.1, "user_id": "u1"},  # 00:15 next day, 20 min gap: same session
        {"event_ts": at(26), "event_type": "click", "user_id": "u1"},
        {"event_ts": at(60), "event_type": "decision", "decision_id": "r3", "action": "cat_03",
         "propensity": 0.1, "user_id": "u1"},  # 34 min gap: new session
    ]
    cfg = EtlConfig(scenario="recommendation")
    res = build_transitions(_events(rows), _no_orders(), cfg,
                            data_end=late + dt.timedelta(days=2))
    tr = res.transitions.sort("decision_ts")
    s = tr["session_id"].to_list()
    assert s[0] == s[1] != s[2]
    assert tr["episode_id"][0] == tr["episode_id"][1] != tr["episode_id"][2]
    assert tr["step"].to_list() == [0, 1, 0]
    assert tr["terminal"].to_list() == [False, True, True]
    weights = cfg.reward_weights
    assert tr["reward"].to_list() == [0.0, weights.click, 0.0]
    # each day's partition holds its own decisions; the session spans both
    assert tr["decision_ts"].dt.date().n_unique() == 2


def test_duplicates_are_dropped_and_counted_once() -> None:
    rows = [_dec(0, "d1", user_id="u1", session_id="s1"),
            {"event_ts": _at(1), "event_type": "view_item", "user_id": "u1", "session_id": "s1"}]
    ev = _events(rows)
    doubled = pl.concat([ev, ev, ev.tail(1)])
    res = build_transitions(doubled, _no_orders(), EtlConfig(max_drop_share=1.0))  # 3 of 5
    assert res.counts["events"]["dropped"] == {"duplicate_event_id": 3}
    single = build_transitions(ev, _no_orders())
    np.testing.assert_array_equal(
        res.transitions["observation"].to_numpy(), single.transitions["observation"].to_numpy()
    )
