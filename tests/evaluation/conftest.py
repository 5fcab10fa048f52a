"""Shared fixtures of the evaluation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """A CLI test (``ecomrl.cli.main``) binds structlog to pytest's captured stderr, which is
    closed after that test; later log calls would then fail. Reset after every test."""
    yield
    structlog.reset_defaults()
