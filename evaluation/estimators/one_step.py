"""Contextual-bandit estimators for one-step episodes (every decision its own episode).

With ``w_i = pi_e(a_i|x_i) / pi_b(a_i|x_i)``, a model ``q(x, a)`` and
``v(x) = sum_a pi_e(a|x) q(x, a)``:

* IPW   ``1/n sum w_i r_i``                              (Horvitz & Thompson 1952)
* SNIPW ``sum w_i r_i / sum w_i``                        (Swaminathan & Joachims 2015)
* DM    ``1/n sum v(x_i)``                               (Beygelzimer & Langford 2009)
* DR    ``1/n sum [v(x_i) + w_i (r_i - q(x_i, a_i))]``   (Dudik, Langford & Li 2011)
* SNDR  ``1/n sum v(x_i) + sum w_i (r_i - q_i) / sum w_i`` (self-normalised DR)

These are written in their bandit form on purpose: on one-step data they must equal IS/PDIS,
WIS/WPDIS, DM, DR and WDR of the sequential modules exactly (tests check it).
"""

from __future__ import annotations

import numpy as np

from evaluation.errors import EvaluationError
from evaluation.estimators.base import (
    EpisodeStatistics,
    OffPolicyEstimator,
    OPEInput,
    safe_ratio,
)


def _check_one_step(inp: OPEInput, name: str) -> None:
    if inp.data.n_episodes != inp.data.n_decisions:
        raise EvaluationError(
            f"{name} is a one-step (bandit) estimator but some episodes have several decisions"
        )


def _ratio_w(inp: OPEInput) -> np.ndarray:
    return np.asarray(inp.rho)


class IPW(OffPolicyEstimator):
    """Inverse propensity weighting: ``1/n sum w_i r_i``."""

    name = "ipw"
    family = "importance_sampling"
    unbiased = True

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        _check_one_step(inp, self.name)
        w = _ratio_w(inp)
        return EpisodeStatistics.mean_of((w * inp.data.reward)[:, None])

    def estimate_policy_value(self, inp: OPEInput) -> float:
        _check_one_step(inp, self.name)
        return float(np.mean(_ratio_w(inp) * inp.data.reward))


class SNIPW(OffPolicyEstimator):
    """Self-normalised IPW: ``sum w_i r_i / sum w_i``."""

    name = "snipw"
    family = "importance_sampling"

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        _check_one_step(inp, self.name)
        w = _ratio_w(inp)
        mat = np.column_stack([w * inp.data.reward, w])
        return EpisodeStatistics(mat, lambda s, n: safe_ratio(s[:, 0], s[:, 1]))

    def estimate_policy_value(self, inp: OPEInput) -> float:
        _check_one_step(inp, self.name)
        w = _ratio_w(inp)
        return float(np.sum(w * inp.data.reward) / np.sum(w)) if np.sum(w) > 0 else 0.0


class DirectMethodBandit(OffPolicyEstimator):
    """Direct method: ``1/n sum v(x_i)``."""

    name = "dm_bandit"
    family = "direct"
    needs_model = True
    uses_weights = False

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        _check_one_step(inp, self.name)
        _, v = inp.require_model(self.name)
        return EpisodeStatistics.mean_of(v[:, None])

    def estimate_policy_value(self, inp: OPEInput) -> float:
        _check_one_step(inp, self.name)
        return float(np.mean(inp.require_model(self.name)[1]))


class DoublyRobustBandit(OffPolicyEstimator):
    """Doubly robust: ``1/n sum [v(x_i) + w_i (r_i - q(x_i, a_i))]``."""

    name = "dr_bandit"
    family = "doubly_robust"
    needs_model = True
    unbiased = True

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        _check_one_step(inp, self.name)
        q, v = inp.require_model(self.name)
        col = v + _ratio_w(inp) * (inp.data.reward - q)
        return EpisodeStatistics.mean_of(col[:, None])

    def estimate_policy_value(self, inp: OPEInput) -> float:
        _check_one_step(inp, self.name)
        q, v = inp.require_model(self.name)
        return float(np.mean(v + _ratio_w(inp) * (inp.data.reward - q)))


class SelfNormalizedDoublyRobust(OffPolicyEstimator):
    """Self-normalised DR: ``1/n sum v(x_i) + sum w_i (r_i - q_i) / sum w_i``."""

    name = "sndr"
    family = "doubly_robust"
    needs_model = True

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        _check_one_step(inp, self.name)
        q, v = inp.require_model(self.name)
        w = _ratio_w(inp)
        mat = np.column_stack([v, w * (inp.data.reward - q), w])
        return EpisodeStatistics(mat, lambda s, n: s[:, 0] / n + safe_ratio(s[:, 1], s[:, 2]))

    def estimate_policy_value(self, inp: OPEInput) -> float:
        _check_one_step(inp, self.name)
        q, v = inp.require_model(self.name)
        w = _ratio_w(inp)
        total = float(np.sum(w))
        correction = float(np.sum(w * (inp.data.reward - q)) / total) if total > 0 else 0.0
        return float(np.mean(v)) + correction
