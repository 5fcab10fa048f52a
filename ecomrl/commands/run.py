"""``ecomrl run``: the nightly job (ETL for a day, train, evaluate, report, verdict)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from ecomrl.commands._options import Overrides
from ecomrl.config import load_config
from ecomrl.errors import ConfigError
from ecomrl.logging import emit_error, emit_result


def register(app: typer.Typer) -> None:
    """Add the ``run`` subcommand to ``app``."""

    @app.command("run")
    def run_command(
        date: Annotated[
            str,
            typer.Option("--date", help="The day to process, YYYY-MM-DD (decision date, UTC)."),
        ],
        config: Annotated[
            Path | None,
            typer.Option("--config", help="TOML config (see configs/nightly.toml)."),
        ] = None,
        input_root: Annotated[
            Path | None,
            typer.Option("--input", help="Raw logs root; overrides [run].input."),
        ] = None,
        runs_dir: Annotated[
            Path | None,
            typer.Option("--runs-dir", help="Where runs/D/ is written; overrides [run].runs_dir."),
        ] = None,
        overrides: Overrides = None,
    ) -> int:
        """Run the nightly job for one day and exit with the verdict.

        ETL of that day into the transition dataset, training of the candidate (and a behaviour
        cloning baseline) on older episodes, off-policy evaluation on the latest episodes against
        the production policy and the baselines, and the approval report. Everything lands in
        RUNS_DIR/DATE/ atomically, under a lock. Exit codes: 0 approved, 3 rejected, 2 bad
        input or config, 75 another run holds the lock on RUNS_DIR (try again later),
        1 failure.
        """
        from offline_rl._quiet import import_d3rlpy

        import_d3rlpy()  # first, so that d3rlpy's structlog setup is undone (--log-json)
        from ecomrl.pipeline import run_nightly
        from ecomrl.runs import EXIT_LOCKED, RunLockedError

        try:
            day = dt.date.fromisoformat(date)
        except ValueError as exc:
            raise ConfigError(f"--date {date!r}: expected YYYY-MM-DD") from exc
        cfg = load_config(config, overrides or ())
        updates: dict[str, Path] = {}
        if input_root is not None:
            updates["input"] = input_root
        if runs_dir is not None:
            updates["runs_dir"] = runs_dir
        if updates:
            cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update=updates)})
        try:
            outcome = run_nightly(cfg, day)
        except RunLockedError as exc:
            emit_error(str(exc))
            raise typer.Exit(EXIT_LOCKED) from exc
        emit_result(
            "run.result",
            f"{outcome.verdict.upper()}: {outcome.reason}\nreport: {outcome.report_html}",
            date=outcome.date.isoformat(),
            verdict=outcome.verdict,
            reason=outcome.reason,
            report=str(outcome.report_html),
            exit_code=outcome.exit_code,
        )
        return outcome.exit_code
