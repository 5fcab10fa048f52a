"""Structured logging for the CLI and the nightly job (structlog, as d3rlpy does).

Library code only calls ``structlog.get_logger(__name__)``; this module decides where the records
go: human-readable lines on stderr by default, one JSON object per line with ``json=True`` (what a
scheduler's log collector wants). In JSON mode the standard library's records (and Python
warnings) are rendered as JSON objects too, and a command's result on stdout is one JSON object
per line (:func:`emit_result`), so that every line a command writes parses as JSON.

d3rlpy calls ``structlog.configure`` when it is imported; ``offline_rl._quiet.import_d3rlpy``
puts the configuration made here back afterwards.
"""

from __future__ import annotations

import json as json_module
import logging
import sys
from typing import Any

import structlog
import typer

_mode = {"json": False}


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(file=sys.stderr)


def json_enabled() -> bool:
    """Whether the last :func:`configure_logging` asked for JSON lines."""
    return _mode["json"]


def _stdlib_handler(json: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=[
                    structlog.stdlib.add_log_level,
                    structlog.stdlib.add_logger_name,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                ],
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(),
                ],
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def configure_logging(*, level: str = "info", json: bool = False) -> None:
    """Route structlog and stdlib logging to stderr at ``level``."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    _mode["json"] = json
    logging.basicConfig(level=numeric, handlers=[_stdlib_handler(json)], force=True)
    logging.captureWarnings(json)  # a warning printed as is would not be a JSON line
    tail: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if json
        else [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Look sys.stderr up when a logger is made, not now: a caller (pytest's capture, a
        # notebook) may swap it after configuration.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def emit_result(event: str, text: str, **fields: Any) -> None:
    """Print a command's result on stdout: ``text`` for people, or in JSON mode one JSON object
    ``{"event": event, **fields}`` on one line (paths and dates as strings)."""
    if json_enabled():
        typer.echo(json_module.dumps({"event": event, **fields}, default=str, sort_keys=True))
    else:
        typer.echo(text)


def emit_error(message: str) -> None:
    """Print a user-facing error on stderr: ``ecomrl: error: message``, or in JSON mode one JSON
    object ``{"event": "error", "level": "error", "message": ...}``."""
    _emit_problem("error", "error", message)


def emit_failure(message: str) -> None:
    """Print an unexpected failure on stderr: ``ecomrl: failed: message``, or in JSON mode one
    JSON object ``{"event": "failed", "level": "critical", "message": ...}``."""
    _emit_problem("failed", "critical", message)


def _emit_problem(event: str, level: str, message: str) -> None:
    if json_enabled():
        record = {"event": event, "level": level, "message": message}
        typer.echo(json_module.dumps(record, sort_keys=True), err=True)
    else:
        typer.echo(f"ecomrl: {event}: {message}", err=True)
