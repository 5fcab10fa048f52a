"""The action vocabulary (issue 21.3): discovered from the decision events when the config gives
no ``action_labels`` and the scenario's default does not apply, stored in the manifest, reused by
later nightly runs (a new label is quarantined as ``unknown_action``, never re-indexed)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from ecomrl.cli import main
from etl import EtlConfig, EtlError, build_transitions, run_etl
from etl.schema import PROMOTION_TIERS
from tests.etl.synth import START, make_logs, write_raw

SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"
COLOURS = {"none": "red", "pct_5": "blue", "pct_10": "green", "free_shipping": "red"}


def _manifest(out: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((out / "_manifest.json").read_text())
    return data


def test_the_recommendation_sample_runs_without_action_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = SAMPLES / "recommendation"
    if not (root / "events").is_dir():
        pytest.skip("no bundled sample")
    code = main(["etl", "--input", str(root), "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    labels = [f"cat_{i:02d}" for i in range(8)]
    assert _manifest(tmp_path / "out")["action_space"] == {
        "type": "discrete",
        "n": 8,
        "labels": labels,
    }
    # the same action indices as the scenario's own default labels
    found = pl.read_parquet(tmp_path / "out" / "transitions" / "**" / "*.parquet")
    explicit = run_etl(root, tmp_path / "rec", EtlConfig(scenario="recommendation"))
    by_id = found.select("decision_id", "action").sort("decision_id")
    assert by_id.equals(explicit.transitions.select("decision_id", "action").sort("decision_id"))


def test_the_scenario_default_keeps_its_order_when_the_logs_use_it() -> None:
    logs = make_logs(10, 8, seed=1)
    events = logs.events.with_columns(
        pl.when(pl.col("action") == "free_shipping")
        .then(pl.lit("pct_10"))
        .otherwise(pl.col("action"))
        .alias("action")
    )
    res = build_transitions(events, logs.orders)
    assert res.manifest["action_space"]["labels"] == list(PROMOTION_TIERS)  # not sorted


def _coloured(seed: int = 3) -> tuple[pl.DataFrame, pl.DataFrame]:
    logs = make_logs(30, 20, seed=seed)
    events = logs.events.with_columns(pl.col("action").replace(COLOURS))
    return events, logs.orders


def test_a_discovered_vocabulary_is_stored_and_reused_by_nightly_runs(tmp_path: Path) -> None:
    events, orders = _coloured()
    late = START + dt.timedelta(days=16)
    day = late.date()
    new_label = (
        (pl.col("event_type") == "decision")
        & (pl.col("event_ts").dt.date() == day)
        & (pl.col("action") == "red")
    )
    violet = int(events.select(new_label.sum()).item())
    assert violet > 0
    events = events.with_columns(
        pl.when(new_label).then(pl.lit("violet")).otherwise(pl.col("action")).alias("action")
    )
    full = write_raw(type(make_logs(1, 1))(events, orders), tmp_path / "raw")
    early = tmp_path / "early"
    for folder in full.glob("*/date=*"):
        if dt.date.fromisoformat(folder.name.removeprefix("date=")) < day:
            shutil.copytree(folder, early / folder.relative_to(full))
    out = tmp_path / "ds"
    cfg = EtlConfig(max_quarantine_share=1.0)
    first = run_etl(early, out, cfg)
    assert first.manifest["action_space"]["labels"] == ["blue", "green", "red"]
    assert first.counts["events"]["quarantined"] == {}
    # a later night sees a new label: quarantined, the action space kept
    night = run_etl(full, out, cfg, date=day)
    assert night.manifest["action_space"]["labels"] == ["blue", "green", "red"]
    assert night.counts["events"]["quarantined"] == {"unknown_action": violet}
    q = night.quarantine
    assert set(q["reason"]) == {"unknown_action"} and set(q["column"]) == {"action"}
    assert (night.transitions["action"] <= 2).all()
    # a backfill of the same logs with no stored vocabulary discovers all four
    again = run_etl(full, tmp_path / "fresh")
    assert again.manifest["action_space"]["labels"] == ["blue", "green", "red", "violet"]


def test_config_labels_cannot_re_index_a_stored_vocabulary(tmp_path: Path) -> None:
    events, orders = _coloured()
    raw = write_raw(type(make_logs(1, 1))(events, orders), tmp_path / "raw")
    run_etl(raw, tmp_path / "ds")
    day = (START + dt.timedelta(days=5)).date()
    cfg = EtlConfig(action_labels=["red", "green", "blue"])
    with pytest.raises(EtlError, match=r"manifest has action labels \['blue', 'green', 'red'\]"):
        run_etl(raw, tmp_path / "ds", cfg, date=day)


def test_the_bad_action_message_names_the_labels_expected_and_found() -> None:
    logs = make_logs(10, 8, seed=1)
    cfg = EtlConfig(action_labels=["none", "pct_5"])
    with pytest.raises(EtlError) as err:
        build_transitions(logs.events, logs.orders, cfg)
    text = str(err.value)
    assert "bad_action" in text
    assert "actions expected: ['none', 'pct_5']" in text
    assert "'pct_10': " in text and "'free_shipping': " in text
