"""Direct method: a model of the candidate's action values, averaged over initial states.

``V_DM = 1/N sum_i v(s_{i,0})`` with ``v(s) = E_{a ~ pi_e(s)} q(s, a)`` (Beygelzimer & Langford
2009 in the bandit case; Le, Voloshin & Yue 2019, "Batch policy learning under constraints",
ICML, for fitted Q evaluation). Two ways to get ``q``:

* :class:`FittedQEvaluation` (model-based direct method): fitted Q evaluation with a scikit-learn
  regressor, iterating
  ``q_{k+1}(s_t, a_t) <- r_t + gamma^(step gap) E_{a' ~ pi_e} q_k(s_{t+1}, a')``
  (0 after the episode's last decision: the estimand stops where each logged episode stops).
  ``ridge`` solves one ridge regression per action on ``[observation, 1, one-hot(step)]`` with the
  factorisations reused across iterations (continuous actions: features times ``[1, a, a^2]``);
  ``hgb`` refits a gradient-boosted regressor each iteration. Optional k-fold cross-fitting by
  episode (each decision predicted by a model that did not see its episode).
* :func:`d3rlpy_fqe` wraps d3rlpy's ``DiscreteFQE`` / ``FQE`` (a neural Q function trained by TD)
  for candidates that are functions of the observation.

The model's predictions also feed the doubly robust estimators (``q_logged``, ``v_hat``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import structlog

from evaluation.config import DirectMethodConfig, FQEConfig
from evaluation.data import EpisodeData, FloatArray
from evaluation.errors import EvaluationError
from evaluation.estimators.base import (
    EpisodeStatistics,
    OffPolicyEstimator,
    OPEInput,
)
from evaluation.estimators.reward_models import (
    JointRidgeQ,
    ModelQuality,
    fit_hgb_classifier,
    fit_logistic,
    model_quality,
    two_values,
)

log = structlog.get_logger(__name__)

_MAX_STEP_FEATURES = 20


class DirectMethod(OffPolicyEstimator):
    """Direct method: ``1/N sum_i v(s_{i,0})`` from the model's ``v_hat`` on first decisions."""

    name = "dm"
    family = "direct"
    needs_model = True
    uses_weights = False

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        _, v = inp.require_model(self.name)
        col = v[inp.data.first_row][:, None]
        return EpisodeStatistics.mean_of(col)


@dataclass(frozen=True)
class QPredictions:
    """Model predictions for one candidate: ``q(s_t, a_t)``, ``v(s_t)`` and ``q(s_t, .)``.

    ``quality``: the model's fit on the decisions (held out when cross-fitted), if measured.
    """

    q_logged: FloatArray
    v_hat: FloatArray
    q_all: FloatArray | None = None
    quality: ModelQuality | None = None


_ValueOf = Callable[["EpisodeData", FloatArray | None, FloatArray | None], QPredictions]
"""A fitted model: (test data, candidate distribution, candidate action) -> predictions."""


def _state_features(
    data: EpisodeData, reference: EpisodeData | None = None, interactions: bool = False
) -> FloatArray:
    """``[standardised observation, 1, one-hot(step)]`` (+ observation x step when asked).

    ``reference`` supplies the standardisation and the step range (the training fold).
    """
    ref = reference if reference is not None else data
    if data.observation is None or ref.observation is None:
        raise EvaluationError("the direct method needs observations in the transitions")
    ref_obs = np.asarray(ref.observation, dtype=np.float64)
    mean = ref_obs.mean(axis=0)
    std = ref_obs.std(axis=0)
    std[std == 0] = 1.0
    obs = (np.asarray(data.observation, dtype=np.float64) - mean) / std
    n_steps = min(ref.horizon, _MAX_STEP_FEATURES)
    steps = np.zeros((data.n_decisions, n_steps))
    steps[np.arange(data.n_decisions), np.minimum(data.step, n_steps - 1)] = 1.0
    parts = [obs, np.ones((data.n_decisions, 1)), steps]
    if interactions:
        parts.append((obs[:, :, None] * steps[:, None, :]).reshape(data.n_decisions, -1))
    return np.hstack(parts)


def _next_structure(data: EpisodeData) -> tuple[np.ndarray, np.ndarray, FloatArray]:
    """Rows with a next decision, that next row, and ``gamma ** (step gap)``."""
    has_next = np.ones(data.n_decisions, dtype=bool)
    has_next[data.last_row] = False
    rows = np.flatnonzero(has_next)
    nxt = rows + 1
    disc = np.power(data.gamma, (data.step[nxt] - data.step[rows]).astype(np.float64))
    return rows, nxt, disc


class _RidgeQ:
    """Per-action ridge regressions (discrete) or one with ``[1, a, a^2]`` features (continuous)."""

    def __init__(self, x: FloatArray, data: EpisodeData, alpha: float) -> None:
        self.discrete = data.action_space.is_discrete
        self.alpha = alpha
        self.p = x.shape[1]
        if self.discrete:
            self.k = data.action_space.n
            self.factors: list[Any] = []
            self.rows: list[np.ndarray] = []
            self.xt: list[np.ndarray] = []  # per action: its rows' features, transposed
            for a in range(self.k):
                rows = np.flatnonzero(data.action == a)
                xa_t = np.ascontiguousarray(x[rows].T)
                gram = xa_t @ xa_t.T + alpha * np.eye(self.p)
                self.factors.append(np.linalg.cholesky(gram))
                self.rows.append(rows)
                self.xt.append(xa_t)
            self.theta = np.zeros((self.k, self.p))
        else:
            self.low, self.high = data.action_space.low, data.action_space.high
            self.scale = max(self.high - self.low, 1e-12)
            feats = self.features(x, np.asarray(data.action, dtype=np.float64))
            self.factor = np.linalg.cholesky(feats.T @ feats + alpha * np.eye(feats.shape[1]))
            self.feats = feats
            self.theta_c = np.zeros(feats.shape[1])

    def features(self, x: FloatArray, a: FloatArray) -> FloatArray:
        u = ((a - self.low) / self.scale)[:, None]
        return np.hstack([x, x * u, x * u**2])

    @staticmethod
    def _solve(chol: FloatArray, rhs: FloatArray) -> FloatArray:
        from scipy.linalg import solve_triangular

        y = solve_triangular(chol, rhs, lower=True)
        return np.asarray(solve_triangular(chol.T, y, lower=False))

    def fit(self, x: FloatArray, target: FloatArray) -> None:
        if self.discrete:
            for a in range(self.k):
                self.theta[a] = self._solve(self.factors[a], self.xt[a] @ target[self.rows[a]])
        else:
            self.theta_c = self._solve(self.factor, self.feats.T @ target)

    def predict_all(self, x: FloatArray) -> FloatArray:
        return np.asarray(x @ self.theta.T)

    def predict_at(self, x: FloatArray, a: FloatArray) -> FloatArray:
        return np.asarray(self.features(x, a) @ self.theta_c)


JOINT_MODELS = ("joint_ridge", "logistic", "hgb_classifier")
"""Models on (context, action) that share strength across actions (cross-fitted by default)."""

CLASSIFIERS = ("logistic", "hgb_classifier")

_LOGISTIC_GRID = (0.1, 1.0, 10.0)

_DESCRIPTION = {
    "ridge": "ridge per action",
    "hgb": "gradient-boosted regression trees on (context, action)",
    "joint_ridge": "ridge on (context, action), action terms shrunk to shared ones",
    "logistic": "logistic regression on (context, action), action terms shrunk to shared ones",
    "hgb_classifier": "gradient-boosted classifier on (context, action), sigmoid-calibrated",
}


def resolve_model(config: DirectMethodConfig, data: EpisodeData) -> str:
    """The model ``auto`` stands for on this data; an error where the model cannot apply.

    ``auto``: ``logistic`` on one-step discrete data with two-valued rewards, ``joint_ridge``
    on other one-step discrete data, ``ridge`` otherwise (multi-step Q model, continuous).
    """
    discrete = data.action_space.is_discrete
    one_step = data.n_episodes == data.n_decisions
    name: str = config.model
    if name == "auto":
        if not (discrete and one_step):
            return "ridge"
        return "logistic" if two_values(data.reward) is not None else "joint_ridge"
    binary = two_values(data.reward) is not None
    if name in CLASSIFIERS and not (discrete and one_step and binary):
        raise EvaluationError(
            f"[evaluate.direct] model = {name!r} models a two-valued reward of one-step "
            "decisions over discrete actions; these logs have "
            f"{'one-step' if one_step else 'multi-step'} episodes, "
            f"{len(np.unique(data.reward))} distinct reward values and "
            f"{data.action_space.type} actions: use 'joint_ridge' (a Q model) or 'auto'"
        )
    if name == "joint_ridge" and not discrete:
        return "ridge"  # continuous ridge is already one model of (context, action)
    return name


def resolve_folds(config: DirectMethodConfig, model: str) -> int:
    """``cross_fit_folds``, or its default: 5 for the (context, action) models, else 1."""
    if config.cross_fit_folds is not None:
        return config.cross_fit_folds
    return 5 if model in JOINT_MODELS else 1


class FittedQEvaluation:
    """Model-based direct method: fitted Q evaluation with a scikit-learn-style regressor.

    Discrete candidates are given by their action distribution per decision (n, K); continuous
    ones by their deterministic action per decision (n,). On one-step discrete data the model
    (a reward model) does not depend on the candidate: it is fitted once per dataset and reused
    by every candidate evaluated with the same instance.
    """

    def __init__(self, config: DirectMethodConfig | None = None) -> None:
        self.config = config or DirectMethodConfig()
        self._reward_cache: tuple[EpisodeData, QPredictions] | None = None

    def predict(
        self,
        data: EpisodeData,
        *,
        target_distribution: FloatArray | None = None,
        target_action: FloatArray | None = None,
    ) -> QPredictions:
        """Fit (cross-fitted when configured) and return the predictions on every decision."""
        discrete = data.action_space.is_discrete
        if discrete and target_distribution is None:
            raise EvaluationError("a discrete candidate needs its action distribution for FQE")
        if not discrete and target_action is None:
            raise EvaluationError("a continuous candidate needs its action per decision for FQE")
        model = resolve_model(self.config, data)
        if discrete and data.n_episodes == data.n_decisions:
            assert target_distribution is not None
            reward = self._reward_model(data, model)
            assert reward.q_all is not None
            v_hat = np.einsum("ij,ij->i", reward.q_all, target_distribution)
            return replace(reward, v_hat=v_hat)
        return self._cross_fit(data, target_distribution, target_action, model)

    def _reward_model(self, data: EpisodeData, model: str) -> QPredictions:
        """One-step discrete data: the candidate-free reward model, fitted once per dataset."""
        if self._reward_cache is not None and self._reward_cache[0] is data:
            return self._reward_cache[1]
        uniform = np.full((data.n_decisions, data.action_space.n), 1.0 / data.action_space.n)
        if model == "logistic" and self.config.logistic_C is None:
            pred = self._tuned_logistic(data, uniform)
        else:
            pred = self._cross_fit(data, uniform, None, model)
        self._reward_cache = (data, pred)
        return pred

    def _tuned_logistic(self, data: EpisodeData, uniform: FloatArray) -> QPredictions:
        """The logistic model whose L2 strength gives the lowest held-out log loss."""
        best: QPredictions | None = None
        best_loss = np.inf
        grid = ", ".join(f"{g:g}" for g in _LOGISTIC_GRID)
        for c in _LOGISTIC_GRID:
            fitter = FittedQEvaluation(self.config.model_copy(update={"logistic_C": c}))
            pred = fitter._cross_fit(data, uniform, None, "logistic")
            quality = pred.quality
            assert quality is not None and quality.log_loss is not None
            if quality.log_loss < best_loss:
                best_loss = quality.log_loss
                model = f"{quality.model}, C={c:g} of {grid} by held-out log loss"
                best = replace(pred, quality=replace(quality, model=model))
        assert best is not None
        return best

    def _cross_fit(
        self,
        data: EpisodeData,
        target_distribution: FloatArray | None,
        target_action: FloatArray | None,
        model: str,
    ) -> QPredictions:
        folds = resolve_folds(self.config, model)
        if folds <= 1 or data.n_episodes < 2 * folds:
            pred = self._fit_predict(data, data, target_distribution, target_action, model=model)
            return self._with_quality(data, pred, model, 1)
        discrete = data.action_space.is_discrete
        rng = np.random.default_rng(self.config.seed)
        fold_of = rng.integers(0, folds, size=data.n_episodes)
        q_logged = np.empty(data.n_decisions)
        v_hat = np.empty(data.n_decisions)
        q_all = np.empty((data.n_decisions, data.action_space.n)) if discrete else None
        for k in range(folds):
            train_eps = np.flatnonzero(fold_of != k)
            test_eps = np.flatnonzero(fold_of == k)
            if len(test_eps) == 0:
                continue
            train_rows = np.isin(data.episode, train_eps)
            test_rows = ~train_rows
            train = data.subset_episodes(train_eps)
            test = data.subset_episodes(test_eps)
            pred = self._fit_predict(
                train,
                test,
                None if target_distribution is None else target_distribution[train_rows],
                None if target_action is None else target_action[train_rows],
                None if target_distribution is None else target_distribution[test_rows],
                None if target_action is None else target_action[test_rows],
                model=model,
            )
            q_logged[test_rows] = pred.q_logged
            v_hat[test_rows] = pred.v_hat
            if q_all is not None and pred.q_all is not None:
                q_all[test_rows] = pred.q_all
        return self._with_quality(data, QPredictions(q_logged, v_hat, q_all), model, folds)

    def _with_quality(
        self, data: EpisodeData, pred: QPredictions, model: str, folds: int
    ) -> QPredictions:
        """``pred`` with its fit quality: against the reward (one-step) or the Bellman target."""
        rows, nxt, disc = _next_structure(data)
        target = data.reward.copy()
        target[rows] += disc * pred.v_hat[nxt]
        quality = model_quality(
            pred.q_logged,
            target,
            model=f"{model} ({_DESCRIPTION.get(model, model)})",
            target_name="reward" if len(rows) == 0 else "Bellman target r + gamma^gap v(s')",
            folds=folds,
            binary=two_values(data.reward) if len(rows) == 0 else None,
            bins=self.config.calibration_bins,
        )
        return replace(pred, quality=quality)

    def _fit_predict(
        self,
        train: EpisodeData,
        test: EpisodeData,
        dist: FloatArray | None,
        act: FloatArray | None,
        test_dist: FloatArray | None = None,
        test_act: FloatArray | None = None,
        *,
        model: str = "ridge",
    ) -> QPredictions:
        if test is train:
            test_dist, test_act = dist, act
        if model in CLASSIFIERS:
            value_of = self._classifier(train, model)
        elif model == "hgb":
            value_of = self._iterate_hgb(train, dist, act)
        else:
            value_of = self._iterate_ridge(train, dist, act, joint=model == "joint_ridge")
        return value_of(test, test_dist, test_act)

    def _classifier(self, data: EpisodeData, model: str) -> _ValueOf:
        """One-step, two-valued rewards: a calibrated classifier of the outcome."""
        cfg = self.config
        x = _state_features(data, interactions=cfg.step_interactions)
        k = data.action_space.n
        values = two_values(data.reward)
        low, high = values if values is not None else (0.0, 1.0)
        outcome = (data.reward == high).astype(np.int64)
        if model == "logistic":
            scores = fit_logistic(
                x,
                data.action,
                outcome,
                k,
                C=cfg.logistic_C or 1.0,
                interaction_penalty=cfg.interaction_penalty,
            )
        else:
            scores = fit_hgb_classifier(
                x, data.action, outcome, k, max_iter=cfg.hgb_max_iter, seed=cfg.seed
            )

        def predict(
            test: EpisodeData, tdist: FloatArray | None, tact: FloatArray | None
        ) -> QPredictions:
            xt = x if test is data else _state_features(test, data, cfg.step_interactions)
            q_all = low + (high - low) * scores(xt)
            q_logged = q_all[np.arange(test.n_decisions), test.action]
            v_hat = np.sum(q_all * tdist, axis=1) if tdist is not None else q_logged
            return QPredictions(q_logged, v_hat, q_all)

        return predict

    def _iterate_ridge(
        self, data: EpisodeData, dist: FloatArray | None, act: FloatArray | None, joint: bool
    ) -> _ValueOf:
        cfg = self.config
        x = _state_features(data, interactions=cfg.step_interactions)
        rows, nxt, disc = _next_structure(data)
        discrete = data.action_space.is_discrete
        model: _RidgeQ | JointRidgeQ
        if joint and discrete:
            model = JointRidgeQ(
                x, data.action, data.action_space.n, cfg.ridge_alpha, cfg.interaction_penalty
            )
        else:
            model = _RidgeQ(x, data, cfg.ridge_alpha)
        x_next = x[nxt]

        def next_value() -> FloatArray:
            if discrete and dist is not None:
                return np.einsum("ij,ij->i", model.predict_all(x_next), dist[nxt])
            assert act is not None and isinstance(model, _RidgeQ)
            return np.asarray(model.features(x_next, act[nxt]) @ model.theta_c)

        target = data.reward.copy()
        for it in range(cfg.n_iterations):
            model.fit(x, target)
            new_target = data.reward.copy()
            new_target[rows] += disc * next_value()
            change = float(np.max(np.abs(new_target - target)))
            target = new_target
            if change < 1e-6 * (1.0 + float(np.max(np.abs(target)))) or it + 1 >= max(
                cfg.n_iterations, 1
            ):
                break
        model.fit(x, target)

        def predict(
            test: EpisodeData, tdist: FloatArray | None, tact: FloatArray | None
        ) -> QPredictions:
            xt = x if test is data else _state_features(test, data, cfg.step_interactions)
            if discrete and tdist is not None:
                q_all = model.predict_all(xt)
                q_logged = q_all[np.arange(test.n_decisions), test.action]
                return QPredictions(q_logged, np.sum(q_all * tdist, axis=1), q_all)
            assert tact is not None and isinstance(model, _RidgeQ)
            q_logged = model.predict_at(xt, np.asarray(test.action, dtype=np.float64))
            return QPredictions(q_logged, model.predict_at(xt, tact))

        return predict

    def _iterate_hgb(
        self, data: EpisodeData, dist: FloatArray | None, act: FloatArray | None
    ) -> _ValueOf:
        from sklearn.ensemble import HistGradientBoostingRegressor

        cfg = self.config
        x = _state_features(data, interactions=cfg.step_interactions)
        rows, nxt, disc = _next_structure(data)
        discrete = data.action_space.is_discrete
        k = data.action_space.n if discrete else 0
        rng = np.random.default_rng(cfg.seed)

        def design(xs: FloatArray, a: np.ndarray) -> FloatArray:
            return np.hstack([xs, np.asarray(a, dtype=np.float64)[:, None]])

        logged = design(x, data.action)
        target = data.reward.copy()
        model: Any = None
        for _ in range(cfg.n_iterations):
            fit_rows = np.arange(data.n_decisions)
            if cfg.max_fit_rows is not None and data.n_decisions > cfg.max_fit_rows:
                fit_rows = rng.choice(data.n_decisions, cfg.max_fit_rows, replace=False)
            model = HistGradientBoostingRegressor(
                max_iter=cfg.hgb_max_iter,
                random_state=cfg.seed,
                categorical_features=[logged.shape[1] - 1] if discrete else None,
            )
            model.fit(logged[fit_rows], target[fit_rows])
            if discrete and dist is not None:
                xn = x[nxt]
                preds = np.column_stack(
                    [model.predict(design(xn, np.full(len(nxt), a))) for a in range(k)]
                )
                v_next = np.sum(preds * dist[nxt], axis=1)
            else:
                assert act is not None
                v_next = model.predict(design(x[nxt], act[nxt]))
            new_target = data.reward.copy()
            new_target[rows] += disc * v_next
            if float(np.max(np.abs(new_target - target))) < 1e-6:
                target = new_target
                break
            target = new_target
        fitted = model

        def predict(
            test: EpisodeData, tdist: FloatArray | None, tact: FloatArray | None
        ) -> QPredictions:
            xt = x if test is data else _state_features(test, data, cfg.step_interactions)
            if discrete and tdist is not None:
                q_all = np.column_stack(
                    [fitted.predict(design(xt, np.full(test.n_decisions, a))) for a in range(k)]
                )
                q_logged = q_all[np.arange(test.n_decisions), test.action]
                return QPredictions(q_logged, np.sum(q_all * tdist, axis=1), q_all)
            assert tact is not None
            return QPredictions(
                np.asarray(fitted.predict(design(xt, test.action))),
                np.asarray(fitted.predict(design(xt, tact))),
            )

        return predict


class _PolicyShim:
    """What d3rlpy's FQE needs from the evaluated algorithm: ``impl.predict_best_action``."""

    def __init__(self, act: Callable[[np.ndarray], np.ndarray], discrete: bool) -> None:
        self.discrete = discrete
        self.act = act
        self.impl = self

    def predict_best_action(self, x: Any) -> Any:
        import torch

        actions = self.act(x.detach().cpu().numpy())
        if self.discrete:
            return torch.as_tensor(np.asarray(actions, dtype=np.int64), device=x.device)
        return torch.as_tensor(
            np.asarray(actions, dtype=np.float32).reshape(len(actions), -1), device=x.device
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.act(x)


def d3rlpy_fqe(
    data: EpisodeData,
    policy_action: Callable[[np.ndarray], np.ndarray],
    config: FQEConfig | None = None,
) -> QPredictions:
    """Fitted Q evaluation with d3rlpy's ``DiscreteFQE`` (discrete) or ``FQE`` (continuous).

    ``policy_action`` maps observations (m, d) to the candidate's actions (int indices or rates);
    a stochastic candidate may sample (the TD target is then right in expectation). Returns
    ``q(s_t, a_t)`` and ``v(s_t) = q(s_t, policy_action(s_t))``.
    """
    import torch  # d3rlpy FQE only: torch and d3rlpy load only when this estimator runs

    from offline_rl._quiet import import_d3rlpy

    d3rlpy = import_d3rlpy()  # keeps the CLI's logging configuration
    cfg = config or FQEConfig()
    if data.observation is None:
        raise EvaluationError("FQE needs observations in the transitions")
    torch.set_num_threads(1)
    d3rlpy.seed(cfg.seed)
    obs = np.asarray(data.observation, dtype=np.float32)
    terminals = np.zeros(data.n_decisions, dtype=np.float32)
    timeouts = np.zeros(data.n_decisions, dtype=np.float32)
    last = data.last_row
    ended = data.terminal[last] | ~data.timeout[last]
    terminals[last[ended]] = 1.0
    timeouts[last[~ended]] = 1.0
    discrete = data.action_space.is_discrete
    actions = (
        np.asarray(data.action, dtype=np.int64)
        if discrete
        else np.asarray(data.action, dtype=np.float32).reshape(-1, 1)
    )
    dataset = d3rlpy.dataset.MDPDataset(
        observations=obs,
        actions=actions,
        rewards=data.reward.astype(np.float32),
        terminals=terminals,
        timeouts=timeouts,
        action_space=(
            d3rlpy.constants.ActionSpace.DISCRETE
            if discrete
            else d3rlpy.constants.ActionSpace.CONTINUOUS
        ),
        action_size=data.action_space.n if discrete else 1,
    )
    shim = _PolicyShim(policy_action, discrete)
    fqe_config = d3rlpy.ope.FQEConfig(
        learning_rate=cfg.learning_rate,
        batch_size=cfg.batch_size,
        gamma=data.gamma,
        target_update_interval=cfg.target_update_interval,
    )
    fqe_cls = d3rlpy.ope.DiscreteFQE if discrete else d3rlpy.ope.FQE
    fqe = fqe_cls(algo=shim, config=fqe_config, device="cpu:0")
    fqe.fit(
        dataset,
        n_steps=cfg.n_steps,
        n_steps_per_epoch=min(cfg.n_steps_per_epoch, cfg.n_steps),
        show_progress=False,
        save_interval=10**9,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
    )
    own = policy_action(obs)
    logged_actions = actions if discrete else actions.astype(np.float32)
    own_actions = (
        np.asarray(own, dtype=np.int64)
        if discrete
        else np.asarray(own, dtype=np.float32).reshape(-1, 1)
    )
    q_logged = np.asarray(fqe.predict_value(obs, logged_actions), dtype=np.float64)
    v_hat = np.asarray(fqe.predict_value(obs, own_actions), dtype=np.float64)
    return QPredictions(q_logged=q_logged, v_hat=v_hat)
