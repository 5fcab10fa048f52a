"""Fixtures of the report tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo ``ecomrl.cli.main``'s logging setup after each test.

    ``configure_logging`` binds structlog's printer (and the root handler) to the ``sys.stderr``
    of the moment, which under pytest is a capture file closed after the test; later tests in
    the same worker would then fail with "I/O operation on closed file".
    """
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
