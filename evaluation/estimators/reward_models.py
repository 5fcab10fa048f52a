"""Models of the outcome on (context, action) that share what they learn across actions.

A per-action regression learns each action's value from that action's decisions alone: with
dozens of actions and a few dozen clicks in all, most actions have nothing to learn from. The
models here see the action as an input, so every decision informs every action's prediction:

* the design ``[x, one-hot(a), s * (x (x) one-hot(a))]``: shared context terms, an action effect
  and action-specific context terms; ``s = 1 / sqrt(interaction_penalty)`` makes the L2 penalty
  on the action-specific terms ``interaction_penalty`` times the shared ones' (shrinkage
  towards a model common to all actions, the way a hierarchical model pools);
* :class:`JointRidgeQ`: a ridge regression on that design (closed form, reused across the
  Bellman backups of fitted Q evaluation, so it also serves as a multi-step Q model);
* :func:`fit_logistic`: a logistic regression on that design for two-valued outcomes (clicks):
  probabilities calibrated by construction (the log-loss fit matches predicted and observed
  rates on the design's columns);
* :func:`fit_hgb_classifier`: gradient-boosted trees on ``[x, a]`` (``a`` categorical), with a
  sigmoid (Platt) calibration fitted out of fold (scikit-learn's ``CalibratedClassifierCV``).

:func:`model_quality` measures a model's held-out fit (the predictions of a cross-fitted model
on the decisions it did not see): mean squared error against a constant, and for two-valued
outcomes log loss, Brier score and expected calibration error with its reliability table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from evaluation.calibration import reliability
from evaluation.data import FloatArray

_EPS = 1e-6

ActionScores = Callable[[FloatArray], FloatArray]
"""Features (m, p) -> predicted outcome of every action (m, K)."""


def two_values(reward: FloatArray) -> tuple[float, float] | None:
    """``(low, high)`` when the rewards take exactly two values (a binary outcome), else None."""
    values = np.unique(reward)
    if len(values) != 2:
        return None
    return float(values[0]), float(values[1])


def joint_design(x: FloatArray, action: np.ndarray, k: int, scale: float) -> sp.csr_matrix:
    """``[x, one-hot(a), scale * x (x) one-hot(a)]`` as a sparse matrix (n, p + K + p K)."""
    n, p = x.shape
    a = np.asarray(action, dtype=np.int64)
    rows = np.concatenate([np.repeat(np.arange(n), p), np.arange(n), np.repeat(np.arange(n), p)])
    cols = np.concatenate(
        [
            np.tile(np.arange(p), n),
            p + a,
            (p + k + a[:, None] * p + np.arange(p)[None, :]).ravel(),
        ]
    )
    vals = np.concatenate([x.ravel(), np.ones(n), (scale * x).ravel()])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, p + k + p * k))


def joint_scores(x: FloatArray, coef: FloatArray, k: int, scale: float) -> FloatArray:
    """Linear scores of every action from the joint design's coefficients, (m, K).

    Computed from the coefficients (shared + action effect + action-specific), never by
    expanding the design for each action: O(m p K).
    """
    p = x.shape[1]
    shared = x @ coef[:p]
    effect = coef[p : p + k]
    specific = coef[p + k :].reshape(k, p)
    return np.asarray(shared[:, None] + effect[None, :] + scale * (x @ specific.T))


class JointRidgeQ:
    """One ridge regression on the joint (context, action) design, factorised once.

    ``fit(x, target)`` solves for new targets with the same factorisation (fitted Q evaluation
    calls it once per Bellman backup); ``predict_all(x)`` gives every action's value (m, K).
    """

    def __init__(
        self, x: FloatArray, action: np.ndarray, k: int, alpha: float, interaction_penalty: float
    ) -> None:
        self.k = k
        self.scale = 1.0 / float(np.sqrt(interaction_penalty))
        self.design = joint_design(x, action, k, self.scale)
        gram = np.asarray((self.design.T @ self.design).toarray())
        gram[np.diag_indices_from(gram)] += max(alpha, 1e-8)
        self.chol = np.linalg.cholesky(gram)
        self.coef = np.zeros(gram.shape[0])

    def fit(self, x: FloatArray, target: FloatArray) -> None:
        from scipy.linalg import solve_triangular

        rhs = np.asarray(self.design.T @ target)
        y = solve_triangular(self.chol, rhs, lower=True)
        self.coef = np.asarray(solve_triangular(self.chol.T, y, lower=False))

    def predict_all(self, x: FloatArray) -> FloatArray:
        return joint_scores(x, self.coef, self.k, self.scale)


def _constant(value: float, k: int) -> ActionScores:
    def predict(x: FloatArray) -> FloatArray:
        return np.full((x.shape[0], k), value)

    return predict


def fit_logistic(
    x: FloatArray,
    action: np.ndarray,
    outcome: np.ndarray,
    k: int,
    *,
    C: float,
    interaction_penalty: float,
) -> ActionScores:
    """Logistic regression of a 0/1 ``outcome`` on the joint design; returns P(outcome = 1)."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(outcome)) < 2:
        return _constant(float(outcome[0]), k)
    scale = 1.0 / float(np.sqrt(interaction_penalty))
    model = LogisticRegression(C=C, max_iter=1000, tol=1e-6)
    model.fit(joint_design(x, action, k, scale), outcome)
    coef = np.asarray(model.coef_[0], dtype=np.float64)
    intercept = float(model.intercept_[0])

    def predict(xs: FloatArray) -> FloatArray:
        z = joint_scores(xs, coef, k, scale) + intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    return predict


def fit_hgb_classifier(
    x: FloatArray, action: np.ndarray, outcome: np.ndarray, k: int, *, max_iter: int, seed: int
) -> ActionScores:
    """Gradient-boosted trees on ``[x, a]`` (``a`` categorical), sigmoid-calibrated out of fold."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier

    if len(np.unique(outcome)) < 2 or min(np.bincount(outcome)) < 3:
        return _constant(float(np.mean(outcome)), k)
    p = x.shape[1]
    trees = HistGradientBoostingClassifier(
        max_iter=max_iter, random_state=seed, categorical_features=[p], learning_rate=0.1
    )
    model = CalibratedClassifierCV(trees, method="sigmoid", cv=3)
    model.fit(np.hstack([x, action[:, None].astype(np.float64)]), outcome)

    def predict(xs: FloatArray) -> FloatArray:
        m = xs.shape[0]
        stacked = np.vstack([np.hstack([xs, np.full((m, 1), float(a))]) for a in range(k)])
        prob = np.asarray(model.predict_proba(stacked)[:, 1])
        return np.asarray(prob.reshape(k, m).T)

    return predict


@dataclass(frozen=True)
class ModelQuality:
    """How well the model ``q`` predicts its target on decisions it was not fitted on.

    ``target``: the observed reward (one-step) or the Bellman target ``r + gamma^gap v(s')``
    (multi-step). ``baseline_*``: the same score for the constant prediction (the mean target):
    a model worth its name beats it. The calibration figures are for two-valued rewards.
    """

    model: str
    target: str
    held_out: bool
    folds: int
    n: int
    mse: float
    baseline_mse: float
    r2: float | None
    outcome: Literal["binary", "continuous"] = "continuous"
    log_loss: float | None = None
    baseline_log_loss: float | None = None
    brier: float | None = None
    expected_calibration_error: float | None = None
    reliability: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for the evaluation's notes."""
        where = f"held out ({self.folds}-fold cross-fit)" if self.held_out else "in sample"
        if self.log_loss is not None:
            return (
                f"reward model {self.model}, {where}: log loss {self.log_loss:.4f} (constant "
                f"rate {self.baseline_log_loss:.4f}), calibration error "
                f"{self.expected_calibration_error:.4f}, MSE {self.mse:.4g}"
            )
        r2 = "n/a" if self.r2 is None else f"{self.r2:.3f}"
        return (
            f"model {self.model}, {where}: MSE against the {self.target} {self.mse:.4g} "
            f"(constant {self.baseline_mse:.4g}, R^2 {r2})"
        )


def model_quality(
    prediction: FloatArray,
    target: FloatArray,
    *,
    model: str,
    target_name: str,
    folds: int,
    binary: tuple[float, float] | None,
    bins: int = 10,
) -> ModelQuality:
    """Scores of ``prediction`` against ``target`` (out of fold when ``folds`` > 1)."""
    err = prediction - target
    mse = float(np.mean(err**2))
    base = float(np.var(target))
    quality = ModelQuality(
        model=model,
        target=target_name,
        held_out=folds > 1,
        folds=folds,
        n=len(target),
        mse=mse,
        baseline_mse=base,
        r2=None if base <= 0 else 1.0 - mse / base,
    )
    if binary is None:
        return quality
    low, high = binary
    y = (target == high).astype(np.float64)
    prob = np.clip((prediction - low) / (high - low), _EPS, 1 - _EPS)
    rate = float(np.clip(y.mean(), _EPS, 1 - _EPS))
    ece, table = reliability(prob, y, bins)
    return ModelQuality(
        **{
            **asdict(quality),
            "outcome": "binary",
            "log_loss": float(-np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob))),
            "baseline_log_loss": float(-(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))),
            "brier": float(np.mean((prob - y) ** 2)),
            "expected_calibration_error": ece,
            "reliability": table,
        }
    )
