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
from simulator.policies import LoggingPolicy, Policy, as_policy
from simulator.runner import RunOutput, run_policy
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


def _with_overrides(
    config: SimulatorConfig | None, n_users: int | None, seed: int | None
) -> SimulatorConfig:
    """The config (default when ``None``) with ``n_users`` and ``seed`` replaced when given."""
    config = config or SimulatorConfig()
    updates: dict[str, Any] = {}
    if n_users is not None:
        updates["n_users"] = n_users
    if seed is not None:
        updates["seed"] = seed
    return config.model_copy(update=updates) if updates else config


def _run(
    pol: Policy,
    config: SimulatorConfig,
    observation_hook: ObservationHook | None,
    *,
    return_logs: bool,
    progress: bool,
) -> RunOutput:
    """Run ``pol`` online; the logging policy logs as ``simulate`` does (its id, propensities)."""
    is_logging = isinstance(pol, LoggingPolicy)
    return run_policy(
        config,
        pol,
        observation_hook=observation_hook,
        log_propensity=config.log_propensity if is_logging else True,
        policy_id=config.policy_id if is_logging else f"rollout:{pol.name}",
        record_observations=return_logs,
        keep_events=return_logs,
        progress=progress,
    )


def _result(name: str, truth: pl.DataFrame, gamma: float) -> RolloutResult:
    """The value of the episodes in ``truth`` with its 95 % interval and per-episode returns."""
    value, se, undiscounted, n = value_from_truth(truth, gamma)
    return RolloutResult(
        policy=name,
        value=value,
        ci_low=value - Z_95 * se,
        ci_high=value + Z_95 * se,
        std_error=se,
        undiscounted_mean=undiscounted,
        n_episodes=n,
        gamma=gamma,
        returns=episode_returns(truth, gamma),
        truth=truth,
    )


def _check_gamma(gamma: float) -> None:
    if not 0.0 < gamma <= 1.0:
        raise SimulatorError(f"gamma must be in (0, 1], got {gamma}")


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
    _check_gamma(gamma)
    config = _with_overrides(config, n_users, seed)
    pol = as_policy(policy)
    out = _run(pol, config, observation_hook, return_logs=return_logs, progress=progress)
    result = _result(pol.name, out.truth, gamma)
    if return_logs:
        result.logs = SimulatedLogs(out.events, out.orders, out.truth, config)
    result.observations = out.observations
    return result


def deployment_world(config: SimulatorConfig, arrival_days: int = 7) -> SimulatorConfig:
    """The world :func:`deployment_value` runs: users arrive over ``arrival_days`` days and the
    simulation lasts until every first episode is over and its reversals are settled
    (``days = arrival_days + horizon_days + settlement_days + 1``)."""
    if arrival_days <= 0:
        raise SimulatorError(f"arrival_days must be positive, got {arrival_days}")
    days = arrival_days + config.horizon_days + config.settlement_days + 1
    return config.model_copy(update={"arrival_days": arrival_days, "days": days})


def first_episodes(truth: pl.DataFrame) -> pl.DataFrame:
    """The decisions of every user's first episode (``episode == 0``, ``u<user>-e00``)."""
    return truth.filter(pl.col("episode") == 0)


def deployment_value(
    policy: Any,
    config: SimulatorConfig | None = None,
    *,
    observation_hook: ObservationHook | None = None,
    n_users: int | None = None,
    seed: int | None = None,
    gamma: float = 0.9,
    arrival_days: int = 7,
    progress: bool = False,
) -> RolloutResult:
    """What deploying ``policy`` would earn: the mean discounted return of a new user's first
    episode under it, with a 95 % CI.

    Every real (non-bot) user's first episode (episode 0 of the truth record: the first
    ``horizon_decisions`` decisions within ``horizon_days`` of the first visit; in the
    recommendation scenario the first session) is run to its end: users arrive over
    ``arrival_days`` days and the world runs until the last of them has finished the episode
    and its reversals have settled (:func:`deployment_world`); the dirt is the config's.
    ``returns`` and ``truth`` (bots' rows flagged ``is_bot``) hold the first episodes only,
    keyed by ``episode_id`` = ``u<user>-e00``: with the same seed two policies meet the same
    users with the same common random numbers, so :meth:`RolloutResult.paired_difference`
    compares them user by user. ``value``, the interval, ``std_error`` and ``n_episodes`` are
    over those first episodes. The seed draws the catalogue (prices, margins) as well as the
    users, so values of different seeds belong to different worlds: compare policies with one
    seed.

    The world is stationary in calendar time: nothing in the behaviour model depends on the
    weekday or the date (random draws are indexed by decision round, in the promotion scenario
    the user's own decision index, never by date; every day has the same time-of-day profile;
    gaps between visits and reversal delays count from the visit). The calendar only cuts off
    what would happen after the simulation's end, and this world ends after every first
    episode has settled. So the arrival window changes which day a user arrives on, not what
    the first episode is worth: a held-out log's complete first episodes, with users arriving
    at any time, estimate the same value.
    """
    _check_gamma(gamma)
    world = deployment_world(_with_overrides(config, n_users, seed), arrival_days)
    pol = as_policy(policy)
    out = _run(pol, world, observation_hook, return_logs=False, progress=progress)
    return _result(pol.name, first_episodes(out.truth), gamma)
