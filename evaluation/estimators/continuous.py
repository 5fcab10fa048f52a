"""Continuous actions (a discount rate): kernel-smoothed importance sampling and doubly robust.

Kallus & Zhou (2018), "Policy evaluation and optimization with continuous treatments", AISTATS.
A deterministic candidate ``pi_e(s)`` has probability 0 of matching a logged continuous action, so
the ratio ``pi_e(a|s) / pi_b(a|s)`` is replaced by ``K_h(pi_e(s) - a) / f_b(a|s)`` with ``f_b``
the behaviour density of the logged action and ``K_h(u) = K(u/h)/h`` a kernel:

* kernel IS  ``V = 1/N sum_i sum_t gamma^t w^h_{i,t} r_{i,t}``  (per-decision, cumulative kernel
  weights; on one-step data exactly ``1/n sum K_h(pi(x_i) - a_i) r_i / f_b(a_i|x_i)``)
* kernel WIS the same, self-normalised per step (as WPDIS)
* kernel DR  ``1/N sum_i sum_t gamma^t [w^h_{i,t}(r - q(s, a)) + w^h_{i,t-1} q(s, pi_e(s))]``

Bandwidth rule (documented in evaluation/README.md): ``h = c * 1.06 * min(sd, IQR/1.34) *
n^(-1/5)`` over the logged actions (Silverman's rule; ``n^(-1/5)`` is the rate Kallus & Zhou
show to balance the O(h^2) smoothing bias against the O(1/(nh)) variance), ``c`` =
``bandwidth_scale`` (1), or a fixed ``bandwidth``. The estimators are biased by O(h^2).
"""

from __future__ import annotations

import numpy as np

from evaluation.config import KernelConfig
from evaluation.data import EpisodeData, FloatArray
from evaluation.errors import EvaluationError
from evaluation.estimators.base import OPEInput
from evaluation.estimators.doubly_robust import DoublyRobust
from evaluation.estimators.importance_sampling import PerDecisionIS, WeightedPerDecisionIS
from evaluation.statistics import EpisodeStatistics


def bandwidth(actions: FloatArray, config: KernelConfig | None = None) -> float:
    """The kernel bandwidth for these logged actions (see the module docstring)."""
    cfg = config or KernelConfig()
    if cfg.bandwidth is not None:
        return float(cfg.bandwidth)
    a = np.asarray(actions, dtype=np.float64)
    sd = float(np.std(a, ddof=1)) if len(a) > 1 else 0.0
    q75, q25 = np.quantile(a, [0.75, 0.25])
    spread = min(sd, float(q75 - q25) / 1.34) if q75 > q25 else sd
    if spread <= 0:
        raise EvaluationError("the logged continuous actions do not vary: no bandwidth")
    return float(cfg.bandwidth_scale * 1.06 * spread * len(a) ** (-0.2))


def kernel(u: FloatArray, kind: str = "gaussian") -> FloatArray:
    """Kernel density at ``u`` (integrates to 1)."""
    if kind == "gaussian":
        return np.asarray(np.exp(-0.5 * u**2) / np.sqrt(2 * np.pi))
    if kind == "epanechnikov":
        return np.asarray(np.where(np.abs(u) <= 1, 0.75 * (1 - u**2), 0.0))
    raise EvaluationError(f"unknown kernel {kind!r}")


def kernel_target_probability(
    data: EpisodeData, target_action: FloatArray, config: KernelConfig | None = None
) -> tuple[FloatArray, float]:
    """``K_h(pi_e(s_t) - a_t)`` per decision (the kernel stand-in for ``pi_e(a_t|s_t)``), and h."""
    if data.action_space.is_discrete:
        raise EvaluationError("kernel weights are for continuous action spaces")
    cfg = config or KernelConfig()
    target = np.asarray(target_action, dtype=np.float64).reshape(-1)
    if target.shape != (data.n_decisions,):
        raise EvaluationError("the candidate must give one action per decision")
    h = bandwidth(np.asarray(data.action, dtype=np.float64), cfg)
    u = (target - np.asarray(data.action, dtype=np.float64)) / h
    return kernel(u, cfg.kernel) / h, h


def _require_continuous(inp: OPEInput, name: str) -> None:
    if inp.data.action_space.is_discrete:
        raise EvaluationError(f"{name} is for continuous actions; use pdis / wpdis / dr")


class KernelIS(PerDecisionIS):
    """Kernel-smoothed per-decision IS (Kallus & Zhou 2018)."""

    name = "kernel_is"
    unbiased = False

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        _require_continuous(inp, self.name)
        return super().episode_statistics(inp)


class KernelWIS(WeightedPerDecisionIS):
    """Kernel-smoothed, per-step self-normalised IS."""

    name = "kernel_wis"

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        _require_continuous(inp, self.name)
        return super().episode_statistics(inp)


class KernelDR(DoublyRobust):
    """Kernel-smoothed doubly robust estimator (Kallus & Zhou 2018)."""

    name = "kernel_dr"
    unbiased = False

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        _require_continuous(inp, self.name)
        return super().episode_statistics(inp)
