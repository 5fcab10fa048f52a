"""The ``ecomrl`` command: one console script, one subcommand per pipeline stage.

Exit codes (documented in the README):
    0  success (for ``run``: the candidate was approved)
    1  unexpected failure (a bug or an environment problem; traceback with ``--debug``)
    2  user error: bad arguments, bad config, bad input (one line on stderr)
    3  ``run`` only: the pipeline finished and the candidate was rejected
    75 ``run`` only: another run holds the lock on the runs folder (try again later)
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from ecomrl.errors import user_error_types
from ecomrl.logging import configure_logging, emit_error, emit_failure

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USER_ERROR = 2
EXIT_REJECTED = 3

app = typer.Typer(
    name="ecomrl",
    help=(
        "Offline reinforcement learning from logged e-commerce data: simulate or read raw logs, "
        "build transitions (etl), train conservative agents (train), evaluate candidates "
        "off-policy (evaluate), write the approval report (report), or chain them (run)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Log one JSON object per line (for schedulers).")
    ] = False,
) -> None:
    _state["debug"] = debug
    configure_logging(level="debug" if debug else "info", json=log_json)


# Subcommands live in ecomrl/commands/<name>.py, each with ``register(app)``. Only commands that
# do something real are registered.
_COMMANDS = ("simulate", "etl", "import_steps", "train", "evaluate", "report", "run", "demo")
for _name in _COMMANDS:
    try:
        _module = importlib.import_module(f"ecomrl.commands.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"ecomrl.commands.{_name}":
            raise
        continue
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        result = app(args=args, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except SystemExit as exc:  # click's own exits (usage errors already printed)
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USER_ERROR
    except user_error_types() as exc:
        if debug:
            raise
        emit_error(str(exc))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        typer.echo("ecomrl: interrupted", err=True)
        return 130
    except Exception as exc:
        show = getattr(exc, "show", None)
        if callable(show) and hasattr(exc, "exit_code"):  # click/typer usage errors
            show()
            return EXIT_USER_ERROR
        if type(exc).__name__ == "Abort":
            return 130
        if debug:
            raise
        emit_failure(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        return EXIT_FAILURE
    return int(result) if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
