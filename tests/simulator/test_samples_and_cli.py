"""The bundled samples regenerate byte-for-byte; the ``ecomrl simulate`` command works."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ecomrl.cli import main
from simulator import SAMPLE_CONFIGS, read_raw_logs, simulate, write_raw_logs

SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.mark.parametrize("name", ["recommendation", "promotion"])
def test_sample_regenerates_byte_for_byte(name: str, tmp_path: Path) -> None:
    write_raw_logs(simulate(SAMPLE_CONFIGS[name]), tmp_path / name)
    fresh, shipped = _files(tmp_path / name), _files(SAMPLES / name)
    assert sorted(fresh) == sorted(shipped)
    assert all(fresh[k] == shipped[k] for k in fresh)


def test_samples_are_small_and_readable() -> None:
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total < 5_500_000
    for name in SAMPLE_CONFIGS:
        logs = read_raw_logs(SAMPLES / name)
        assert 10_000 < logs.events.height < 100_000
        assert logs.truth.height > 1000


def test_write_is_atomic_and_partitioned_by_arrival(tmp_path: Path) -> None:
    from simulator import DirtConfig, SimulatorConfig

    logs = simulate(SimulatorConfig(n_users=80, seed=4, dirt=DirtConfig(late_events=True)))
    root = write_raw_logs(logs, tmp_path / "raw")
    write_raw_logs(logs, root)  # replacing an existing folder works
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    for part in (root / "events").iterdir():
        day = part.name.removeprefix("date=")
        df = pl.read_parquet(part / "part-00000.parquet")
        assert (df["ingest_ts"].dt.date().cast(pl.String) == day).all()
    back = read_raw_logs(root)
    assert back.events.sort("event_id").equals(logs.events.sort("event_id"))
    assert back.orders.sort("order_id", "line_no").equals(logs.orders.sort("order_id", "line_no"))


def test_cli_simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "raw"
    rc = main(["simulate", "--n-users", "60", "--seed", "3", "--days", "10", "--dirt",
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "conversion" in text and "decision" in text
    assert (out / "events").is_dir() and (out / "orders").is_dir()
    assert (out / "_truth.parquet").is_file()
    cfg = tmp_path / "sim.toml"
    cfg.write_text('[simulator]\nscenario = "recommendation"\nn_users = 30\ndays = 5\n')
    assert main(["simulate", "--config", str(cfg), "--no-propensity"]) == 0
    assert "recommendation" in capsys.readouterr().out
    assert main(["simulate", "--scenario", "auction"]) == 2
    assert "scenario" in capsys.readouterr().err
    assert main(["simulate", "--n-users", "0"]) == 2
