"""``ecomrl evaluate --data`` on the wrong input: exit 2 with the file named, never a traceback."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ecomrl.cli import EXIT_USER_ERROR, main

SAMPLE = Path(__file__).resolve().parents[2] / "data_samples" / "promotion"


def _evaluate(data: Path, tmp_path: Path) -> int:
    return main(["evaluate", "--data", str(data), "--policy", "rule:uniform",
                 "--out", str(tmp_path / "ope")])


def test_raw_logs_are_refused_with_the_command_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _evaluate(SAMPLE, tmp_path) == EXIT_USER_ERROR
    assert "holds raw logs (events/, orders/), not transitions: run `ecomrl etl" in (
        capsys.readouterr().err
    )


def test_unreadable_or_foreign_parquet_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 not really parquet PAR1")
    assert _evaluate(bad, tmp_path) == EXIT_USER_ERROR
    assert f"{bad}: cannot read it as Parquet" in capsys.readouterr().err
    other = tmp_path / "other.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(other)
    assert _evaluate(other, tmp_path) == EXIT_USER_ERROR
    assert "not transitions, the columns" in capsys.readouterr().err
