"""Validation: every quarantine reason, column-level errors, the quarantine ceiling, and exact
row accounting."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from etl import EtlConfig, EtlError, build_transitions, run_etl
from etl.validate import EVENT_REASONS, ORDER_REASONS
from tests.etl.synth import Logs, make_logs, write_raw

LOOSE = EtlConfig(max_quarantine_share=1.0)
FUTURE = dt.datetime(2099, 1, 10, tzinfo=dt.UTC)

EVENT_CASES: dict[str, dict[str, Any]] = {
    "null_event_id": {"event_id": None},
    "null_timestamp": {"event_ts": None},
    "null_identity": {"user_id": None, "anonymous_id": None, "session_id": None},
    "unknown_event_type": {"event_type": "teleport"},
    "unknown_currency": {"currency": "XYZ", "price": 3.0},
    "negative_price": {"price": -1.0, "currency": "EUR"},
    "future_event": {"event_ts": FUTURE},
    "non_finite": {"price": float("nan"), "currency": "EUR"},
    "out_of_range": {"price": 1e300, "currency": "EUR"},
    "null_decision_id": {"decision_id": None},
    "bad_action": {"action": "pct_99"},
    "bad_propensity": {"propensity": 1.5},
}
ORDER_CASES: dict[str, dict[str, Any]] = {
    "null_order_id": {"order_id": None},
    "null_timestamp": {"order_ts": None},
    "null_identity": {"user_id": None, "anonymous_id": None, "session_id": None},
    "bad_quantity": {"quantity": 0},
    "bad_price": {"unit_price": -3.0},
    "unknown_status": {"status": "lost"},
    "unknown_currency": {"currency": "XYZ"},
    "reversal_without_parent": {"status": "returned", "parent_order_id": None},
    "future_event": {"order_ts": FUTURE},
    "non_finite": {"unit_price": float("inf")},
    "out_of_range": {"quantity": 10**9},
}


def _corrupt(frame: pl.DataFrame, row: int, changes: dict[str, Any]) -> pl.DataFrame:
    out = frame
    for col, value in changes.items():
        values = out[col].to_list()
        values[row] = value
        out = out.with_columns(pl.Series(col, values, dtype=out.schema[col]))
    return out


def _decision_row(logs: Logs) -> int:
    return int(logs.events["event_type"].eq("decision").arg_max())  # type: ignore[arg-type]


@pytest.mark.parametrize("reason", sorted(EVENT_CASES))
def test_each_event_reason(reason: str) -> None:
    logs = make_logs(5, 6, seed=2)
    row = _decision_row(logs)
    events = _corrupt(logs.events, row, EVENT_CASES[reason])
    res = build_transitions(events, logs.orders, LOOSE)
    q = res.quarantine
    assert q.height == 1
    assert q.row(0, named=True)["reason"] == reason
    assert q["source_table"][0] == "events" and q["row_number"][0] == row + 1
    assert q["column"][0] in EVENT_CASES[reason]  # the column the reason is about
    raw = json.loads(q["raw"][0])
    assert raw["event_type"] == events["event_type"][row]
    assert res.counts["events"]["quarantined"] == {reason: 1}


@pytest.mark.parametrize("reason", sorted(ORDER_CASES))
def test_each_order_reason(reason: str) -> None:
    logs = make_logs(5, 6, seed=2)
    orders = _corrupt(logs.orders, 0, ORDER_CASES[reason])
    res = build_transitions(logs.events, orders, LOOSE)
    assert res.quarantine["reason"].to_list() == [reason]
    assert res.quarantine["source_table"][0] == "orders"
    assert res.quarantine["column"][0] in ORDER_CASES[reason]
    assert res.counts["orders"]["quarantined"] == {reason: 1}


def test_reason_lists_are_all_tested() -> None:
    # the naive-timestamp reason is tested on CSV input below, unknown_action in
    # test_vocabulary.py
    assert set(EVENT_REASONS) == {*EVENT_CASES, "timestamp_without_timezone", "unknown_action"}
    assert set(ORDER_REASONS) == {*ORDER_CASES, "timestamp_without_timezone"}


def test_continuous_propensity_is_a_density() -> None:
    logs = make_logs(5, 6, seed=2, continuous=True)
    row = _decision_row(logs)
    ok = _corrupt(logs.events, row, {"propensity": 3.3})  # a density may exceed 1
    assert build_transitions(ok, logs.orders, LOOSE).quarantine.height == 0
    bad = _corrupt(logs.events, row, {"propensity": 0.0})
    assert build_transitions(bad, logs.orders, LOOSE).quarantine["reason"].to_list() == [
        "bad_propensity"
    ]
    out_of_bounds = _corrupt(logs.events, row, {"action": 0.9})
    assert build_transitions(out_of_bounds, logs.orders, LOOSE).quarantine["reason"].to_list() == [
        "bad_action"
    ]


def test_naive_timestamps_in_csv_are_quarantined(tmp_path: Path) -> None:
    logs = make_logs(5, 6, seed=2)
    root = write_raw(logs, tmp_path / "raw", fmt="csv")
    first = sorted((root / "events").rglob("*.csv"))[0]
    lines = first.read_text().splitlines()
    header = lines[1].split(",")
    # polars writes "2026-01-05T10:00:00.000000+0000"-like values; strip the offset of row 1
    fixed = [v[:-5] if v.endswith("+0000") and i == 1 else v for i, v in enumerate(header)]
    lines[1] = ",".join(fixed)
    first.write_text("\n".join(lines) + "\n")
    res = run_etl(root, tmp_path / "out", LOOSE)
    q = res.quarantine
    assert q["reason"].to_list() == ["timestamp_without_timezone"]
    assert q["row_number"][0] == 1 and q["source_file"][0].startswith("events/date=")
    # the rest of the CSV round-trips to the same transitions as the Parquet input
    clean = build_transitions(logs.events, logs.orders, LOOSE).transitions
    assert res.transitions.height == clean.height - 1


def test_missing_column_and_unparseable_type_name_file_and_column(tmp_path: Path) -> None:
    logs = make_logs(3, 4, seed=2)
    root = write_raw(logs, tmp_path / "raw", fmt="csv")
    path = sorted((root / "orders").rglob("*.csv"))[0]
    frame = pl.read_csv(path)
    frame.drop("quantity").write_csv(path)
    with pytest.raises(EtlError, match=r"orders/date=.*\.csv: missing required column 'quantity'"):
        run_etl(root, tmp_path / "out")
    frame.with_columns(pl.lit("lots").alias("unit_price")).write_csv(path)
    with pytest.raises(EtlError, match=r"\.csv: column 'unit_price': cannot parse 'lots'"):
        run_etl(root, tmp_path / "out")


def test_quarantine_ceiling_fails_loudly_and_writes_nothing(tmp_path: Path) -> None:
    logs = make_logs(5, 6, seed=2)
    bad = logs.events.with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(pl.lit("teleport"))
        .otherwise(pl.col("event_type")).alias("event_type")
    )
    root = write_raw(Logs(bad, logs.orders), tmp_path / "raw")
    with pytest.raises(EtlError, match="max_quarantine_share"):
        run_etl(root, tmp_path / "out", EtlConfig(max_quarantine_share=0.05))
    assert not (tmp_path / "out").exists()
    res = run_etl(root, tmp_path / "out", EtlConfig(max_quarantine_share=0.5))
    assert res.counts["events"]["quarantined"]["unknown_event_type"] == (bad.height + 4) // 5


def test_rows_reconcile_exactly_with_every_kind_of_dirt() -> None:
    logs = make_logs(20, 12, seed=4)
    ev = logs.events
    n_clean = ev.height
    dups = ev.head(7)  # verbatim re-sends
    late = ev.slice(10, 3).with_columns(
        (pl.col("event_ts") - pl.duration(days=5)).alias("event_ts"),
        (pl.col("event_id") + "-late"),
    )
    t0 = dt.datetime(2026, 1, 6, 3, tzinfo=dt.UTC)
    bot = pl.DataFrame(
        {
            "event_id": [f"bot{i}" for i in range(80)],
            "event_ts": [t0 + dt.timedelta(seconds=i) for i in range(80)],
            "ingest_ts": [t0 + dt.timedelta(seconds=i + 1) for i in range(80)],
            "anonymous_id": ["crawler"] * 80,
            "session_id": ["sbot"] * 80,
            "event_type": ["page_view"] * 80,
        }
    )
    invalid = ev.slice(20, 4).with_columns(pl.lit("teleport").alias("event_type"),
                                           (pl.col("event_id") + "-x"))
    events = pl.concat([ev, dups, late, bot, invalid], how="diagonal_relaxed")
    res = build_transitions(events, logs.orders, EtlConfig(max_quarantine_share=0.5))
    c = res.counts["events"]
    per_minute = EtlConfig().bots.max_events_per_minute
    # the crawler's session turns bot at its (per_minute + 1)-th event within the first minute
    bot_dropped = 80 - per_minute
    assert c["rows_in"] == events.height
    assert c["dropped"] == {"bot": bot_dropped, "duplicate_event_id": 7, "too_late": 3}
    assert c["quarantined"] == {"unknown_event_type": 4}
    assert c["used"] == n_clean + per_minute
    assert c["used"] + sum(c["quarantined"].values()) + sum(c["dropped"].values()) == c["rows_in"]
    o = res.counts["orders"]
    assert o == {"rows_in": logs.orders.height, "used": logs.orders.height, "quarantined": {},
                 "dropped": {}}
    # per date, too
    for day in res.manifest["counts_by_date"].values():
        for t in day.values():
            assert t["used"] + sum(t["quarantined"].values()) + sum(
                t["dropped"].values()) == t["rows_in"]
