"""A small tabular MDP with exact policy values, for checking estimators against the truth.

Episodes start in a state drawn from ``initial``, last at most ``horizon`` decisions and end
earlier with a probability that depends on the state AND the action, so the candidate changes
how long episodes last (the hard case for variable-length conventions). The exact value of any
stationary policy comes from backward dynamic programming, independently of every estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.data import EpisodeData
from evaluation.estimators.base import OPEInput


@dataclass(frozen=True)
class TabularMDP:
    """Finite MDP: ``transition[s, a, s']``, ``end[s, a]``, ``reward_mean[s, a]``.

    Rewards are ``reward_mean[s, a] + reward_sd * N(0, 1)``. Observations are the one-hot state.
    """

    initial: np.ndarray
    transition: np.ndarray
    end: np.ndarray
    reward_mean: np.ndarray
    reward_sd: float
    horizon: int
    gamma: float

    @property
    def n_states(self) -> int:
        return int(self.transition.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.transition.shape[1])

    @classmethod
    def random(
        cls,
        *,
        n_states: int = 4,
        n_actions: int = 3,
        horizon: int = 5,
        gamma: float = 0.9,
        reward_sd: float = 0.5,
        seed: int = 0,
    ) -> TabularMDP:
        rng = np.random.default_rng(seed)
        return cls(
            initial=rng.dirichlet(np.ones(n_states)),
            transition=rng.dirichlet(np.ones(n_states), size=(n_states, n_actions)),
            end=rng.uniform(0.05, 0.5, size=(n_states, n_actions)),
            reward_mean=rng.normal(1.0, 1.0, size=(n_states, n_actions)),
            reward_sd=reward_sd,
            horizon=horizon,
            gamma=gamma,
        )

    def q_values(self, policy: np.ndarray) -> np.ndarray:
        """Exact ``Q_t(s, a)`` for t = 0..horizon-1, shape (horizon, S, K)."""
        q = np.zeros((self.horizon, self.n_states, self.n_actions))
        v_next = np.zeros(self.n_states)
        for t in range(self.horizon - 1, -1, -1):
            cont = self.gamma * (1.0 - self.end) * (self.transition @ v_next)
            q[t] = self.reward_mean + cont
            v_next = np.sum(policy * q[t], axis=1)
        return q

    def value(self, policy: np.ndarray) -> float:
        """Exact value: expected ``sum_t gamma^t r_t`` from the initial distribution."""
        q0 = self.q_values(policy)[0]
        return float(self.initial @ np.sum(policy * q0, axis=1))

    def candidate_input(
        self, policy: np.ndarray, data: EpisodeData, states: np.ndarray, q_scale: float = 1.0
    ) -> OPEInput:
        """OPE input of ``policy`` on logged ``data`` (visited ``states``), with the model
        ``q_scale`` x the exact Q (1: exact; any other scale: a wrong but fixed model)."""
        q = self.q_values(policy)[data.step, states] * q_scale
        return OPEInput(
            data,
            target_probability=policy[states, data.action],
            target_distribution=policy[states],
            q_logged=q[np.arange(data.n_decisions), data.action],
            v_hat=np.sum(policy[states] * q, axis=1),
        )

    def sample(
        self, policy: np.ndarray, n_episodes: int, rng: np.random.Generator
    ) -> tuple[EpisodeData, np.ndarray]:
        """Log ``n_episodes`` under ``policy``; returns the data and each decision's state."""
        s = rng.choice(self.n_states, size=n_episodes, p=self.initial)
        alive = np.ones(n_episodes, dtype=bool)
        cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("ep", "t", "s", "a", "r", "p", "term", "timeout")
        }
        ids = np.arange(n_episodes)
        for t in range(self.horizon):
            idx = ids[alive]
            st = s[idx]
            cum = np.cumsum(policy[st], axis=1)
            a = np.minimum((rng.random(len(idx))[:, None] > cum).sum(axis=1), self.n_actions - 1)
            r = self.reward_mean[st, a] + self.reward_sd * rng.standard_normal(len(idx))
            ends = rng.random(len(idx)) < self.end[st, a]
            timeout = ~ends & (t == self.horizon - 1)
            nxt_cum = np.cumsum(self.transition[st, a], axis=1)
            nxt = (rng.random(len(idx))[:, None] > nxt_cum).sum(axis=1)
            s[idx] = np.minimum(nxt, self.n_states - 1)
            alive[idx[ends]] = False
            for key, val in (
                ("ep", idx),
                ("t", np.full(len(idx), t)),
                ("s", st),
                ("a", a),
                ("r", r),
                ("p", policy[st, a]),
                ("term", ends),
                ("timeout", timeout),
            ):
                cols[key].append(val)
        ep = np.concatenate(cols["ep"])
        order = np.lexsort((np.concatenate(cols["t"]), ep))
        cat = {k: np.concatenate(v)[order] for k, v in cols.items()}
        states = cat["s"].astype(np.int64)
        data = EpisodeData.from_arrays(
            episode=cat["ep"],
            step=cat["t"],
            action=cat["a"].astype(np.int64),
            reward=cat["r"],
            behaviour_propensity=cat["p"],
            gamma=self.gamma,
            n_actions=self.n_actions,
            terminal=cat["term"],
            timeout=cat["timeout"],
            observation=np.eye(self.n_states, dtype=np.float32)[states],
            decision_id=np.array([f"d{i}" for i in range(len(ep))]),
        )
        return data, states


def softmax_policy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def mix(policy: np.ndarray, other: np.ndarray, share: float) -> np.ndarray:
    """``(1 - share) * policy + share * other``."""
    return np.asarray((1.0 - share) * policy + share * other)
