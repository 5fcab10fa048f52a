"""Policies the simulator runs: the logging policy, simple rules, and adapters (``as_policy``).

A policy maps a batch of observations (one row per pending decision) to actions: int indices
for the discrete spaces (promotion tiers ``none, pct_5, pct_10, free_shipping``; recommendation
categories ``cat_00`` ...) or discount rates in ``[0, 0.3]`` for the continuous promotion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import betaln

from simulator.config import SimulatorConfig
from simulator.errors import SimulatorError
from simulator.model import MAX_RATE, PROMOTION_FEATURES, TIERS, sigmoid

MIN_PROPENSITY = 0.025
CONTINUOUS_CONCENTRATION = 12.0


class Policy:
    """Base class of the policies the rollout runs.

    ``act`` returns one action per observation row. ``propensity`` returns the probability (or
    density) of the given actions when the policy knows it, else ``None``. A policy with
    ``uses_default_observation`` reads the simulator's documented default observation whatever
    observation hook the rollout was given (the logging policy and the simulator's rules do).
    """

    uses_default_observation: bool = False
    name: str = "policy"

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def propensity(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray | None:
        return None


def _sample_discrete(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cum = np.cumsum(probs, axis=1)
    u = np.asarray(rng.random(probs.shape[0]))[:, None] * cum[:, -1:]
    return np.minimum((u >= cum).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


def _softmax(scores: np.ndarray) -> np.ndarray:
    z = np.exp(scores - scores.max(axis=1, keepdims=True))
    return np.asarray(z / z.sum(axis=1, keepdims=True))


def _mix_uniform(probs: np.ndarray) -> np.ndarray:
    k = probs.shape[1]
    eps = min(1.0, 1.2 * MIN_PROPENSITY * k)
    return (1.0 - eps) * probs + eps / k


def promotion_scores(observations: np.ndarray) -> np.ndarray:
    """The logging policy's heuristic tier scores (promotion, default observation)."""
    o = observations.astype(np.float64)
    mobile, search, email, social = o[:, 0], o[:, 4], o[:, 5], o[:, 6]
    first, log_orders, share = o[:, 7], o[:, 8], o[:, 11]
    return np.stack(
        [
            0.6 + 0.7 * log_orders + 0.8 * share,
            0.2 * email + 0.2 * search,
            0.5 * first + 0.4 * email - 0.6 * share,
            0.7 * mobile + 0.2 * social,
        ],
        axis=1,
    )


def recommendation_scores(observations: np.ndarray, n_categories: int) -> np.ndarray:
    """The logging policy's heuristic category scores (recommendation, default observation)."""
    o = observations.astype(np.float64)
    views = o[:, 10 : 10 + n_categories]
    recs = o[:, 10 + n_categories : 10 + 2 * n_categories]
    return np.asarray(1.5 * views - 0.6 * recs)


def continuous_beta_params(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Beta(a, b) parameters of the continuous logging policy (rate = 0.3 * Beta draw)."""
    o = observations.astype(np.float64)
    mobile, email, first, log_orders, share = o[:, 0], o[:, 5], o[:, 7], o[:, 8], o[:, 11]
    mean = sigmoid(-1.0 + 0.8 * first + 0.5 * email + 0.4 * mobile - 0.6 * log_orders - 0.8 * share)
    mean = np.clip(mean, 0.1, 0.9)
    return CONTINUOUS_CONCENTRATION * mean, CONTINUOUS_CONCENTRATION * (1.0 - mean)


def continuous_density(observations: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Density on ``[0, 0.3]`` of the continuous logging policy at the given discount rates."""
    a, b = continuous_beta_params(observations)
    x = np.clip(np.asarray(rates, np.float64) / MAX_RATE, 1e-12, 1.0 - 1e-12)
    log_pdf = (a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x) - betaln(a, b)
    return np.asarray(np.exp(log_pdf) / MAX_RATE)


def logging_probabilities(observations: np.ndarray, config: SimulatorConfig) -> np.ndarray:
    """Action probabilities of the discrete logging policy, shape ``(n, n_actions)``.

    A softmax over a heuristic score of observable quantities only (the default observation),
    mixed with the uniform distribution so that every action has probability >= 0.025.
    """
    if config.scenario == "recommendation":
        scores = recommendation_scores(observations, config.n_categories)
    elif config.action_space == "discrete":
        scores = promotion_scores(observations)
        if config.logging_discount_bias:
            scores[:, 1:] += config.logging_discount_bias
    else:
        raise SimulatorError("the continuous logging policy has a density, not probabilities")
    return _mix_uniform(_softmax(scores))


class LoggingPolicy(Policy):
    """The stochastic heuristic policy that produced the logs (propensities known exactly)."""

    uses_default_observation = True

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.continuous = config.scenario == "promotion" and config.action_space == "continuous"
        self.name = f"logging:{config.policy_id}"

    def probabilities(self, observations: np.ndarray) -> np.ndarray:
        """Action probabilities per row (discrete spaces)."""
        return logging_probabilities(observations, self.config)

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.continuous:
            a, b = continuous_beta_params(observations)
            # Inverse-CDF free: numpy's beta sampler, one call per round (deterministic).
            return np.asarray(MAX_RATE * rng.beta(a, b))
        return _sample_discrete(self.probabilities(observations), rng)

    def propensity(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        if self.continuous:
            return continuous_density(observations, actions)
        probs = self.probabilities(observations)
        return np.asarray(probs[np.arange(len(actions)), np.asarray(actions, np.int64)])


class ConstantPolicy(Policy):
    """Always the same action (a tier index, a category index or a discount rate)."""

    def __init__(self, action: int | float) -> None:
        self.action = action
        self.name = f"constant:{action}"

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        dtype = np.int64 if isinstance(self.action, int | np.integer) else np.float64
        return np.full(observations.shape[0], self.action, dtype=dtype)

    def propensity(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray | None:
        if isinstance(self.action, int | np.integer):
            return np.ones(len(actions))
        return None


class ProbabilityVectorPolicy(Policy):
    """Context-free stochastic policy given by one probability per discrete action."""

    def __init__(self, probs: np.ndarray) -> None:
        p = np.asarray(probs, np.float64)
        if p.ndim != 1 or len(p) < 1 or (p < 0).any() or not np.isclose(p.sum(), 1.0):
            raise SimulatorError(
                "a probability-vector policy needs non-negative values summing to 1"
            )
        self.probs = p / p.sum()
        self.name = "probabilities:" + ",".join(f"{x:.3g}" for x in self.probs)

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        probs = np.broadcast_to(self.probs, (observations.shape[0], len(self.probs)))
        return _sample_discrete(probs, rng)

    def propensity(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return np.asarray(self.probs[np.asarray(actions, np.int64)])


class CallablePolicy(Policy):
    """Adapter for ``fn(observations, rng) -> actions``."""

    def __init__(self, fn: Callable[[np.ndarray, np.random.Generator], Any]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "callable")

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.fn(observations, rng))


class PredictPolicy(Policy):
    """Adapter for an object with ``predict(observations) -> actions`` (d3rlpy, artifacts)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = type(model).__name__

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        actions = np.asarray(self.model.predict(observations))
        if actions.ndim == 2 and actions.shape[1] == 1:
            actions = actions[:, 0]
        return actions


def as_policy(policy: Any) -> Policy:
    """Adapt a policy given in any accepted form.

    Accepts a :class:`Policy`; an object with ``predict(observations)`` (a d3rlpy algo or an
    ecomrl artifact); a callable ``(observations, rng) -> actions``; or a 1-D array of action
    probabilities (a context-free stochastic policy).
    """
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, np.ndarray | list | tuple):
        return ProbabilityVectorPolicy(np.asarray(policy, np.float64))
    if hasattr(policy, "predict"):
        return PredictPolicy(policy)
    if callable(policy):
        return CallablePolicy(policy)
    raise SimulatorError(f"cannot use {type(policy).__name__} as a policy")


def constant_action(action: int | float) -> Policy:
    """A rule that always takes ``action`` (tier / category index, or a discount rate)."""
    return ConstantPolicy(action)


def logging_policy(config: SimulatorConfig) -> LoggingPolicy:
    """The simulator's logging policy for ``config`` (the one ``simulate`` logs)."""
    return LoggingPolicy(config)


class TargetingRule(Policy):
    """A sensible hand-made promotion rule (default observation): discount only new visitors
    who look price sensitive (mobile, email or search), free shipping on mobile, nothing for
    repeat buyers or users already used to discounts. A reference point that a learned,
    state-dependent policy should match or beat."""

    uses_default_observation = True
    name = "targeting-rule"

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        o = observations
        mobile, search, email = o[:, 0] > 0, o[:, 4] > 0, o[:, 5] > 0
        first, share = o[:, 7] > 0, o[:, 11]
        sensitive = mobile | email | search
        actions = np.zeros(len(o), np.int64)
        actions[first & sensitive] = TIERS.index("pct_10")
        actions[first & mobile] = TIERS.index("free_shipping")
        actions[share > 0.5] = 0
        return actions


__all__ = [
    "PROMOTION_FEATURES",
    "CallablePolicy",
    "ConstantPolicy",
    "LoggingPolicy",
    "Policy",
    "PredictPolicy",
    "ProbabilityVectorPolicy",
    "TargetingRule",
    "as_policy",
    "constant_action",
    "continuous_density",
    "logging_policy",
    "logging_probabilities",
]
