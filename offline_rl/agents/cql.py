"""Conservative Q-learning: ``DiscreteCQL`` (Double DQN + CQL penalty) and continuous ``CQL``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from offline_rl.agents.base import AgentConfig


class DiscreteCQLConfig(AgentConfig):
    """d3rlpy ``DiscreteCQLConfig`` with defaults for logged e-commerce data.

    d3rlpy's defaults come from Atari (batch 32, learning rate 6.25e-5, a hard target sync every
    8,000 steps): on tens of thousands to millions of logged decisions with a few tens of
    features, a batch of 256 gives steadier gradients for the same wall time on a CPU, 3e-4 is
    the usual Adam rate for MLPs of this size, and a sync every 1,000 steps lets the target
    follow a run of 10k-50k steps (a sync every 8,000 would leave a 20k-step run with two). The
    rate is annealed to 0 over the run (``lr_schedule = "cosine"``): with a constant rate the last
    Adam iterate's per-tier values wander by tenths of a euro, the size of the differences the
    agent has to rank.
    """

    name: ClassVar[str] = "discrete_cql"
    discrete: ClassVar[bool] = True
    d3rlpy_name: ClassVar[str] = "DiscreteCQLConfig"
    huber_critic: ClassVar[bool] = True

    learning_rate: float = Field(3e-4, gt=0.0)
    batch_size: int = Field(256, ge=1)
    n_critics: int = Field(1, ge=1)
    target_update_interval: int = Field(1_000, ge=1)
    alpha: float = Field(0.1, ge=0.0)
    """Weight of the conservative penalty (logsumexp Q minus Q of the logged action), in
    training reward units: how far it moves the Q-values in currency grows as 1 / the reward
    multiplier. 0.1 (d3rlpy: 1.0) goes with the default ``reward_scale`` (1 / max |reward|, about
    1/190 EUR on the simulated shop): at 1.0 it would outweigh the differences between tiers
    hundreds of times over, and the agent would only copy the most logged tier."""
    lr_schedule: Literal["constant", "cosine"] = "cosine"


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
