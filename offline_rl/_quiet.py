"""Import d3rlpy without the stale ``gym`` notice it prints on stderr at import time.

d3rlpy imports ``gym``, whose ``__init__`` prints a multi-line "Gym has been unmaintained"
notice to stderr; ``ecomrl train`` should not greet its users with it.
"""

from __future__ import annotations

import contextlib
import io
import sys
from types import ModuleType


def import_d3rlpy() -> ModuleType:
    """``import d3rlpy`` with stderr silenced during the first import."""
    module = sys.modules.get("d3rlpy")
    if module is not None:
        return module
    with contextlib.redirect_stderr(io.StringIO()):
        import d3rlpy
    return d3rlpy
