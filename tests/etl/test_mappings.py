"""The shipped column mappings load tiny files written from each source's documented schema."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from etl import EtlConfig, EtlError, run_etl
from etl.config import ColumnMapping, TableMapping
from etl.io import shipped_mapping

FIXTURES = Path(__file__).parent / "fixtures"


def _rows(result_transitions: pl.DataFrame) -> dict[str, dict[str, object]]:
    return {r["decision_id"]: r for r in result_transitions.iter_rows(named=True)}


def test_ga4_export(tmp_path: Path) -> None:
    res = run_etl(FIXTURES / "ga4", tmp_path / "out", EtlConfig(mapping_name="ga4"))
    assert res.counts["events"] == {"rows_in": 15, "used": 14, "quarantined": {},
                                    "dropped": {"duplicate_event_id": 1}}
    assert res.counts["orders"]["used"] == 2
    rows = _rows(res.transitions)
    assert set(rows) == {"ga4-d1", "ga4-d2", "ga4-d3"}
    d1, d2, d3 = rows["ga4-d1"], rows["ga4-d2"], rows["ga4-d3"]
    # the pseudo id logged in as cust-42 during the first session: one user, one episode
    assert d1["user_id"] == d3["user_id"] == "cust-42" and d2["user_id"] == "anon:9999.1111"
    assert d1["episode_id"] == d3["episode_id"] and (d1["step"], d3["step"]) == (0, 1)
    assert (d1["action"], d2["action"], d3["action"]) == (2, 0, 3)
    assert d1["margin"] == pytest.approx(46.0) and d1["discount_cost"] == pytest.approx(13.48)
    assert d1["reward"] == pytest.approx(46.0 - 13.48)
    assert d1["behaviour_propensity"] == 0.25 and d1["session_id"] == "1767607200"


def test_snowplow_atomic_events(tmp_path: Path) -> None:
    res = run_etl(FIXTURES / "snowplow", tmp_path / "out", EtlConfig(mapping_name="snowplow"))
    assert res.counts["events"]["dropped"] == {"duplicate_event_id": 1}
    assert res.counts["events"]["quarantined"] == {}
    assert res.counts["orders"] == {"rows_in": 2, "used": 2, "quarantined": {}, "dropped": {}}
    rows = _rows(res.transitions)
    assert rows["sp-d1"]["user_id"] == "shopper-7"
    assert rows["sp-d1"]["revenue"] == pytest.approx(35.0 * 2 + 4.5 * 3)
    assert rows["sp-d2"]["revenue"] == 0.0
    ts = res.transitions.sort("decision_ts")["decision_ts"][0]
    assert ts.isoformat() == "2026-01-05T09:00:00+00:00"


def test_retailrocket_events_csv(tmp_path: Path) -> None:
    cfg = EtlConfig(mapping_name="retailrocket")
    with pytest.raises(EtlError, match="no decision events in 18 rows: map the events"):
        run_etl(FIXTURES / "retailrocket", tmp_path / "out", cfg)
    cfg = EtlConfig(mapping_name="retailrocket", require_decisions=False)
    res = run_etl(FIXTURES / "retailrocket", tmp_path / "out", cfg)
    assert res.counts["events"] == {"rows_in": 18, "used": 18, "quarantined": {}, "dropped": {}}
    assert res.transitions.height == 0  # clickstream only: no platform decisions
    assert (tmp_path / "out" / "_manifest.json").is_file()


def test_without_the_mapping_the_files_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(EtlError, match="missing required column 'event_id'"):
        run_etl(FIXTURES / "retailrocket", tmp_path / "out")


def test_mapping_options_rename_cast_constant_and_time_unit(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    (root / "events" / "date=2026-01-05").mkdir(parents=True)
    pl.DataFrame({
        "id": [1, 2], "t_s": [1767607200, 1767607260], "kind": ["dec", "look"],
        "who": ["v1", "v1"], "dec": ["x1", None], "act": ["pct_5", None], "p": [0.5, None],
    }).write_csv(root / "events" / "date=2026-01-05" / "part-00000.csv")
    mapping = ColumnMapping(events=TableMapping(
        rename={"id": "event_id", "t_s": "event_ts", "kind": "event_type", "who": "user_id",
                "dec": "decision_id", "act": "action", "p": "propensity"},
        cast={"event_id": "String"}, constant={"session_id": "web"}, time_unit="s",
        event_type_map={"dec": "decision", "look": "page_view"},
    ))
    res = run_etl(root, tmp_path / "out", EtlConfig(mapping=mapping))
    row = res.transitions.row(0, named=True)
    assert row["decision_id"] == "x1" and row["session_id"] == "web" and row["action"] == 1
    assert row["decision_ts"].isoformat() == "2026-01-05T10:00:00+00:00"


@pytest.mark.parametrize("name", ["ga4", "snowplow", "retailrocket"])
def test_shipped_mappings_parse(name: str) -> None:
    assert shipped_mapping(name).name == name
