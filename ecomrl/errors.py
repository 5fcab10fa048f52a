"""User-facing errors: the CLI prints them as one line and exits non-zero (no traceback)."""

from __future__ import annotations

import importlib


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


# Each stage package owns its error types; the CLI treats these as the user's mistake (bad input,
# bad configuration) rather than a bug. Listed by dotted name so that importing this module stays
# cheap and a stage that is absent does not break the others.
_USER_ERROR_NAMES = (
    "simulator.errors:SimulatorError",
    "etl.errors:EtlError",
    "offline_rl.errors:TrainingError",
    "evaluation.errors:EvaluationError",
)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the user's input is wrong", for the CLI's error handler."""
    found: list[type[BaseException]] = [ConfigError, FileNotFoundError, NotADirectoryError]
    for dotted in _USER_ERROR_NAMES:
        module_name, _, attr = dotted.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        err = getattr(module, attr, None)
        if isinstance(err, type) and issubclass(err, BaseException):
            found.append(err)
    return tuple(found)
