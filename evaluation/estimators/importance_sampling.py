"""Importance sampling: trajectory-wise, per-decision, and their self-normalised forms.

Precup, Sutton & Singh (2000), "Eligibility traces for off-policy policy evaluation", ICML.
With ``w_{i,t} = prod_{t'<=t} pi_e(a_{i,t'}|s_{i,t'}) / pi_b(a_{i,t'}|s_{i,t'})``, ``H_i`` the
length of episode i, ``G_i = sum_{t<H_i} gamma^t r_{i,t}`` and N episodes:

* IS    ``V = 1/N sum_i w_{i,H_i-1} G_i``                                   (unbiased)
* PDIS  ``V = 1/N sum_i sum_{t<H_i} gamma^t w_{i,t} r_{i,t}``               (unbiased)
* WIS   ``V = sum_i w_{i,H_i-1} G_i / sum_i w_{i,H_i-1}``                   (consistent)
* WPDIS ``V = sum_t gamma^t (sum_i w_{i,t} r_{i,t}) / (sum_i w~_{i,t})``     (consistent)

where ``w~_{i,t}`` is the weight frozen after the episode's end (see ``evaluation.weights``):
ended episodes still count in the per-step denominators with their final weight.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from evaluation.estimators.base import (
    OffPolicyEstimator,
    OPEInput,
    per_episode_column,
    per_step_matrix,
    safe_ratio,
)
from evaluation.statistics import Combine, EpisodeStatistics


def _ratio(s: np.ndarray, n: np.ndarray) -> np.ndarray:
    return safe_ratio(s[:, 0], s[:, 1])


def per_step_denominators(s_delta: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Sums of frozen weights per step: ``n + cumsum_t(sum of weight changes at step t)``."""
    return n[:, None] + np.cumsum(s_delta, axis=1)


class TrajectoryIS(OffPolicyEstimator):
    """Trajectory-wise importance sampling (IS), Precup et al. 2000: ``1/N sum_i w_{i,H} G_i``."""

    name = "is"
    family = "importance_sampling"
    unbiased = True

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        col = (inp.trajectory_weights * inp.data.returns)[:, None]
        return EpisodeStatistics.mean_of(col)


class PerDecisionIS(OffPolicyEstimator):
    """Per-decision importance sampling (PDIS), Precup et al. 2000.

    ``V = 1/N sum_i sum_t gamma^t w_{i,t} r_{i,t}``: each reward is weighted only by the ratios
    of the decisions before it.
    """

    name = "pdis"
    family = "importance_sampling"
    unbiased = True

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        d = inp.data
        col = per_episode_column(d, inp.weighted_rewards)
        return EpisodeStatistics.mean_of(col)


class WeightedIS(OffPolicyEstimator):
    """Weighted (self-normalised) trajectory IS (WIS): ``sum_i w_{i,H} G_i / sum_i w_{i,H}``."""

    name = "wis"
    family = "importance_sampling"

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        tw = inp.trajectory_weights
        mat = np.column_stack([tw * inp.data.returns, tw])
        return EpisodeStatistics(mat, _ratio)


class WeightedPerDecisionIS(OffPolicyEstimator):
    """Weighted per-decision IS (WPDIS), Precup et al. 2000; normalised per step.

    ``V = sum_t (sum_i gamma^t w_{i,t} r_{i,t}) / (sum_i w~_{i,t})`` where the denominator sums
    the frozen weights of ALL N episodes (an ended episode keeps its final weight).
    """

    name = "wpdis"
    family = "importance_sampling"

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        d = inp.data
        num = per_step_matrix(d, inp.weighted_rewards)
        delta = per_step_matrix(d, inp.w - inp.w_prev)
        return EpisodeStatistics(sp.hstack([num, delta], format="csr"), _wpdis_combine(d.horizon))

    def estimate_policy_value(self, inp: OPEInput) -> float:
        """The point estimate from per-step sums, without the per-episode statistics.

        ``bincount`` over steps adds each step's values in episode order, as the column sums of
        the statistics do, so the value has the same bits as ``episode_statistics(inp).value()``.
        """
        d = inp.data
        sums = np.concatenate(
            [
                np.bincount(d.step, weights=inp.weighted_rewards, minlength=d.horizon),
                np.bincount(d.step, weights=inp.w - inp.w_prev, minlength=d.horizon),
            ]
        )
        n = np.array([float(d.n_episodes)])
        return float(_wpdis_combine(d.horizon)(sums[None, :], n)[0])


def _wpdis_combine(horizon: int) -> Combine:
    """WPDIS from sums ``[per-step numerators | per-step weight changes]`` (2 x horizon)."""

    def combine(s: np.ndarray, n: np.ndarray) -> np.ndarray:
        den = per_step_denominators(s[:, horizon:], n)
        return safe_ratio(s[:, :horizon], den).sum(axis=1)

    return combine
