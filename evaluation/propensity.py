"""Missing behaviour propensities: a cross-fitted behaviour model, with its calibration.

The behaviour model is offline_rl's (``offline_rl.behaviour.fit_predict_crossfit``: a
multinomial logit for discrete actions, a Beta regression for a continuous rate), cross-fitted
with folds grouped by episode: each decision's propensity comes from a model that never saw its
episode, so the weights do not overfit the very decisions they weight. ``backend = "sklearn"``
(or offline_rl missing) uses evaluation's own fallback: a multinomial logistic regression on the
standardised observation and one-hot step, or a linear-Gaussian density ``a ~ N(x beta, s^2)``.

The output flags every filled propensity as ``estimated`` and reports the model's calibration
(log loss, Brier score, expected calibration error over (decision, action) pairs, the reliability
table) and, where some propensities were logged, its error against them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import structlog

from evaluation.calibration import reliability
from evaluation.config import BehaviourModelConfig
from evaluation.data import EpisodeData, FloatArray
from evaluation.errors import EvaluationError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CalibrationReport:
    """How well the estimated behaviour model fits the logged actions."""

    method: str
    folds: int
    n_filled: int
    share_filled: float
    log_loss: float
    brier: float | None
    expected_calibration_error: float | None
    reliability: list[dict[str, float]] = field(default_factory=list)
    mean_abs_error_vs_logged: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _features(data: EpisodeData) -> FloatArray:
    if data.observation is None:
        raise EvaluationError(
            "propensities are missing and the transitions have no observations to estimate them"
        )
    obs = np.asarray(data.observation, dtype=np.float64)
    std = obs.std(axis=0)
    std[std == 0] = 1.0
    n_steps = min(data.horizon, 10)
    steps = np.zeros((data.n_decisions, n_steps))
    steps[np.arange(data.n_decisions), np.minimum(data.step, n_steps - 1)] = 1.0
    return np.hstack([(obs - obs.mean(axis=0)) / std, steps])


def _fold_of_rows(data: EpisodeData, folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, folds, size=data.n_episodes)[data.episode]


def cross_fitted_action_probabilities(
    data: EpisodeData, config: BehaviourModelConfig | None = None
) -> FloatArray:
    """Out-of-fold behaviour probabilities of every action, (n, K), floored and renormalised."""
    from sklearn.linear_model import LogisticRegression

    cfg = config or BehaviourModelConfig()
    k = data.action_space.n
    x = _features(data)
    fold = _fold_of_rows(data, cfg.folds, cfg.seed)
    probs = np.zeros((data.n_decisions, k))
    for f in range(cfg.folds):
        test = fold == f
        if not test.any():
            continue
        train = ~test
        classes = np.unique(data.action[train])
        if len(classes) == 1:
            probs[np.ix_(test, classes)] = 1.0
            continue
        model = LogisticRegression(C=cfg.C, max_iter=500)
        model.fit(x[train], data.action[train])
        probs[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    probs = np.maximum(probs, cfg.min_propensity)
    return np.asarray(probs / probs.sum(axis=1, keepdims=True))


def _calibration(
    probs: FloatArray, actions: np.ndarray, bins: int
) -> tuple[float, float, list[dict[str, float]]]:
    n = probs.shape[0]
    onehot = np.zeros_like(probs)
    onehot[np.arange(n), actions] = 1.0
    brier = float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    ece, table = reliability(probs.ravel(), onehot.ravel(), bins)
    return brier, ece, table


def _gaussian_density(data: EpisodeData, cfg: BehaviourModelConfig) -> tuple[FloatArray, float]:
    """Cross-fitted linear-Gaussian density of the logged continuous action; and its log loss."""
    x = np.hstack([_features(data), np.ones((data.n_decisions, 1))])
    a = np.asarray(data.action, dtype=np.float64)
    fold = _fold_of_rows(data, cfg.folds, cfg.seed)
    dens = np.empty(data.n_decisions)
    reg = 1.0 / cfg.C * np.eye(x.shape[1])
    for f in range(cfg.folds):
        test = fold == f
        if not test.any():
            continue
        train = ~test
        beta = np.linalg.solve(x[train].T @ x[train] + reg, x[train].T @ a[train])
        resid = a[train] - x[train] @ beta
        sigma = max(float(np.std(resid)), 1e-6)
        z = (a[test] - x[test] @ beta) / sigma
        dens[test] = np.exp(-0.5 * z**2) / (np.sqrt(2 * np.pi) * sigma)
    dens = np.maximum(dens, cfg.min_propensity)
    return dens, float(-np.mean(np.log(dens)))


def _offline_rl_crossfit(
    data: EpisodeData, cfg: BehaviourModelConfig
) -> tuple[FloatArray, FloatArray | None] | None:
    """Out-of-fold (propensity, distribution) from offline_rl's behaviour model, if available."""
    if cfg.backend != "offline_rl":
        return None
    try:
        from offline_rl.behaviour import fit_predict_crossfit
        from offline_rl.config import BehaviourConfig
    except ImportError:
        return None
    if data.observation is None:
        raise EvaluationError(
            "propensities are missing and the transitions have no observations to estimate them"
        )
    space = data.action_space
    spec: dict[str, Any] = (
        {"type": "discrete", "n": space.n}
        if space.is_discrete
        else {"type": "continuous", "low": [space.low], "high": [space.high]}
    )
    result = fit_predict_crossfit(
        np.asarray(data.observation, dtype=np.float64),
        data.action,
        data.episode,
        spec,
        BehaviourConfig(C=cfg.C, n_folds=cfg.folds),
        n_folds=cfg.folds,
    )
    if result.probabilities is not None:
        probs = np.maximum(result.probabilities, cfg.min_propensity)
        probs = probs / probs.sum(axis=1, keepdims=True)
        return probs[np.arange(data.n_decisions), data.action], probs
    return np.maximum(np.asarray(result.propensity, dtype=np.float64), cfg.min_propensity), None


def fill_missing_propensities(
    data: EpisodeData,
    config: BehaviourModelConfig | None = None,
    *,
    need_distribution: bool = False,
) -> tuple[EpisodeData, CalibrationReport | None]:
    """Estimate the behaviour propensities that are missing (NaN); keep the logged ones.

    With ``need_distribution`` (discrete only) the full behaviour distribution per decision is
    estimated even when every propensity is logged (needed for the behaviour policy as a
    candidate in the direct method, and for per-decision support diagnostics).
    Returns the completed data and the calibration report (None when nothing was estimated).
    """
    cfg = config or BehaviourModelConfig()
    missing = np.isnan(data.behaviour_propensity)
    if not missing.any() and not need_distribution:
        return data, None
    if not missing.any() and data.behaviour_action_probabilities is not None:
        return data, None
    source = (
        data.propensity_source.copy()
        if data.propensity_source is not None
        else np.where(missing, "missing", "logged")
    ).astype(object)
    external = _offline_rl_crossfit(data, cfg)
    dist: FloatArray | None
    if external is not None:
        est, dist = external
        log_loss = float(-np.mean(np.log(est)))
        if dist is not None:
            brier, ece, table = _calibration(dist, data.action, cfg.calibration_bins)
            method = "offline_rl multinomial logit, cross-fitted by episode"
        else:
            brier, ece, table = None, None, []
            method = "offline_rl Beta regression density, cross-fitted by episode"
    elif data.action_space.is_discrete:
        dist = cross_fitted_action_probabilities(data, cfg)
        est = dist[np.arange(data.n_decisions), data.action]
        brier, ece, table = _calibration(dist, data.action, cfg.calibration_bins)
        log_loss = float(-np.mean(np.log(est)))
        method = "cross-fitted multinomial logistic regression"
    else:
        est, log_loss = _gaussian_density(data, cfg)
        brier, ece, table, dist = None, None, [], None
        method = "cross-fitted linear-Gaussian density"
    filled = np.where(missing, est, data.behaviour_propensity)
    source[missing] = "estimated"
    logged = ~missing
    mae = (
        float(np.mean(np.abs(est[logged] - data.behaviour_propensity[logged])))
        if logged.any() and missing.any()
        else None
    )
    report = CalibrationReport(
        method=method,
        folds=cfg.folds,
        n_filled=int(missing.sum()),
        share_filled=float(missing.mean()),
        log_loss=log_loss,
        brier=brier,
        expected_calibration_error=ece,
        reliability=table,
        mean_abs_error_vs_logged=mae,
    )
    log.info(
        "behaviour model fitted",
        method=method,
        filled=report.n_filled,
        ece=ece,
        log_loss=round(log_loss, 4),
    )
    return data.with_propensities(
        filled, source=source.astype(str), action_probabilities=dist
    ), report
