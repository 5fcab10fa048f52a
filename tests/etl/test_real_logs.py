"""Public logs shipped inside PyPI packages, through the shipped configs: CDNOW orders (real,
whitespace text, integer dates, totals) and the retentioneering clickstream (no decisions).
Both hold no decision of the platform: the honest end is exit 2 with every row accounted for.
Slices and their sources: tests/data/real_logs/README.md; the whole files:
benchmarks/real_logs.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from ecomrl.cli import main
from ecomrl.config import load_config
from etl import run_etl
from etl.io import discover, scan_table

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "real_logs"
CONFIGS = ROOT / "configs" / "mappings"


def _cdnow_lines() -> list[list[str]]:
    text = (DATA / "cdnow" / "orders" / "CDNOW_master_head200.txt").read_text()
    return [line.split() for line in text.splitlines()[1:] if line.strip()]


def _etl(raw: Path, config: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["etl", "--input", str(raw), "--out", str(out), "--config", str(config)])
    return code, capsys.readouterr().err


def test_cdnow_orders_are_read_accounted_and_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _etl(DATA / "cdnow", CONFIGS / "cdnow.toml", tmp_path / "out", capsys)
    assert code == 2
    assert "no decision events in 0 rows: map the events that record what the platform" in err
    assert "orders: 200 in = 200 used + 0 quarantined + 0 dropped" in err
    assert not (tmp_path / "out").exists()


def test_cdnow_mapping_reads_the_values_of_the_text_file() -> None:
    cfg = load_config(CONFIGS / "cdnow.toml").etl
    (file,) = discover(DATA / "cdnow")
    got = scan_table(file, cfg, continuous=False).collect()
    lines = _cdnow_lines()
    assert got.height == len(lines) == 200
    assert got["user_id"].to_list() == [f[0] for f in lines]
    assert got["order_ts"].dt.date().to_list() == [
        dt.datetime.strptime(f[1], "%Y%m%d").date() for f in lines
    ]
    assert got["quantity"].to_list() == [int(f[2]) for f in lines]
    # the unit price is derived from the total: quantity x unit price gives the total back
    totals = (got["quantity"] * got["unit_price"]).to_list()
    assert totals == pytest.approx([float(f[3]) for f in lines], abs=1e-9)
    # a customer's purchases on one day stay separate lines of one order
    assert got.select(pl.struct("order_id", "line_no").n_unique()).item() == 200
    assert got["order_id"][0] == f"{lines[0][0]}-{lines[0][1]}"


def test_cdnow_loads_as_history_when_allowed(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "cdnow.toml").etl.model_copy(update={"require_decisions": False})
    res = run_etl(DATA / "cdnow", tmp_path / "out", cfg)
    assert res.counts["orders"] == {"rows_in": 200, "used": 200, "quarantined": {}, "dropped": {}}
    assert res.transitions.height == 0


def test_retentioneering_clickstream_is_accounted_and_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = DATA / "retentioneering" / "events" / "ecom_users_0000_0009.csv"
    rows = path.read_text().splitlines()[1:]
    repeats = len(rows) - len(set(rows))  # verbatim re-sends, counted without the ETL
    assert (len(rows), repeats) == (512, 1)
    code, err = _etl(
        DATA / "retentioneering", CONFIGS / "retentioneering.toml", tmp_path / "out", capsys
    )
    assert code == 2
    assert "no decision events in 512 rows: map the events that record what the platform" in err
    assert "events: 512 in = 511 used + 0 quarantined + 1 dropped (duplicate_event_id 0.2%)" in err
    assert not (tmp_path / "out").exists()


def test_retentioneering_mapping_types_and_contexts(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "retentioneering.toml").etl.model_copy(
        update={"require_decisions": False}
    )
    res = run_etl(DATA / "retentioneering", tmp_path / "out", cfg)
    assert res.counts["events"]["used"] == 511
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["counts"]["events"]["quarantined"] == {}
    (file,) = discover(DATA / "retentioneering")
    got = scan_table(file, cfg, continuous=False).collect()
    src = pl.read_csv(file.path, infer_schema_length=0)
    assert got["event_ts"][0] == dt.datetime.fromisoformat(src["timestamp"][0] + "+00:00")
    assert set(got["device"]) <= set(cfg.context_columns["device"])
    assert set(got["channel"]) <= set(cfg.context_columns["channel"])
    assert (
        got["event_type"]
        .is_in(["page_view", "view_item", "add_to_cart", "begin_checkout", "purchase", "other"])
        .all()
    )
    assert (got["event_type"] == "purchase").sum() == (src["event"] == "purchase").sum()
