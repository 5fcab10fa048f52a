"""A contextual-bandit world of recommendations with known truth, for checking one-step OPE.

A user with context ``x ~ N(0, I_d)`` is shown one of ``K`` items and clicks with probability
``sigmoid(base + x . theta + bias_a + x^T M e_a)``: a shared effect of the user, an item
popularity and a personal taste (low-rank: item embeddings ``e_a``). Clicks are rare (the base
rate is set by ``base``). The true value of any policy ``pi(a|x)`` is
``E_x sum_a pi(a|x) P(click | x, a)``, computed from the click probabilities themselves on a
large sample of fresh contexts, independently of every estimator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from evaluation.data import EpisodeData, FloatArray

Policy = Callable[[FloatArray], FloatArray]
"""Contexts (n, d) -> action distribution (n, K)."""


def _softmax(z: FloatArray) -> FloatArray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@dataclass(frozen=True)
class BanditWorld:
    """Click probabilities of ``K`` items for users with ``d`` features."""

    theta: FloatArray
    bias: FloatArray
    taste: FloatArray
    embedding: FloatArray
    base: float

    @classmethod
    def make(
        cls, n_actions: int, dim: int = 5, rank: int = 3, base: float = -3.0, seed: int = 0
    ) -> BanditWorld:
        rng = np.random.default_rng(seed)
        return cls(
            theta=rng.normal(0, 0.3, dim),
            bias=rng.normal(0, 0.5, n_actions),
            taste=rng.normal(0, 0.5, (dim, rank)),
            embedding=rng.normal(0, 1.0, (n_actions, rank)),
            base=base,
        )

    @property
    def n_actions(self) -> int:
        return len(self.bias)

    @property
    def dim(self) -> int:
        return len(self.theta)

    def logit(self, x: FloatArray) -> FloatArray:
        """Click log-odds of every item, (n, K)."""
        shared = self.base + x @ self.theta
        personal = (x @ self.taste) @ self.embedding.T
        return np.asarray(shared[:, None] + self.bias[None, :] + personal)

    def click_probability(self, x: FloatArray) -> FloatArray:
        return np.asarray(1.0 / (1.0 + np.exp(-self.logit(x))))

    def contexts(self, n: int, rng: np.random.Generator) -> FloatArray:
        return rng.normal(0, 1, (n, self.dim))

    def value(self, policy: Policy, n_contexts: int = 200_000, seed: int = 12345) -> float:
        """The true value ``E_x sum_a pi(a|x) P(click|x,a)`` on fresh contexts."""
        x = self.contexts(n_contexts, np.random.default_rng(seed))
        return float(np.mean(np.sum(policy(x) * self.click_probability(x), axis=1)))

    def uniform(self) -> Policy:
        k = self.n_actions

        def policy(x: FloatArray) -> FloatArray:
            return np.full((len(x), k), 1.0 / k)

        return policy

    def softmax(self, beta: float, noise: float = 0.0, seed: int = 1) -> Policy:
        """``softmax(beta * (logit + noise))``: noise fixed per item and taste (a fixed policy)."""
        rng = np.random.default_rng(seed)
        item_noise = rng.normal(0, noise, self.n_actions)
        taste_noise = rng.normal(0, noise, self.taste.shape)

        def policy(x: FloatArray) -> FloatArray:
            z = self.logit(x) + item_noise[None, :] + (x @ taste_noise) @ self.embedding.T
            return _softmax(beta * z)

        return policy

    def epsilon_greedy(self, epsilon: float, noise: float = 0.0, seed: int = 2) -> Policy:
        """The best item under a noisy model with probability ``1 - epsilon``, else uniform."""
        rng = np.random.default_rng(seed)
        item_noise = rng.normal(0, noise, self.n_actions)
        k = self.n_actions

        def policy(x: FloatArray) -> FloatArray:
            best = np.argmax(self.logit(x) + item_noise[None, :], axis=1)
            dist = np.full((len(x), k), epsilon / k)
            dist[np.arange(len(x)), best] += 1.0 - epsilon
            return dist

        return policy


@dataclass(frozen=True)
class BanditLogs:
    """One-step logs: context, shown item, click, logged propensity, logging distribution."""

    context: FloatArray
    action: np.ndarray
    reward: FloatArray
    propensity: FloatArray
    logging_distribution: FloatArray

    def to_episode_data(self) -> EpisodeData:
        n = len(self.action)
        return EpisodeData.from_arrays(
            episode=np.arange(n),
            action=self.action,
            reward=self.reward,
            behaviour_propensity=self.propensity,
            gamma=1.0,
            n_actions=self.logging_distribution.shape[1],
            observation=self.context.astype(np.float32),
            decision_id=np.array([f"d{i}" for i in range(n)]),
        )


def simulate_logs(world: BanditWorld, logging: Policy, n: int, seed: int) -> BanditLogs:
    """``n`` impressions chosen by ``logging`` and their clicks."""
    rng = np.random.default_rng(seed)
    x = world.contexts(n, rng)
    dist = logging(x)
    cum = np.cumsum(dist, axis=1)
    action = np.minimum((cum < rng.random(n)[:, None]).sum(axis=1), world.n_actions - 1)
    p_click = world.click_probability(x)[np.arange(n), action]
    reward = (rng.random(n) < p_click).astype(np.float64)
    return BanditLogs(
        context=x,
        action=action.astype(np.int64),
        reward=reward,
        propensity=dist[np.arange(n), action],
        logging_distribution=dist,
    )
