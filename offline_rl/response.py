"""The response model: expected reward (and purchase probability) given state and action.

Gradient-boosted trees (scikit-learn ``HistGradientBoostingRegressor`` / ``...Classifier``) on
``[observation, one-hot action]`` (discrete) or ``[observation, scaled action]`` (continuous).
OPE's direct-method and doubly robust estimators reuse it through ``predict_reward`` and
``predict_all_actions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from etl.manifest import ActionSpace, DiscreteActionSpace, as_action_space
from offline_rl.config import ResponseConfig
from offline_rl.data import TransitionManifest
from offline_rl.errors import TrainingError
from offline_rl.splits import crossfit_folds


class ResponseModel:
    """Reward (and optionally purchase) model for one action space (manifest ``action_space``)."""

    def __init__(
        self,
        action_space: ActionSpace | Mapping[str, Any],
        config: ResponseConfig | None = None,
        seed: int = 0,
    ) -> None:
        space = as_action_space(action_space)
        self.action_space = space
        self.config = config or ResponseConfig()
        self.seed = seed
        self.discrete = isinstance(space, DiscreteActionSpace)
        if isinstance(space, DiscreteActionSpace):
            self.n_actions = space.n
        else:
            self.low = np.asarray(space.low, dtype=np.float64)
            self.high = np.asarray(space.high, dtype=np.float64)
        self._reward: HistGradientBoostingRegressor | None = None
        self._purchase: HistGradientBoostingClassifier | None = None

    @classmethod
    def for_manifest(
        cls, manifest: TransitionManifest, config: ResponseConfig | None = None, seed: int = 0
    ) -> ResponseModel:
        return cls(manifest.action_space, config, seed)

    def features(self, observations: NDArray[Any], actions: NDArray[Any]) -> NDArray[np.float64]:
        """``[observation, one-hot action]`` or ``[observation, (a - low) / (high - low)]``."""
        x = np.asarray(observations, dtype=np.float64)
        if self.discrete:
            idx = np.asarray(actions).astype(np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= self.n_actions):
                raise TrainingError(f"actions must be in 0..{self.n_actions - 1}")
            extra = np.zeros((x.shape[0], self.n_actions))
            extra[np.arange(x.shape[0]), idx] = 1.0
        else:
            rates = np.asarray(actions, dtype=np.float64).reshape(x.shape[0], -1)
            extra = (rates - self.low) / (self.high - self.low)
        return np.hstack([x, extra])

    def _params(self) -> dict[str, Any]:
        c = self.config
        return {
            "max_iter": c.max_iter,
            "learning_rate": c.learning_rate,
            "max_leaf_nodes": c.max_leaf_nodes,
            "min_samples_leaf": c.min_samples_leaf,
            "random_state": self.seed,
        }

    def fit(
        self,
        observations: NDArray[Any],
        actions: NDArray[Any],
        rewards: NDArray[Any],
        purchases: NDArray[Any] | None = None,
    ) -> ResponseModel:
        """Fit the reward model (and the purchase classifier when ``purchases`` is given)."""
        feats = self.features(observations, actions)
        self._reward = HistGradientBoostingRegressor(**self._params()).fit(
            feats, np.asarray(rewards, dtype=np.float64).reshape(-1)
        )
        if purchases is not None:
            y = np.asarray(purchases).astype(np.int64).reshape(-1)
            self._purchase = (
                HistGradientBoostingClassifier(**self._params()).fit(feats, y)
                if np.unique(y).size > 1
                else None
            )
            self._purchase_constant = float(y.mean()) if y.size else 0.0
        return self

    def fit_frame(self, frame: pl.DataFrame) -> ResponseModel:
        """Fit on a transitions frame (purchase = any revenue, when the column is there)."""
        obs = np.asarray(frame["observation"].to_numpy(), dtype=np.float64)
        act = frame["action"].to_numpy()
        purchases = (frame["revenue"].to_numpy() > 0) if "revenue" in frame.columns else None
        return self.fit(obs, act, frame["reward"].to_numpy(), purchases)

    def predict_reward(
        self, observations: NDArray[Any], actions: NDArray[Any]
    ) -> NDArray[np.float64]:
        """Expected reward of each (state, action) pair, shape ``(n,)``."""
        if self._reward is None:
            raise TrainingError("the response model is not fitted")
        return np.asarray(self._reward.predict(self.features(observations, actions)))

    def predict_purchase(
        self, observations: NDArray[Any], actions: NDArray[Any]
    ) -> NDArray[np.float64]:
        """Purchase probability of each (state, action) pair (needs ``purchases`` at fit)."""
        if self._reward is None or not hasattr(self, "_purchase_constant"):
            raise TrainingError("the purchase model is not fitted")
        if self._purchase is None:
            return np.full(np.asarray(observations).shape[0], self._purchase_constant)
        return np.asarray(self._purchase.predict_proba(self.features(observations, actions))[:, 1])

    def predict_all_actions(
        self, observations: NDArray[Any], grid: NDArray[Any] | None = None
    ) -> NDArray[np.float64]:
        """Expected reward of every action, shape ``(n, K)``.

        Discrete: the K actions. Continuous: the actions of ``grid`` (required there).
        """
        x = np.asarray(observations, dtype=np.float64)
        n = x.shape[0]
        actions: NDArray[Any]
        if self.discrete:
            actions = np.arange(self.n_actions)
        elif grid is None:
            raise TrainingError("predict_all_actions needs a grid of actions for continuous spaces")
        else:
            actions = np.asarray(grid, dtype=np.float64).reshape(-1)
        k = actions.shape[0]
        tiled_x = np.repeat(x, k, axis=0)
        tiled_a = np.tile(actions, n)
        return self.predict_reward(tiled_x, tiled_a).reshape(n, k)


def crossfit_expected_rewards(
    frame: pl.DataFrame,
    manifest: TransitionManifest,
    config: ResponseConfig | None = None,
    *,
    n_folds: int = 2,
    seed: int = 0,
) -> NDArray[np.float64]:
    """Out-of-fold expected reward ``E[r | s, a]`` of each row's logged state and action.

    Each fold of episodes (``GroupKFold`` on ``episode_id``, so that an episode is never
    predicted by a model that saw it) is predicted by a response model fitted on the other
    folds. Training uses it under ``[train] reward_source = "expected"``: the TD target
    ``E[r | s, a] + gamma * max_a' Q(s', a')`` has the same expectation as the logged
    ``r + gamma * max_a' Q(s', a')`` when the model is right, and far less variance when the
    reward is a rare purchase (conditioning on ``(s, a)``: Rao-Blackwell). With a single episode
    the model is fitted and predicted in sample (``crossfit_folds``).
    """
    if frame.height == 0:
        return np.zeros(0)
    obs = np.asarray(frame["observation"].to_numpy(), dtype=np.float64)
    actions = frame["action"].to_numpy()  # (n,) indices, or (n, A) rates
    rewards = frame["reward"].to_numpy().astype(np.float64)
    out = np.empty(frame.height)
    for fit_idx, pred_idx in crossfit_folds(frame["episode_id"].to_numpy(), n_folds):
        model = ResponseModel.for_manifest(manifest, config, seed).fit(
            obs[fit_idx], actions[fit_idx], rewards[fit_idx]
        )
        out[pred_idx] = model.predict_reward(obs[pred_idx], actions[pred_idx])
    return out
