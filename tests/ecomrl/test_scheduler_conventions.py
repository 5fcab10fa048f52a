"""What a scheduler sees: JSON log lines, a distinct exit code for a held lock, reruns that
reproduce every file but timings.json, and no scratch folders of dead runs left behind."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import ecomrl.logging as ecomrl_logging
from ecomrl.cli import main
from ecomrl.pipeline import TIMINGS
from ecomrl.runs import EXIT_LOCKED, remove_stale_scratch, run_lock

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data_samples" / "promotion"
DAY = dt.date(2026, 2, 1)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``main`` binds logging to pytest's captured stderr and may switch JSON mode on."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    was_json = ecomrl_logging.json_enabled()
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    ecomrl_logging._mode["json"] = was_json


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def _config(folder: Path, runs: Path) -> Path:
    path = folder / "nightly.toml"
    path.write_text(
        f'[run]\ninput = "{SAMPLE}"\nruns_dir = "{runs}"\nbc_baseline = false\n'
        "eval_min_age_days = 14\n"
        "[train]\nn_steps = 150\ncheckpoint_every = 150\nonnx = false\n"
        "[evaluate.bootstrap]\nn_resamples = 200\n",
        encoding="utf-8",
    )
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ECOMRL_SKIP_BROWSER": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ecomrl", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False,
    )  # fmt: skip


def _json_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        record = json.loads(line)  # every line, not only most of them
        assert isinstance(record, dict), line
        records.append(record)
    return records


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("nightly")
    runs = folder / "runs"
    config = _config(folder, runs)
    # a process of its own, as a scheduler runs it: torch numbers the archives a process
    # writes (policy.pt's serialization_id), so two runs in one process differ there
    done = _cli("run", "--config", str(config), "--date", DAY.isoformat())
    assert done.returncode in (0, 3), done.stderr[-2000:]
    return runs, config


@pytest.mark.slow
def test_rerun_in_another_process_reproduces_every_file_but_the_timings(
    first_run: tuple[Path, Path],
) -> None:
    runs, config = first_run
    run_dir = runs / DAY.isoformat()
    before = _files(run_dir)
    dead = runs / f".{DAY}.partial-{_dead_pid()}"  # what a killed run leaves
    (dead / "candidate").mkdir(parents=True)
    alive = runs / f".2026-01-01.partial-{os.getpid()}"  # a live process's: not ours to remove
    alive.mkdir()

    done = _cli("--log-json", "run", "--config", str(config), "--date", DAY.isoformat())
    assert done.returncode in (0, 3), done.stderr[-2000:]
    records = _json_lines(done.stderr) + _json_lines(done.stdout)
    assert [r["event"] for r in records].count("run.result") == 1
    assert any(r.get("level") == "info" for r in records)  # the library's records, as JSON

    assert not dead.exists() and alive.is_dir()
    after = _files(run_dir)
    assert after.keys() == before.keys()
    assert {name for name in after if after[name] != before[name]} <= {TIMINGS}
    for name, content in after.items():  # the report names published paths only
        assert b".partial-" not in content, name
    report = (run_dir / "report" / "report.md").read_text()
    assert str(run_dir / "evaluation" / "ope.json") in report
    timings = json.loads((run_dir / TIMINGS).read_text())
    assert timings["etl_backfill"] is False and set(timings["seconds"]) >= {"etl_s", "train_s"}
    assert "timings_s" not in json.loads((run_dir / "run.json").read_text())


@pytest.mark.slow
def test_train_logs_one_json_object_per_line(first_run: tuple[Path, Path], tmp_path: Path) -> None:
    runs, _ = first_run
    done = _cli("--log-json", "train", "--data", str(runs / "dataset"),
                "--out", str(tmp_path / "policies"), "--steps", "20")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    logs = _json_lines(done.stderr)
    assert "trained" in {r["event"] for r in logs}  # logged after d3rlpy was imported
    (result,) = _json_lines(done.stdout)
    assert result["event"] == "train.result" and result["steps"] == 20
    assert Path(result["artifact"]).is_dir()


def test_a_held_lock_exits_75_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    config = _config(tmp_path, runs)
    args = ["run", "--config", str(config), "--date", DAY.isoformat()]
    with run_lock(runs):
        assert main(args) == EXIT_LOCKED == 75
        assert "another ecomrl run holds" in capsys.readouterr().err
        assert main(["--log-json", *args]) == EXIT_LOCKED
        (record,) = _json_lines(capsys.readouterr().err)
        assert record["event"] == "error" and "another ecomrl run holds" in record["message"]
    assert not (runs / DAY.isoformat()).exists()


def test_the_lock_exit_code_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    assert "| 75 |" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert main(["run", "--help"]) == 0
    assert "75" in capsys.readouterr().out


def test_leftovers_of_dead_runs_are_cleaned_and_a_lost_run_restored(tmp_path: Path) -> None:
    dead = _dead_pid()
    (tmp_path / f".2026-01-05.partial-{dead}" / "x").mkdir(parents=True)
    # killed between the two renames: 2026-01-06 is gone, its previous state is in .old
    (tmp_path / f".2026-01-06.old-{dead}").mkdir()
    (tmp_path / f".2026-01-06.old-{dead}" / "run.json").write_text("previous")
    (tmp_path / "2026-01-07").mkdir()
    (tmp_path / f".2026-01-07.old-{dead}").mkdir()
    (tmp_path / f".2026-01-08.partial-{os.getpid()}").mkdir()
    remove_stale_scratch(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".2026-01-08.partial-{os.getpid()}", "2026-01-06", "2026-01-07",
    ]  # fmt: skip
    assert (tmp_path / "2026-01-06" / "run.json").read_text() == "previous"
