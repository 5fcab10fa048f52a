"""Shared fixtures of the ETL tests: small hand-built raw logs (see ``synth.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from etl import EtlResult, build_transitions
from tests.etl.synth import Logs, make_logs


@pytest.fixture(scope="session")
def logs() -> Logs:
    """40 users over 25 days of promotion logs, with logins and returns."""
    return make_logs(40, 25, seed=1)


@pytest.fixture(scope="session")
def result(logs: Logs) -> EtlResult:
    """The in-memory ETL over ``logs`` with the default config."""
    return build_transitions(logs.events, logs.orders)


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """The CLI binds structlog to the (captured) stderr; unbind it after each test."""
    yield
    structlog.reset_defaults()
