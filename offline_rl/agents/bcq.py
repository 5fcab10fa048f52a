"""Batch-constrained Q-learning: ``DiscreteBCQ`` and continuous ``BCQ``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from offline_rl.agents.base import AgentConfig, DiscreteQLearningConfig


class DiscreteBCQConfig(DiscreteQLearningConfig):
    """d3rlpy ``DiscreteBCQConfig`` with the defaults of ``DiscreteQLearningConfig``.

    ``action_flexibility`` (0.3, d3rlpy's) keeps only the actions whose imitation probability is at
    least 0.3 times the most likely logged action's: the agent never picks a tier the logging
    policy (almost) never chose in that state.

    ``beta`` (the imitator's logit penalty, ``beta * mean(logits ** 2)``) is 0.01, the value of
    Fujimoto et al., "Benchmarking Batch Deep Reinforcement Learning Algorithms" (2019), instead
    of d3rlpy's 0.5: on logged promotion data, 0.5 flattens the imitator so much that every tier
    passes the 0.3 threshold in most states and the constraint stops binding (measured in
    ``offline_rl/README.md``, "Does it learn?").
    """

    name: ClassVar[str] = "discrete_bcq"
    d3rlpy_name: ClassVar[str] = "DiscreteBCQConfig"

    action_flexibility: float = Field(0.3, gt=0.0, le=1.0)
    beta: float = Field(0.01, ge=0.0)
    share_encoder: bool = True


class BCQConfig(AgentConfig):
    """d3rlpy ``BCQConfig`` (continuous actions), d3rlpy's defaults."""

    name: ClassVar[str] = "bcq"
    discrete: ClassVar[bool] = False
    d3rlpy_name: ClassVar[str] = "BCQConfig"

    actor_learning_rate: float = Field(1e-3, gt=0.0)
    critic_learning_rate: float = Field(1e-3, gt=0.0)
    imitator_learning_rate: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(100, ge=1)
    tau: float = Field(0.005, gt=0.0, le=1.0)
    n_critics: int = Field(2, ge=1)
    update_actor_interval: int = Field(1, ge=1)
    lam: float = Field(0.75, ge=0.0, le=1.0)
    n_action_samples: int = Field(100, ge=1)
    action_flexibility: float = Field(0.05, ge=0.0)
    rl_start_step: int = Field(0, ge=0)
    beta: float = Field(0.5, ge=0.0)
