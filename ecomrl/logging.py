"""Structured logging for the CLI and the nightly job (structlog, as d3rlpy does).

Library code only calls ``structlog.get_logger(__name__)``; this module decides where the records
go: human-readable lines on stderr by default, one JSON object per line with ``json=True`` (what a
scheduler's log collector wants).
"""

from __future__ import annotations

import logging
import sys

import structlog


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(*, level: str = "info", json: bool = False) -> None:
    """Route structlog and stdlib logging to stderr at ``level``."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s", force=True)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Look sys.stderr up when a logger is made, not now: a caller (pytest's capture, a
        # notebook) may swap it after configuration.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
