"""The ``ecomrl`` command: help, exit codes, one-line user errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecomrl.cli import EXIT_OK, EXIT_USER_ERROR, app, main


def test_help_lists_the_registered_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "Usage" in out
    names = {command.name for command in app.registered_commands}
    for name in names:
        assert name is not None and name in out


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in app.registered_commands:
        assert command.name is not None
        assert main([command.name, "--help"]) == EXIT_OK
        assert "--config" in capsys.readouterr().out or command.name == "demo"


def test_the_pipeline_stages_are_all_registered() -> None:
    names = {command.name for command in app.registered_commands}
    assert {"simulate", "etl", "train", "evaluate", "report", "run", "demo"} <= names


def test_unknown_command_is_a_user_error() -> None:
    assert main(["no-such-stage"]) == EXIT_USER_ERROR


def test_bad_config_gives_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[simulator]\nseed = "x"\n')
    code = main(["simulate", "--config", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USER_ERROR
    assert len(err) == 1 and "simulator.seed" in err[0]
