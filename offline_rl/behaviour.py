"""Models of the logging (behaviour) policy, fitted on the logged states and actions.

* Discrete actions: a multinomial logit (scikit-learn ``LogisticRegression``, nearly unpenalised
  by default), optionally recalibrated with ``CalibratedClassifierCV``. A softmax of linear
  scores is the usual shape of a logging policy; maximum likelihood makes the fitted
  probabilities calibrated within that family.
* Continuous actions: a Beta regression on the scaled rate ``u = (a - low) / (high - low)``:
  ``u ~ Beta(phi * m(x), phi * (1 - m(x)))`` with ``m(x) = sigmoid(x @ w + b)`` and one
  concentration ``phi``, fitted by maximum likelihood (L-BFGS). The density is returned in the
  action's own units (divided by ``high - low``), as the logs record it.

``fit_predict_crossfit`` gives out-of-fold propensities (folds grouped by episode) for OPE:
a propensity is never predicted by a model that saw its own episode. ``fill_propensities``
fills the missing ones (``propensity_source = 'estimated'``) and, where they are logged,
``propensity_check`` reports the estimate beside them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
import structlog
from numpy.typing import NDArray
from scipy import optimize, special
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression

from etl.manifest import ActionSpace, DiscreteActionSpace, as_action_space
from offline_rl.config import BehaviourConfig
from offline_rl.data import TransitionManifest
from offline_rl.errors import TrainingError
from offline_rl.splits import crossfit_folds

log = structlog.get_logger(__name__)

_EPS = 1e-6


class BetaRegression(BaseEstimator):
    """Beta regression with a logit link for the mean and a constant concentration.

    ``fit(X, u)`` with ``u`` in (0, 1); ``density(X, u)`` and ``mean(X)``.
    """

    def __init__(self, l2: float = 1e-4, max_iter: int = 500) -> None:
        self.l2 = l2
        self.max_iter = max_iter

    def _unpack(self, theta: NDArray[np.float64], d: int) -> tuple[Any, float, float]:
        return theta[:d], float(theta[d]), float(theta[d + 1])

    def fit(self, X: NDArray[Any], u: NDArray[Any]) -> BetaRegression:
        x = np.asarray(X, dtype=np.float64)
        y = np.clip(np.asarray(u, dtype=np.float64).reshape(-1), _EPS, 1.0 - _EPS)
        n, d = x.shape
        log_y, log_1my = np.log(y), np.log1p(-y)

        def nll(theta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
            w, b, log_phi = theta[:d], theta[d], theta[d + 1]
            phi = np.exp(log_phi)
            m = special.expit(x @ w + b)
            a, c = phi * m, phi * (1.0 - m)
            ll = (
                special.gammaln(phi)
                - special.gammaln(a)
                - special.gammaln(c)
                + (a - 1.0) * log_y
                + (c - 1.0) * log_1my
            )
            # derivatives of the log-likelihood
            dig_a, dig_c = special.digamma(a), special.digamma(c)
            d_m = phi * (log_y - log_1my - dig_a + dig_c)  # d ll / d m
            d_eta = d_m * m * (1.0 - m)
            d_phi = (
                special.digamma(phi)
                - m * dig_a
                - (1.0 - m) * dig_c
                + m * log_y
                + (1.0 - m) * log_1my
            )
            grad = np.empty_like(theta)
            grad[:d] = -(x.T @ d_eta) / n + 2.0 * self.l2 * w
            grad[d] = -d_eta.mean()
            grad[d + 1] = -(d_phi * phi).mean()
            value = -ll.mean() + self.l2 * float(w @ w)
            return float(value), grad

        mean_y = float(y.mean())
        var_y = float(y.var()) or 1e-3
        phi0 = max(mean_y * (1.0 - mean_y) / var_y - 1.0, 1.0)
        theta0 = np.zeros(d + 2)
        theta0[d] = special.logit(np.clip(mean_y, 0.01, 0.99))
        theta0[d + 1] = np.log(phi0)
        result = optimize.minimize(
            nll, theta0, jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter}
        )
        self.coef_, self.intercept_, log_phi = self._unpack(result.x, d)
        self.phi_ = float(np.exp(log_phi))
        self.converged_ = bool(result.success)
        return self

    def mean(self, X: NDArray[Any]) -> NDArray[np.float64]:
        return np.asarray(special.expit(np.asarray(X, np.float64) @ self.coef_ + self.intercept_))

    def density(self, X: NDArray[Any], u: NDArray[Any]) -> NDArray[np.float64]:
        m = self.mean(X)
        y = np.clip(np.asarray(u, dtype=np.float64).reshape(-1), _EPS, 1.0 - _EPS)
        a, c = self.phi_ * m, self.phi_ * (1.0 - m)
        log_pdf = (a - 1.0) * np.log(y) + (c - 1.0) * np.log1p(-y) - special.betaln(a, c)
        return np.asarray(np.exp(log_pdf))


class DiscreteBehaviourModel(BaseEstimator):
    """Multinomial logit of the logged action given the state (scikit-learn conventions).

    ``fit(X, actions)`` sets ``estimator_`` (the fitted ``LogisticRegression``, or the
    ``CalibratedClassifierCV`` around it) and ``classes_`` (the action indices seen in the logs);
    actions never logged get probability 0.
    """

    def __init__(
        self, n_actions: int, C: float = 1e4, max_iter: int = 500, calibration: str = "none"
    ) -> None:
        self.n_actions = n_actions
        self.C = C
        self.max_iter = max_iter
        self.calibration = calibration

    def fit(self, X: NDArray[Any], actions: NDArray[Any]) -> DiscreteBehaviourModel:
        """Fit on logged states (n, F) and action indices (n,)."""
        x = np.asarray(X, dtype=np.float64)
        y = np.asarray(actions).astype(np.int64).reshape(-1)
        base = LogisticRegression(C=self.C, max_iter=self.max_iter)
        model: Any = base
        if self.calibration != "none":
            model = CalibratedClassifierCV(base, method=self.calibration, cv=3)
        self.estimator_ = model.fit(x, y)
        self.classes_ = np.asarray(self.estimator_.classes_, dtype=np.int64)
        return self

    def predict_proba(self, X: NDArray[Any]) -> NDArray[np.float64]:
        """(n, K) action probabilities."""
        _check_fitted(self)
        x = np.asarray(X, dtype=np.float64)
        probs = np.zeros((x.shape[0], self.n_actions))
        probs[:, self.classes_] = self.estimator_.predict_proba(x)
        return probs

    def propensity(self, X: NDArray[Any], actions: NDArray[Any]) -> NDArray[np.float64]:
        """Probability of each logged action."""
        a = np.asarray(actions).astype(np.int64).reshape(-1)
        return self.predict_proba(X)[np.arange(a.shape[0]), a]

    def mean_action(self, X: NDArray[Any]) -> NDArray[np.float64]:
        """Expected action index under the model."""
        return self.predict_proba(X) @ np.arange(self.n_actions, dtype=np.float64)


class BetaBehaviourModel(BaseEstimator):
    """Beta regression of a continuous action in ``[low, high]`` (scikit-learn conventions).

    ``fit(X, actions)`` sets ``estimator_`` (the fitted :class:`BetaRegression` on the scaled
    action ``(a - low) / (high - low)``); densities are per unit of the action.
    """

    def __init__(self, low: float, high: float, max_iter: int = 500) -> None:
        self.low = low
        self.high = high
        self.max_iter = max_iter

    def _scale(self, actions: NDArray[Any]) -> NDArray[np.float64]:
        a = np.asarray(actions, dtype=np.float64).reshape(-1)
        return (a - self.low) / (self.high - self.low)

    def fit(self, X: NDArray[Any], actions: NDArray[Any]) -> BetaBehaviourModel:
        """Fit on logged states (n, F) and actions (n,) or (n, 1)."""
        x = np.asarray(X, dtype=np.float64)
        self.estimator_ = BetaRegression(max_iter=self.max_iter).fit(x, self._scale(actions))
        return self

    def propensity(self, X: NDArray[Any], actions: NDArray[Any]) -> NDArray[np.float64]:
        """Density of each logged action, in the action's units."""
        _check_fitted(self)
        x = np.asarray(X, dtype=np.float64)
        return self.estimator_.density(x, self._scale(actions)) / (self.high - self.low)

    def predict_proba(self, X: NDArray[Any]) -> NDArray[np.float64]:
        """Not defined for a continuous action."""
        raise TrainingError("predict_proba is for discrete action spaces; use propensity")

    def mean_action(self, X: NDArray[Any]) -> NDArray[np.float64]:
        """Mean action under the model."""
        _check_fitted(self)
        m = self.estimator_.mean(np.asarray(X, np.float64))
        return np.asarray(self.low + (self.high - self.low) * m)


BehaviourModel = DiscreteBehaviourModel | BetaBehaviourModel
"""The logging policy's model for one action space."""


def _check_fitted(model: BaseEstimator) -> None:
    if not hasattr(model, "estimator_"):
        raise TrainingError("the behaviour model is not fitted")


def behaviour_model(
    action_space: ActionSpace | Mapping[str, Any], config: BehaviourConfig | None = None
) -> BehaviourModel:
    """The unfitted model for a manifest's action space (discrete: logit; continuous: Beta)."""
    config = config or BehaviourConfig()
    space = as_action_space(action_space)
    if isinstance(space, DiscreteActionSpace):
        return DiscreteBehaviourModel(space.n, config.C, config.max_iter, config.calibration)
    if space.size != 1:
        raise TrainingError("the continuous behaviour model handles one action dimension")
    return BetaBehaviourModel(space.low[0], space.high[0], config.max_iter)


@dataclasses.dataclass(frozen=True)
class CrossfitResult:
    """Out-of-fold behaviour estimates, one per row."""

    propensity: NDArray[np.float64]  # (n,) of the logged action
    probabilities: NDArray[np.float64] | None  # (n, K) discrete only
    fold: NDArray[np.int64]  # (n,) fold whose model predicted the row


def fit_predict_crossfit(
    observations: NDArray[Any],
    actions: NDArray[Any],
    groups: NDArray[Any],
    action_space: ActionSpace | Mapping[str, Any],
    config: BehaviourConfig | None = None,
    n_folds: int | None = None,
) -> CrossfitResult:
    """Cross-fitted behaviour estimates: each fold predicted by a model fitted on the others.

    ``groups`` (e.g. episode ids) keeps each episode within one fold. With a single group the
    model is fitted on everything (no held-out fold is possible) and a warning is logged.
    """
    config = config or BehaviourConfig()
    x = np.asarray(observations, dtype=np.float64)
    a = np.asarray(actions)
    n = x.shape[0]
    space = as_action_space(action_space)
    prop = np.empty(n)
    probs = np.empty((n, space.size)) if isinstance(space, DiscreteActionSpace) else None
    fold = np.zeros(n, dtype=np.int64)
    for i, (fit_idx, pred_idx) in enumerate(crossfit_folds(groups, n_folds or config.n_folds)):
        model = behaviour_model(space, config).fit(x[fit_idx], a[fit_idx])
        prop[pred_idx] = model.propensity(x[pred_idx], a[pred_idx])
        if probs is not None:
            probs[pred_idx] = model.predict_proba(x[pred_idx])
        fold[pred_idx] = i
    return CrossfitResult(prop, probs, fold)


def _frame_arrays(frame: pl.DataFrame, discrete: bool) -> tuple[Any, Any, Any]:
    obs = np.asarray(frame["observation"].to_numpy(), dtype=np.float64)
    act = frame["action"].to_numpy()
    if not discrete:
        act = np.asarray(act, dtype=np.float64).reshape(len(frame), -1)[:, 0]
    return obs, act, frame["episode_id"].to_numpy()


def propensity_check(
    logged: NDArray[Any],
    estimated: NDArray[Any],
    probabilities: NDArray[Any] | None = None,
    actions: NDArray[Any] | None = None,
    n_bins: int = 10,
) -> dict[str, float]:
    """The estimate beside the logged propensities.

    ``mae`` and ``relative_mae`` (mean |est - logged| / logged), ``log_ratio_sd`` (spread of
    log(est / logged)), and for discrete spaces with the (n, K) ``probabilities`` and logged
    ``actions`` the expected calibration error ``ece`` (bins of predicted probability over every
    (decision, action) pair against the empirical frequency of that action).
    """
    lg = np.asarray(logged, dtype=np.float64)
    est = np.asarray(estimated, dtype=np.float64)
    ok = np.isfinite(lg) & (lg > 0)
    if not ok.any():
        return {}
    lg, est = lg[ok], est[ok]
    out = {
        "n": float(ok.sum()),
        "mae": float(np.mean(np.abs(est - lg))),
        "relative_mae": float(np.mean(np.abs(est - lg) / lg)),
        "log_ratio_sd": float(np.std(np.log(np.maximum(est, 1e-12) / lg))),
    }
    if probabilities is not None and actions is not None:
        p = np.asarray(probabilities, dtype=np.float64)
        chosen = np.zeros_like(p)
        chosen[np.arange(p.shape[0]), np.asarray(actions, np.int64)] = 1.0
        flat_p, flat_y = p.reshape(-1), chosen.reshape(-1)
        bins = np.minimum((flat_p * n_bins).astype(np.int64), n_bins - 1)
        mean_p = np.bincount(bins, weights=flat_p, minlength=n_bins)
        mean_y = np.bincount(bins, weights=flat_y, minlength=n_bins)
        out["ece"] = float(np.abs(mean_p - mean_y).sum() / flat_p.shape[0])
    return out


def fill_propensities(
    frame: pl.DataFrame,
    manifest: TransitionManifest,
    config: BehaviourConfig | None = None,
) -> tuple[pl.DataFrame, dict[str, float]]:
    """Fill missing ``behaviour_propensity`` with cross-fitted estimates.

    Filled rows get ``propensity_source = 'estimated'``; logged ones are kept. Returns the frame
    (with an extra ``estimated_propensity`` column for every row) and ``propensity_check`` of the
    estimate against the logged values (empty when none is logged).
    """
    obs, act, groups = _frame_arrays(frame, manifest.discrete)
    fitted = fit_predict_crossfit(obs, act, groups, manifest.action_space, config)
    logged = (
        frame["behaviour_propensity"].cast(pl.Float64).to_numpy()
        if "behaviour_propensity" in frame.columns
        else np.full(len(frame), np.nan)
    )
    logged = np.where(np.isnan(logged), np.nan, logged)
    check = propensity_check(
        logged,
        fitted.propensity,
        fitted.probabilities,
        act if manifest.discrete else None,
    )
    missing = np.isnan(logged)
    source = (
        frame["propensity_source"]
        if "propensity_source" in frame.columns
        else pl.Series(["missing"] * len(frame))
    )
    out = frame.with_columns(
        pl.Series("behaviour_propensity", np.where(missing, fitted.propensity, logged)),
        pl.when(pl.Series(missing))
        .then(pl.lit("estimated"))
        .otherwise(source)
        .alias("propensity_source"),
        pl.Series("estimated_propensity", fitted.propensity),
    )
    log.info("propensities_filled", estimated=int(missing.sum()), **check)
    return out, check


def behaviour_report(
    train: pl.DataFrame,
    valid: pl.DataFrame,
    manifest: TransitionManifest,
    config: BehaviourConfig | None = None,
) -> dict[str, float]:
    """Fit the behaviour model on ``train`` and check it against the propensities logged in
    ``valid`` (held-out episodes; ``train`` itself when ``valid`` is empty).

    Returns ``propensity_check``'s figures plus ``logged_share`` (share of held-out rows with a
    logged propensity); an empty dict when nothing is logged.
    """
    target = valid if valid.height else train
    if "behaviour_propensity" not in target.columns or train.height == 0:
        return {}
    obs, act, _ = _frame_arrays(train, manifest.discrete)
    model = behaviour_model(manifest.action_space, config).fit(obs, act)
    t_obs, t_act, _ = _frame_arrays(target, manifest.discrete)
    logged = target["behaviour_propensity"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    check = propensity_check(
        logged,
        model.propensity(t_obs, t_act),
        model.predict_proba(t_obs) if manifest.discrete else None,
        t_act if manifest.discrete else None,
    )
    if check:
        check["logged_share"] = float(np.mean(np.isfinite(logged)))
        check["held_out"] = float(bool(valid.height))
    return check
