"""Shared, session-scoped simulations (small, so the whole folder stays fast)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from simulator import DirtConfig, SimulatedLogs, SimulatorConfig, simulate


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """``ecomrl.cli.main`` binds structlog to the sys.stderr of the moment (pytest's capture,
    closed after the test); reset it around every test so library logging keeps working."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def promo_config() -> SimulatorConfig:
    return SimulatorConfig(n_users=400, seed=11)


@pytest.fixture(scope="session")
def promo_logs(promo_config: SimulatorConfig) -> SimulatedLogs:
    return simulate(promo_config)


@pytest.fixture(scope="session")
def continuous_logs() -> SimulatedLogs:
    return simulate(SimulatorConfig(n_users=300, seed=12, action_space="continuous"))


@pytest.fixture(scope="session")
def rec_logs() -> SimulatedLogs:
    return simulate(SimulatorConfig(n_users=200, seed=13, scenario="recommendation", days=14))


@pytest.fixture(scope="session")
def dirty_logs() -> SimulatedLogs:
    return simulate(SimulatorConfig(n_users=400, seed=11, dirt=DirtConfig.all_on()))
