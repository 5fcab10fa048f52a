"""``ecomrl train``: trains, prints the artifact, resumes; user mistakes exit 2 in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecomrl.cli import EXIT_OK, EXIT_USER_ERROR, main
from offline_rl.artifacts import load_policy


def _toml(tmp_path: Path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        "[train]\nlog_every = 10\ncheckpoint_every = 20\n"
        "[train.discrete_bc]\nhidden_units = [16]\nbatch_size = 32\n"
    )
    return path


@pytest.mark.slow
def test_train_command_trains_and_resumes(
    tmp_path: Path, discrete_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", str(discrete_dir), "--out", str(tmp_path / "out")]
    args += ["--agent", "discrete_bc", "--config", str(_toml(tmp_path)), "--device", "auto"]
    assert main([*args, "--steps", "30"]) == EXIT_OK
    out = capsys.readouterr().out
    first_line, rest = out.split("\n", 1)
    artifact = Path(first_line.removeprefix("policy artifact: "))
    assert artifact == tmp_path / "out" / "discrete_bc"
    summary = json.loads(rest)
    assert summary["steps"] == 30 and "loss" in summary["final_losses"]
    assert load_policy(artifact).config["agent_config"]["hidden_units"] == [16]

    assert main([*args, "--steps", "50", "--resume"]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert summary["resumed_from"] == 30 and summary["steps"] == 50


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--agent", "dqn"], "agent"),
        (["--agent", "cql"], "continuous"),
        (["--data", "/nonexistent/etl"], "not found"),
    ],
)
def test_user_mistakes_are_one_line_errors(
    tmp_path: Path,
    discrete_dir: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needle: str,
) -> None:
    args = ["train", "--data", str(discrete_dir), "--out", str(tmp_path), "--steps", "5", *extra]
    assert main(args) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
