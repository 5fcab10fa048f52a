"""Decisions from impression events (``[etl.decisions]``): a GA4 export whose platform choices
are the promotions it shows (``view_promotion`` with ``promotion_id``), no decision events, no
propensities."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from etl import EtlConfig, run_etl
from etl.io import resolve_mapping

HEADER = (
    "event_timestamp,event_name,user_pseudo_id,user_id,batch_event_index,ga_session_id,"
    "device_category,traffic_source_medium,promotion_id,item_id,price,currency,"
    "transaction_id"
)
US = 1_000_000
S1, S2, S3 = 1767607200, 1767625200, 1767690000  # session starts (2026-01-05/06, UTC)
EVENTS = [
    # pseudo id, session, seconds into it, event, promotion, item, price, transaction
    ("1234.5678", S1, 0, "session_start", "", "", "", ""),
    ("1234.5678", S1, 1, "view_promotion", "summer_10", "", "", ""),
    ("1234.5678", S1, 20, "view_item_list", "", "", "", ""),
    ("1234.5678", S1, 40, "select_promotion", "summer_10", "", "", ""),
    ("1234.5678", S1, 90, "purchase", "", "", "", "T-1"),
    ("9999.1111", S2, 0, "session_start", "", "", "", ""),
    ("9999.1111", S2, 1, "view_promotion", "free_ship", "", "", ""),
    ("9999.1111", S2, 30, "view_item", "", "SKU_1", "59.9", ""),
    ("1234.5678", S3, 0, "session_start", "", "", "", ""),
    ("1234.5678", S3, 1, "view_promotion", "free_ship", "", "", ""),
]
ORDERS = (
    "transaction_id,item_index,event_timestamp,user_pseudo_id,ga_session_id,item_id,"
    "quantity,price,currency,item_discount,item_margin,event_name\n"
    f"T-1,1,{(S1 + 90) * US},1234.5678,{S1},SKU_1,2,59.9,EUR,5.0,40.0,purchase\n"
)


def write_ga4(root: Path) -> None:
    """GA4 BigQuery export rows (flattened) as CSV, one partition per day."""
    by_day: dict[str, list[str]] = {}
    for i, (pid, sess, sec, name, promo, item, price, tx) in enumerate(EVENTS):
        day = "2026-01-05" if sess < S3 else "2026-01-06"
        currency = "EUR" if price or tx else ""
        by_day.setdefault(day, []).append(
            f"{(sess + sec) * US},{name},{pid},,{i},{sess},mobile,organic,{promo},{item},"
            f"{price},{currency},{tx}"
        )
    for day, rows in by_day.items():
        folder = root / "events" / f"date={day}"
        folder.mkdir(parents=True)
        (folder / "part-00000.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    folder = root / "orders" / "date=2026-01-05"
    folder.mkdir(parents=True)
    (folder / "part-00000.csv").write_text(ORDERS)


def _config() -> EtlConfig:
    return EtlConfig.model_validate(
        {
            "mapping_name": "ga4",
            "decisions": {"event_type": "view_promotion", "action_column": "promotion_id"},
        }
    )


def test_view_promotion_events_are_the_decisions(tmp_path: Path) -> None:
    write_ga4(tmp_path / "raw")
    res = run_etl(tmp_path / "raw", tmp_path / "out", _config(), as_of="2026-03-01")
    trans = res.transitions.sort("decision_ts")
    assert trans.height == 3  # one per view_promotion; view_item_list stays an impression
    # discovered vocabulary, sorted: free_ship = 0, summer_10 = 1
    assert res.manifest["action_space"]["labels"] == ["free_ship", "summer_10"]
    assert trans["action"].to_list() == [1, 0, 0]
    # the decision id is GA4's event id (pseudo id | timestamp | name | batch index)
    assert trans["decision_id"][0] == f"1234.5678|{(S1 + 1) * US}|view_promotion|1"
    # no propensities logged: left for the behaviour model, said per row
    assert trans["propensity_source"].to_list() == ["missing"] * 3
    assert trans["behaviour_propensity"].null_count() == 3
    # the order of the first session is attributed to its promotion (net margin reward):
    # margin 40 - discount 5
    assert trans["reward"].to_list() == pytest.approx([35.0, 0.0, 0.0])
    assert trans["revenue"][0] == pytest.approx(2 * 59.9 - 5.0)
    assert res.counts["events"]["quarantined"] == {}
    # one user over two days: the same episode
    assert trans["episode_id"][0] == trans["episode_id"][2]


def test_decision_mapping_leaves_the_shipped_mapping_alone() -> None:
    mapping = resolve_mapping(_config())
    assert mapping.events.event_type_map["view_promotion"] == "decision"
    assert mapping.events.event_type_map["view_item_list"] == "impression"
    assert mapping.events.rename["promotion_id"] == "action"
    plain = resolve_mapping(EtlConfig(mapping_name="ga4"))
    assert plain.events.event_type_map["view_promotion"] == "impression"


def test_recommendation_lists_as_decisions(tmp_path: Path) -> None:
    """view_item_list for recommendations: the list's id is the action; decision ids from a
    column of the source."""
    write_ga4(tmp_path / "raw")
    for f in (tmp_path / "raw" / "events").rglob("*.csv"):
        frame = pl.read_csv(f, infer_schema_length=0)
        frame = frame.with_columns(
            pl.when(pl.col("event_name") == "view_item_list")
            .then(pl.lit("cat_03"))
            .alias("item_list_id"),
            pl.when(pl.col("event_name") == "view_item_list")
            .then(pl.lit("list-1"))
            .alias("list_view_id"),
        )
        frame.write_csv(f)
    cfg = EtlConfig.model_validate(
        {
            "mapping_name": "ga4",
            "scenario": "recommendation",
            "decisions": {
                "event_type": "view_item_list",
                "action_column": "item_list_id",
                "decision_id_column": "list_view_id",
            },
        }
    )
    res = run_etl(tmp_path / "raw", tmp_path / "out", cfg, as_of="2026-03-01")
    assert res.transitions["decision_id"].to_list() == ["list-1"]
    assert res.transitions["action"].to_list() == [3]  # cat_03 of the default labels
