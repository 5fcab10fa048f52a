"""Behaviour cloning, the baseline every report compares against: ``DiscreteBC`` and ``BC``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from offline_rl.agents.base import AgentConfig


class DiscreteBCConfig(AgentConfig):
    """d3rlpy ``DiscreteBCConfig`` (batch 256 instead of d3rlpy's 100, like the other agents)."""

    name: ClassVar[str] = "discrete_bc"
    discrete: ClassVar[bool] = True
    d3rlpy_name: ClassVar[str] = "DiscreteBCConfig"
    learns_values: ClassVar[bool] = False

    learning_rate: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(256, ge=1)
    beta: float = Field(0.5, ge=0.0)


class BCConfig(AgentConfig):
    """d3rlpy ``BCConfig`` (continuous actions), d3rlpy's defaults."""

    name: ClassVar[str] = "bc"
    discrete: ClassVar[bool] = False
    d3rlpy_name: ClassVar[str] = "BCConfig"
    learns_values: ClassVar[bool] = False

    learning_rate: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(100, ge=1)
    policy_type: Literal["deterministic", "stochastic"] = "deterministic"
