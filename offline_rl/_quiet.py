"""Import d3rlpy without the side effects it has at import time.

d3rlpy imports ``gym``, whose ``__init__`` prints a multi-line "Gym has been unmaintained"
notice to stderr; ``ecomrl train`` should not greet its users with it. And d3rlpy's logging
module calls ``structlog.configure`` (a coloured console renderer) when it is imported, which
would replace whatever the application configured (``ecomrl --log-json`` would print console
text from then on): the configuration in force before the import is put back.
"""

from __future__ import annotations

import contextlib
import io
import sys
from types import ModuleType

import structlog


def import_d3rlpy() -> ModuleType:
    """``import d3rlpy`` with stderr silenced and structlog's configuration kept."""
    module = sys.modules.get("d3rlpy")
    if module is not None:
        return module
    saved = structlog.get_config()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import d3rlpy
    finally:
        structlog.configure(**saved)
    return d3rlpy
