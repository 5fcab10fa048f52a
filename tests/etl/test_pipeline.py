"""The dataset on disk: determinism, nightly runs equal a backfill, buckets, atomic writes, CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest

from etl import EtlConfig, build_transitions, run_etl
from etl.schema import transition_schema
from tests.etl.synth import Logs, make_logs, write_raw


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = make_logs(30, 22, seed=5)
    # some dirt: duplicates across partitions and an invalid row
    events = pl.concat([logs.events, logs.events.slice(40, 5)]).with_columns(
        pl.when(pl.col("event_id") == "e0000100").then(pl.lit("teleport"))
        .otherwise(pl.col("event_type")).alias("event_type")
    )
    return write_raw(Logs(events, logs.orders), tmp_path_factory.mktemp("raw"))


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for sub in ("transitions", "quarantine")
        if (root / sub).exists()
        for p in sorted((root / sub).rglob("*.parquet"))
    }


def test_backfill_layout_schema_and_determinism(raw: Path, tmp_path: Path) -> None:
    res = run_etl(raw, tmp_path / "a")
    run_etl(raw, tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b and any(k.startswith("quarantine/date=") for k in a)
    assert all(k.endswith("/part-00000.parquet") for k in a)
    manifest = json.loads((tmp_path / "a" / "_manifest.json").read_text())
    n = len(manifest["feature_names"])
    assert manifest["schema_version"] == 1 and manifest["episode_mode"] == "promotion"
    assert manifest["action_space"]["labels"] == ["none", "pct_5", "pct_10", "free_shipping"]
    assert {i["path"] for i in manifest["inputs"]} == {
        p.relative_to(raw).as_posix() for p in raw.rglob("*.parquet")
    }
    assert all(len(i["sha256"]) == 64 for i in manifest["inputs"])
    back = pl.read_parquet(tmp_path / "a" / "transitions" / "**" / "*.parquet",
                           hive_partitioning=False)
    assert dict(back.schema) == transition_schema(n, continuous=False)
    assert back.sort("episode_id", "step").equals(res.transitions)
    assert back.select(pl.col("behaviour_propensity").is_not_null().all()).item()
    assert set(back["propensity_source"]) == {"logged"}


def test_nightly_days_in_any_order_equal_one_backfill(tmp_path: Path) -> None:
    logs = make_logs(25, 8, seed=7, max_return_days=6)
    events = pl.concat([logs.events, logs.events.slice(30, 4)])  # duplicates
    raw = write_raw(Logs(events, logs.orders), tmp_path / "raw")
    run_etl(raw, tmp_path / "full")
    days = sorted({p.name.removeprefix("date=") for t in ("events", "orders")
                   for p in (raw / t).glob("date=*")})
    random.Random(0).shuffle(days)
    cfg = EtlConfig(scaling_from=str(tmp_path / "full" / "_manifest.json"))
    for day in days:
        run_etl(raw, tmp_path / "nightly", cfg, date=day)
    assert _files(tmp_path / "nightly") == _files(tmp_path / "full")
    full = json.loads((tmp_path / "full" / "_manifest.json").read_text())
    nightly = json.loads((tmp_path / "nightly" / "_manifest.json").read_text())
    for key in ("counts", "counts_by_date", "inputs", "scaling", "date_range", "feature_names"):
        assert nightly[key] == full[key], key
    # rerunning a day gives the same bytes
    before = _files(tmp_path / "nightly")
    run_etl(raw, tmp_path / "nightly", cfg, date=days[0])
    assert _files(tmp_path / "nightly") == before


@pytest.mark.slow
def test_bucket_counts_give_identical_output() -> None:
    logs = make_logs(25, 15, seed=6)
    base = build_transitions(logs.events, logs.orders)
    for n in (2, 7, 64):
        other = build_transitions(logs.events, logs.orders, EtlConfig(n_buckets=n))
        assert other.transitions.equals(base.transitions), n
        assert other.quarantine.equals(base.quarantine), n
        assert other.manifest["counts"] == base.manifest["counts"], n
        assert other.manifest["scaling"] == base.manifest["scaling"], n


def test_bucketed_file_runs_equal_one_bucket(raw: Path, tmp_path: Path) -> None:
    run_etl(raw, tmp_path / "one")
    run_etl(raw, tmp_path / "five", EtlConfig(n_buckets=5))  # spilled to per-bucket files
    assert _files(tmp_path / "five") == _files(tmp_path / "one")
    one = json.loads((tmp_path / "one" / "_manifest.json").read_text())
    five = json.loads((tmp_path / "five" / "_manifest.json").read_text())
    assert five["counts_by_date"] == one["counts_by_date"]


def test_failed_run_leaves_previous_dataset(raw: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    run_etl(raw, out)
    before = _files(out)
    manifest = (out / "_manifest.json").read_bytes()
    import etl.pipeline as pipeline

    calls = {"n": 0}
    real = pipeline.write_parquet

    def dies(frame: pl.DataFrame, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("killed")
        real(frame, path)

    monkeypatch.setattr(pipeline, "write_parquet", dies)
    with pytest.raises(KeyboardInterrupt):
        run_etl(raw, out, EtlConfig(gamma=0.5))
    assert _files(out) == before and (out / "_manifest.json").read_bytes() == manifest
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_cli_prints_the_accounting(raw: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from ecomrl.cli import main

    code = main(["etl", "--input", str(raw), "--out", str(tmp_path / "cli"), "--buckets", "3",
                 "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "quarantined unknown_event_type: 1" in out
    assert "dropped duplicate_event_id: 5" in out
    assert main(["etl", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "input folder not found" in capsys.readouterr().err
    assert main(["etl", "--input", str(raw), "--out", str(tmp_path / "x"),
                 "--date", "yesterday"]) == 2
    assert main(["etl", "--input", str(raw), "--out", str(tmp_path / "x"),
                 "--workers", "0"]) == 2
    assert "--workers must be 'auto' or a whole number >= 1, got '0'" in capsys.readouterr().err


def test_accounting_frame_reconciles_with_the_counts() -> None:
    logs = make_logs(seed=3)
    result = build_transitions(logs.events, logs.orders)
    frame = result.accounting()
    for table in ("events", "orders"):
        rows = frame.filter(pl.col("table") == table)
        rows_in = rows.filter(pl.col("outcome") == "rows in")["rows"].sum()
        accounted = rows.filter(pl.col("outcome") != "rows in")["rows"].sum()
        assert rows_in == accounted == result.counts[table]["rows_in"]
