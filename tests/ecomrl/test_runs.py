"""Run folders: the lock excludes a second run; publication is all-or-nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecomrl.runs import RunLockedError, run_lock, staged_directory


def test_second_lock_on_the_same_runs_dir_fails(tmp_path: Path) -> None:
    with (
        run_lock(tmp_path),
        pytest.raises(RunLockedError, match="another ecomrl run"),
        run_lock(tmp_path),
    ):
        pass
    with run_lock(tmp_path):  # released after the block
        pass


def test_failed_stage_leaves_the_previous_run_untouched(tmp_path: Path) -> None:
    final = tmp_path / "2026-01-05"
    with staged_directory(final) as scratch:
        (scratch / "report.json").write_text("good")
    with pytest.raises(RuntimeError), staged_directory(final) as scratch:
        (scratch / "report.json").write_text("half")
        raise RuntimeError("killed midway")
    assert (final / "report.json").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-01-05"]


def test_successful_rerun_replaces_the_whole_folder(tmp_path: Path) -> None:
    final = tmp_path / "d"
    with staged_directory(final) as scratch:
        (scratch / "a").write_text("1")
        (scratch / "stale").write_text("x")
    with staged_directory(final) as scratch:
        (scratch / "a").write_text("2")
    assert (final / "a").read_text() == "2"
    assert not (final / "stale").exists()
