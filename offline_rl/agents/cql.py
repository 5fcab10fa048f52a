"""Conservative Q-learning: ``DiscreteCQL`` (Double DQN + CQL penalty) and continuous ``CQL``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from offline_rl.agents.base import AgentConfig, DiscreteQLearningConfig


class DiscreteCQLConfig(DiscreteQLearningConfig):
    """d3rlpy ``DiscreteCQLConfig`` with the defaults of ``DiscreteQLearningConfig`` (batch 256,
    learning rate 3e-4 annealed to 0, target sync every 1,000 steps) and ``alpha`` 0.01."""

    name: ClassVar[str] = "discrete_cql"
    d3rlpy_name: ClassVar[str] = "DiscreteCQLConfig"

    alpha: float = Field(0.01, ge=0.0)
    """Weight of the conservative penalty (logsumexp Q minus Q of the logged action), in
    training reward units: how far it moves the Q-values in currency grows as 1 / the reward
    multiplier. 0.01 (d3rlpy: 1.0) goes with the defaults ``reward_scale`` (1 / max |reward|)
    and ``reward_source`` (expected rewards, whose largest is about 34 EUR on the simulated
    shop): a penalty of the order of a few tenths of a euro, the size of the differences between
    tiers. At 1.0 it would outweigh them hundreds of times over and the agent would only copy
    the most logged tier; 0.1 did worse than 0.01 on the simulator (``offline_rl/README.md``,
    "Does it learn?")."""


class CQLConfig(AgentConfig):
    """d3rlpy ``CQLConfig`` (SAC-based, continuous actions), d3rlpy's defaults."""

    name: ClassVar[str] = "cql"
    discrete: ClassVar[bool] = False
    d3rlpy_name: ClassVar[str] = "CQLConfig"

    actor_learning_rate: float = Field(1e-4, gt=0.0)
    critic_learning_rate: float = Field(3e-4, gt=0.0)
    temp_learning_rate: float = Field(1e-4, ge=0.0)
    alpha_learning_rate: float = Field(1e-4, ge=0.0)
    batch_size: int = Field(256, ge=1)
    tau: float = Field(0.005, gt=0.0, le=1.0)
    n_critics: int = Field(2, ge=1)
    initial_temperature: float = Field(1.0, gt=0.0)
    initial_alpha: float = Field(1.0, gt=0.0)
    alpha_threshold: float = 10.0
    conservative_weight: float = Field(5.0, ge=0.0)
    n_action_samples: int = Field(10, ge=1)
    soft_q_backup: bool = False
    max_q_backup: bool = False
