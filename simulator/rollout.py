"""Online rollouts: the true value of any policy, with a confidence interval.

The rollout runs the simulator in decision rounds with the given policy choosing every
decision. Observations come from the ``observation_hook`` (the ETL's state builder, fed the raw
rows emitted so far, as in production) or, without a hook, from the simulator's documented
default observation (``simulator.model.PROMOTION_FEATURES`` / ``recommendation_features``),
built from observable quantities only, never from the hidden state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import polars as pl

from simulator.config import SimulatorConfig
from simulator.errors import SimulatorError
from simulator.logs import SimulatedLogs
from simulator.policies import LoggingPolicy, as_policy
from simulator.runner import run_policy
from simulator.truth import episode_returns

Z_95 = 1.959963984540054


class ObservationHook(Protocol):
    """Turns the raw history into one observation row per pending decision (contract)."""

    def __call__(
        self, events: pl.DataFrame, orders: pl.DataFrame, decisions: pl.DataFrame
    ) -> np.ndarray: ...


@dataclass
class RolloutResult:
    """True value of a policy: mean discounted return per episode (real users, bots excluded)."""

    policy: str
    value: float
    ci_low: float
    ci_high: float
    std_error: float
    undiscounted_mean: float
    n_episodes: int
    gamma: float
    returns: pl.DataFrame
    truth: pl.DataFrame
    logs: SimulatedLogs | None = None
    observations: pl.DataFrame | None = None

    def paired_difference(self, other: RolloutResult) -> tuple[float, float]:
        """Mean and 95 % half-width (normal) of the per-episode difference ``self - other`` of
        discounted returns, on the episodes both rollouts share: rollouts with the same seed meet
        the same users, so pairing removes the users' own variance from the comparison.
        ``(nan, nan)`` with fewer than two shared episodes."""
        joined = self.returns.join(other.returns, on="episode_id", how="inner", suffix="_other")
        diff = (joined["discounted"] - joined["discounted_other"]).to_numpy()
        if diff.size < 2:
            return math.nan, math.nan
        return float(diff.mean()), float(Z_95 * diff.std(ddof=1) / math.sqrt(diff.size))

    def as_dict(self) -> dict[str, Any]:
        """The scalar fields (for JSON reports)."""
        return {
            "policy": self.policy,
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "std_error": self.std_error,
            "undiscounted_mean": self.undiscounted_mean,
            "n_episodes": self.n_episodes,
            "gamma": self.gamma,
        }


def value_from_truth(truth: pl.DataFrame, gamma: float = 0.9) -> tuple[float, float, float, int]:
    """(value, std_error, undiscounted mean, n_episodes) of the episodes in a truth record."""
    ret = episode_returns(truth, gamma)
    n = ret.height
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    disc = ret["discounted"].to_numpy()
    se = float(disc.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(disc.mean()), se, float(ret["undiscounted"].mean()), n  # type: ignore[arg-type]


def rollout(
    policy: Any,
    config: SimulatorConfig | None = None,
    *,
    observation_hook: ObservationHook | None = None,
    n_users: int | None = None,
    seed: int | None = None,
    gamma: float = 0.9,
    return_logs: bool = False,
    progress: bool = False,
) -> RolloutResult:
    """Run ``policy`` online in the simulator and return its true value with a 95 % CI.

    ``policy`` is anything :func:`simulator.policies.as_policy` accepts. ``n_users`` and
    ``seed`` override the config's. The value is the mean over episodes of
    ``sum_t gamma**t * r_t`` with the contract's episodes and reward; the interval is the
    normal approximation over episodes. With ``return_logs`` the raw logs of the rollout and
    the observation handed to the policy for every decision come back too.

    The logging policy (``simulator.policies.logging_policy(config)``) rolled out with the
    config's seed reproduces ``simulate(config)`` row for row.
    """
    if not 0.0 < gamma <= 1.0:
        raise SimulatorError(f"gamma must be in (0, 1], got {gamma}")
    config = config or SimulatorConfig()
    updates: dict[str, Any] = {}
    if n_users is not None:
        updates["n_users"] = n_users
    if seed is not None:
        updates["seed"] = seed
    if updates:
        config = config.model_copy(update=updates)
    pol = as_policy(policy)
    is_logging = isinstance(pol, LoggingPolicy)
    out = run_policy(
        config,
        pol,
        observation_hook=observation_hook,
        log_propensity=config.log_propensity if is_logging else True,
        policy_id=config.policy_id if is_logging else f"rollout:{pol.name}",
        record_observations=return_logs,
        keep_events=return_logs,
        progress=progress,
    )
    value, se, undiscounted, n = value_from_truth(out.truth, gamma)
    logs = SimulatedLogs(out.events, out.orders, out.truth, config) if return_logs else None
    return RolloutResult(
        policy=pol.name,
        value=value,
        ci_low=value - Z_95 * se,
        ci_high=value + Z_95 * se,
        std_error=se,
        undiscounted_mean=undiscounted,
        n_episodes=n,
        gamma=gamma,
        returns=episode_returns(out.truth, gamma),
        truth=out.truth,
        logs=logs,
        observations=out.observations,
    )
