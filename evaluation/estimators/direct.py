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
from dataclasses import dataclass
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
    """Model predictions for one candidate: ``q(s_t, a_t)``, ``v(s_t)`` and ``q(s_t, .)``."""

    q_logged: FloatArray
    v_hat: FloatArray
    q_all: FloatArray | None = None


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


class FittedQEvaluation:
    """Model-based direct method: fitted Q evaluation with a scikit-learn-style regressor.

    Discrete candidates are given by their action distribution per decision (n, K); continuous
    ones by their deterministic action per decision (n,).
    """

    def __init__(self, config: DirectMethodConfig | None = None) -> None:
        self.config = config or DirectMethodConfig()

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
        folds = self.config.cross_fit_folds
        if folds <= 1:
            return self._fit_predict(data, data, target_distribution, target_action)
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
            )
            q_logged[test_rows] = pred.q_logged
            v_hat[test_rows] = pred.v_hat
            if q_all is not None and pred.q_all is not None:
                q_all[test_rows] = pred.q_all
        return QPredictions(q_logged=q_logged, v_hat=v_hat, q_all=q_all)

    def _fit_predict(
        self,
        train: EpisodeData,
        test: EpisodeData,
        dist: FloatArray | None,
        act: FloatArray | None,
        test_dist: FloatArray | None = None,
        test_act: FloatArray | None = None,
    ) -> QPredictions:
        if test is train:
            test_dist, test_act = dist, act
        value_of = self._iterate(train, dist, act)
        return value_of(test, test_dist, test_act)

    def _iterate(
        self, data: EpisodeData, dist: FloatArray | None, act: FloatArray | None
    ) -> Callable[[EpisodeData, FloatArray | None, FloatArray | None], QPredictions]:
        cfg = self.config
        x = _state_features(data, interactions=cfg.step_interactions)
        rows, nxt, disc = _next_structure(data)
        n_iter = cfg.n_iterations
        discrete = data.action_space.is_discrete
        if cfg.model == "ridge":
            model = _RidgeQ(x, data, cfg.ridge_alpha)
            target = data.reward.copy()
            x_next = x[nxt]
            if discrete and dist is not None:
                dist_next = dist[nxt]
            elif act is not None:
                feats_next = model.features(x_next, act[nxt])
            for it in range(n_iter):
                model.fit(x, target)
                if discrete and dist is not None:
                    v_next = np.einsum("ij,ij->i", model.predict_all(x_next), dist_next)
                else:
                    v_next = feats_next @ model.theta_c
                new_target = data.reward.copy()
                new_target[rows] += disc * v_next
                change = float(np.max(np.abs(new_target - target)))
                target = new_target
                if change < 1e-6 * (1.0 + float(np.max(np.abs(target)))) or it + 1 >= max(
                    n_iter, 1
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
                assert tact is not None
                q_logged = model.predict_at(xt, np.asarray(test.action, dtype=np.float64))
                return QPredictions(q_logged, model.predict_at(xt, tact))

            return predict
        return self._iterate_hgb(data, x, rows, nxt, disc, dist, act)

    def _iterate_hgb(
        self,
        data: EpisodeData,
        x: FloatArray,
        rows: np.ndarray,
        nxt: np.ndarray,
        disc: FloatArray,
        dist: FloatArray | None,
        act: FloatArray | None,
    ) -> Callable[[EpisodeData, FloatArray | None, FloatArray | None], QPredictions]:
        from sklearn.ensemble import HistGradientBoostingRegressor

        cfg = self.config
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
    import d3rlpy
    import torch

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
