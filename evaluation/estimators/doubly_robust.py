"""Doubly robust estimators for sequential decisions.

* DR (Jiang & Li 2016, "Doubly robust off-policy value evaluation for reinforcement learning",
  ICML), per-decision form:
  ``V = 1/N sum_i sum_t gamma^t [ w_{i,t} (r_{i,t} - q(s_{i,t}, a_{i,t})) + w_{i,t-1} v(s_{i,t}) ]``
  with ``v(s) = sum_a pi_e(a|s) q(s, a)`` and ``w_{i,-1} = 1``. Unbiased for ANY model q.
* WDR (Thomas & Brunskill 2016, "Data-efficient off-policy policy evaluation for reinforcement
  learning", ICML): the same with self-normalised weights
  ``V = sum_t gamma^t [ sum_i w_{i,t}(r - q) / D_t + sum_i w_{i,t-1} v / D_{t-1} ]``,
  ``D_t = sum_i w~_{i,t}`` over all N episodes with frozen weights, ``D_{-1} = N``. Consistent.

On one-step episodes DR is the bandit DR and WDR is SNDR (``one_step.py``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from evaluation.estimators.base import (
    EpisodeStatistics,
    OffPolicyEstimator,
    OPEInput,
    per_episode_column,
    per_step_matrix,
    safe_ratio,
)
from evaluation.estimators.importance_sampling import per_step_denominators


class DoublyRobust(OffPolicyEstimator):
    """Sequential doubly robust estimator (Jiang & Li 2016), per-decision form."""

    name = "dr"
    family = "doubly_robust"
    needs_model = True
    unbiased = True

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        q, v = inp.require_model(self.name)
        d = inp.data
        per_row = d.discount * (inp.w * (d.reward - q) + inp.w_prev * v)
        return EpisodeStatistics.mean_of(per_episode_column(d, per_row))


class WeightedDoublyRobust(OffPolicyEstimator):
    """Weighted doubly robust estimator (Thomas & Brunskill 2016), normalised per step."""

    name = "wdr"
    family = "doubly_robust"
    needs_model = True

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        q, v = inp.require_model(self.name)
        d = inp.data
        a = per_step_matrix(d, d.discount * inp.w * (d.reward - q))
        b = per_step_matrix(d, d.discount * inp.w_prev * v)
        delta = per_step_matrix(d, inp.w - inp.w_prev)
        horizon = d.horizon

        def combine(s: np.ndarray, n: np.ndarray) -> np.ndarray:
            den = per_step_denominators(s[:, 2 * horizon :], n)
            den_prev = np.concatenate([n[:, None], den[:, :-1]], axis=1)
            return (
                safe_ratio(s[:, :horizon], den) + safe_ratio(s[:, horizon : 2 * horizon], den_prev)
            ).sum(axis=1)

        return EpisodeStatistics(sp.hstack([a, b, delta], format="csr"), combine)
