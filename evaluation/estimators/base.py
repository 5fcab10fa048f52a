"""The common interface of every estimator (obp style) and the inputs they share.

Every estimator here is a smooth function of sums over episodes of per-episode statistics:
``value = combine(sum_i F[i, :], n)``. That one representation gives the point estimate, the
bootstrap over episodes (resample counts ``C``: ``combine(C @ F)``, all estimators from one set of
resamples, numerators and denominators of the self-normalised ones resampled together), the
jackknife (BCa acceleration, t-based lower bounds on pseudo-values) and the standard error.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from evaluation.data import EpisodeData, FloatArray
from evaluation.errors import EvaluationError
from evaluation.intervals import bootstrap_interval, shared_counts
from evaluation.statistics import EpisodeStatistics
from evaluation.weights import cumulative_weights, effective_sample_size


def per_step_matrix(data: EpisodeData, values: FloatArray) -> sp.csr_matrix:
    """Sparse (episodes x steps) matrix with each decision's value in its (episode, step) cell.

    Built directly in CSR form: the decisions are in (episode, step) order with steps increasing
    within each episode, so they already are its rows, in order (no conversion from COO).
    """
    indptr = np.append(data.first_row, data.n_decisions)
    return sp.csr_matrix(
        (np.asarray(values, dtype=np.float64), data.step, indptr),
        shape=(data.n_episodes, data.horizon),
    )


def per_episode_column(data: EpisodeData, values: FloatArray) -> FloatArray:
    """(N, 1) column of per-episode sums of a per-decision quantity."""
    return np.bincount(data.episode, weights=values, minlength=data.n_episodes)[:, None]


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (no weight at all on that step: no contribution)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


@dataclass(eq=False)
class OPEInput:
    """Everything the estimators need about one candidate on one logged dataset.

    Attributes:
        data: the logged episodes (with behaviour propensities filled in).
        target_probability: the candidate's probability of each LOGGED action (n,); for
            continuous actions the kernel value ``K_h(pi_e(s) - a)`` (see ``continuous.py``).
        target_distribution: the candidate's probability of every action (n, K), if known.
        q_logged: model prediction ``q(s_t, a_t)`` of the candidate's action value (n,).
        v_hat: model prediction ``v(s_t) = E_{a ~ pi_e} q(s_t, a)`` (n,).
        max_weight: cap on every per-decision ratio (None: no clipping).
    """

    data: EpisodeData
    target_probability: FloatArray
    target_distribution: FloatArray | None = None
    q_logged: FloatArray | None = None
    v_hat: FloatArray | None = None
    max_weight: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.data.n_decisions
        p = np.asarray(self.target_probability, dtype=np.float64)
        if p.shape != (n,):
            raise EvaluationError(
                f"target_probability must have one value per decision ({n}), got {p.shape}"
            )
        if not np.all(np.isfinite(p)) or np.any(p < 0):
            raise EvaluationError("candidate probabilities must be finite and >= 0")
        if self.data.action_space.is_discrete and np.any(p > 1 + 1e-9):
            raise EvaluationError("candidate probabilities above 1 for a discrete action space")
        self.target_probability = p
        if np.any(np.isnan(self.data.behaviour_propensity)):
            raise EvaluationError(
                "behaviour propensities are missing for some decisions: estimate them first "
                "(evaluation.propensity.fill_missing_propensities)"
            )
        dist = self.target_distribution
        if dist is not None:
            if dist.shape != (n, self.data.action_space.n):
                raise EvaluationError(
                    f"target_distribution must have shape ({n}, {self.data.action_space.n}), "
                    f"got {dist.shape}"
                )
            if np.any(dist < -1e-12) or not np.allclose(dist.sum(axis=1), 1.0, atol=1e-6):
                raise EvaluationError("each row of target_distribution must be a distribution")
        for name in ("q_logged", "v_hat"):
            arr = getattr(self, name)
            if arr is not None and np.shape(arr) != (n,):
                raise EvaluationError(f"{name} must have one value per decision ({n})")
            if arr is not None and not np.all(np.isfinite(arr)):
                raise EvaluationError(f"{name} contains NaN or infinite values")

    @property
    def has_model(self) -> bool:
        return self.q_logged is not None and self.v_hat is not None

    def require_model(self, estimator: str) -> tuple[FloatArray, FloatArray]:
        if self.q_logged is None or self.v_hat is None:
            raise EvaluationError(
                f"{estimator} needs model predictions q_logged and v_hat (fit a direct-method "
                "model first)"
            )
        return self.q_logged, self.v_hat

    @cached_property
    def raw_rho(self) -> FloatArray:
        """Unclipped per-decision ratios."""
        return self.target_probability / self.data.behaviour_propensity

    @cached_property
    def rho(self) -> FloatArray:
        """Per-decision ratios, clipped at ``max_weight`` when asked."""
        if self.max_weight is None:
            return self.raw_rho
        return np.minimum(self.raw_rho, self.max_weight)

    @cached_property
    def _weights(self) -> tuple[FloatArray, FloatArray]:
        return cumulative_weights(self.data, self.rho)

    @property
    def w(self) -> FloatArray:
        """Cumulative weights ``w_t`` per decision."""
        return self._weights[0]

    @property
    def w_prev(self) -> FloatArray:
        """Cumulative weights ``w_{t-1}`` per decision (1 on each episode's first decision)."""
        return self._weights[1]

    @cached_property
    def weighted_rewards(self) -> FloatArray:
        """``gamma^t w_t r_t`` per decision (the per-decision estimators' numerators)."""
        return self.data.discount * self.w * self.data.reward

    @cached_property
    def trajectory_weights(self) -> FloatArray:
        """Each episode's final cumulative weight."""
        return self.w[self.data.last_row]

    def unclipped(self) -> OPEInput:
        """The same input without clipping (itself when it is not clipped)."""
        if self.max_weight is None:
            return self
        return OPEInput(
            data=self.data,
            target_probability=self.target_probability,
            target_distribution=self.target_distribution,
            q_logged=self.q_logged,
            v_hat=self.v_hat,
            max_weight=None,
            notes=self.notes,
        )


def weight_diagnostics(inp: OPEInput) -> dict[str, float]:
    """ESS, quantiles, maximum and the largest share of the trajectory weights."""
    tw = inp.trajectory_weights
    total = float(tw.sum())
    n = len(tw)
    ess = effective_sample_size(tw)
    q50, q90, q99 = np.quantile(tw, [0.5, 0.9, 0.99])
    ess_steps = [
        effective_sample_size(inp.w[inp.data.step == t]) / max(1, int(np.sum(inp.data.step == t)))
        for t in range(min(inp.data.horizon, 50))
    ]
    return {
        "ess": ess,
        "ess_fraction": ess / n,
        "min_step_ess_fraction": float(min(ess_steps)),
        "weight_mean": total / n,
        "weight_p50": float(q50),
        "weight_p90": float(q90),
        "weight_p99": float(q99),
        "weight_max": float(tw.max()),
        "max_weight_share": float(tw.max() / total) if total > 0 else 1.0,
        "zero_weight_fraction": float(np.mean(tw == 0)),
        "clipped_fraction": float(
            np.mean(inp.raw_rho > inp.max_weight) if inp.max_weight is not None else 0.0
        ),
    }


class OffPolicyEstimator(ABC):
    """Base class: ``estimate_policy_value``, ``estimate_interval`` and ``diagnostics``.

    Subclasses implement :meth:`episode_statistics`; the rest follows from it.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False
    uses_weights: ClassVar[bool] = True
    unbiased: ClassVar[bool] = False

    @abstractmethod
    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        """Per-episode statistics and their combination (see the module docstring)."""

    def estimate_policy_value(self, inp: OPEInput) -> float:
        """The estimated value of the candidate: mean discounted return per episode."""
        return self.episode_statistics(inp).value()

    def estimate_interval(
        self,
        inp: OPEInput,
        *,
        confidence: float = 0.95,
        n_resamples: int = 1000,
        method: str = "bca",
        seed: int = 0,
    ) -> tuple[float, float]:
        """Bootstrap-over-episodes interval (``percentile`` or ``bca``).

        The resample counts for (episodes, ``n_resamples``, ``seed``) are drawn once per process
        and shared by every estimator and candidate (``evaluation.intervals.shared_counts``):
        the same interval as drawing them afresh, at the cost of one matrix product. The
        jackknife is computed only for ``bca``.
        """

        stats = self.episode_statistics(inp)
        shared = n_resamples > 1
        counts = shared_counts(stats.n_episodes, n_resamples, seed=seed) if shared else None
        return bootstrap_interval(
            stats,
            confidence=confidence,
            n_resamples=n_resamples,
            method=method,
            seed=seed,
            counts=counts,
        )

    def diagnostics(self, inp: OPEInput) -> dict[str, float]:
        """Weight diagnostics (for estimators that use importance weights)."""
        return weight_diagnostics(inp) if self.uses_weights else {}
