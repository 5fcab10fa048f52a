"""``reward_source = "expected"``: TD targets with the response model's out-of-fold E[r | s, a]."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from offline_rl.agents import AGENT_CONFIGS
from offline_rl.artifacts import load_policy
from offline_rl.config import TrainConfig
from offline_rl.data import TransitionManifest, to_arrays
from offline_rl.errors import TrainingError
from offline_rl.response import ResponseModel, crossfit_expected_rewards
from offline_rl.testing.synthetic import make_purchase_bandit, make_transitions
from offline_rl.train import reward_source, train_on_frame

PURCHASE = 30.0
P_BUY = np.array([0.05, 0.10, 0.20])  # per action: expected rewards 1.5, 3, 6


def _purchase_bandit(n: int = 24000) -> tuple[pl.DataFrame, TransitionManifest]:
    """E[r | s, a] = 30 * P_BUY[a] in every state. Large enough (12,000 rows a fold) for the
    response model's early stopping (sklearn's "auto": over 10,000 rows)."""
    return make_purchase_bandit(n, P_BUY, purchase=PURCHASE, seed=3)


def test_expected_rewards_recover_the_conditional_mean_with_less_spread() -> None:
    frame, manifest = _purchase_bandit()
    expected = crossfit_expected_rewards(frame, manifest, seed=0)
    actions = frame["action"].to_numpy()
    logged = frame["reward"].to_numpy()
    assert expected.shape == (frame.height,)
    for a, p in enumerate(P_BUY):
        mine = actions == a
        se = logged[mine].std() / np.sqrt(mine.sum())  # 0.07-0.13
        gap = PURCHASE * p - logged.mean()  # -1.7, -0.2, +2.8
        # the closed form, up to the sampling error of the purchases and the boosting's
        # shrinkage toward the overall mean (early stopping after ~25 of 200 rounds at rate
        # 0.1 keeps about 90 % of an action's effect); a model blind to the action misses by
        # the whole gap
        assert expected[mine].mean() == pytest.approx(
            PURCHASE * p, abs=0.25 * abs(gap) + 3 * se
        )
    assert expected.std() < 0.3 * logged.std()
    assert expected.mean() == pytest.approx(logged.mean(), abs=0.3)


def test_expected_rewards_are_out_of_fold() -> None:
    """On rewards that are pure noise, an in-sample response model partly fits the noise of its
    own rows; the out-of-fold predictions do not (a row is never predicted by a model that saw
    its episode)."""
    frame, manifest = make_transitions(1500, n_features=4, n_actions=3, max_len=3, seed=4)
    noise = np.random.default_rng(0).normal(0.0, 1.0, frame.height)
    frame = frame.with_columns(pl.Series("reward", noise))
    obs = np.asarray(frame["observation"].to_numpy(), dtype=np.float64)
    actions = frame["action"].to_numpy()
    in_sample = ResponseModel.for_manifest(manifest).fit(obs, actions, noise)
    assert np.corrcoef(in_sample.predict_reward(obs, actions), noise)[0, 1] > 0.2
    out_of_fold = crossfit_expected_rewards(frame, manifest, seed=0)
    assert np.corrcoef(out_of_fold, noise)[0, 1] < 0.05
    # a single episode cannot be split: fitted and predicted in sample, no error
    one = frame.filter(pl.col("episode_id") == frame["episode_id"][0])
    assert crossfit_expected_rewards(one, manifest).shape == (one.height,)
    assert crossfit_expected_rewards(frame.head(0), manifest).shape == (0,)


def _config(agent: str, source: str, n_steps: int = 1500) -> TrainConfig:
    return TrainConfig.model_validate({
        "agent": agent, "n_steps": n_steps, "checkpoint_every": n_steps, "log_every": 500,
        "split": "none", "seed": 0, "reward_source": source,
        agent: {"hidden_units": [16], "learning_rate": 1e-3,
                **({"alpha": 0.0} if agent == "discrete_cql" else {})},
    })


def test_a_critic_trained_on_expected_rewards_estimates_each_action_s_mean(
    tmp_path: Path,
) -> None:
    frame, manifest = _purchase_bandit()
    result = train_on_frame(frame, manifest, tmp_path, _config("discrete_cql", "expected"),
                            progress=False)
    policy = load_policy(result.artifact)
    record = json.loads((result.artifact / "metrics.json").read_text())["reward_source"]
    assert record["source"] == "expected"
    assert record["expected_std"] < 0.3 * record["logged_std"]
    arrays = to_arrays(frame, manifest)
    obs = arrays.observations[arrays.transition_rows]
    multiplier = float(policy.scalers["reward_multiplier"])
    for a, p in enumerate(P_BUY):
        q = policy.predict_value(obs, np.full(len(obs), a)).mean() / multiplier
        assert q == pytest.approx(PURCHASE * p, abs=0.9)
    assert np.mean(policy.predict(obs) == 2) > 0.95  # the best action, everywhere


def test_behaviour_cloning_keeps_logged_rewards_and_resume_checks_the_source(
    tmp_path: Path,
) -> None:
    frame, manifest = make_transitions(300, n_features=4, n_actions=3, seed=5)
    bc = train_on_frame(frame, manifest, tmp_path / "bc", _config("discrete_bc", "expected", 20),
                        progress=False)
    record = json.loads((bc.artifact / "metrics.json").read_text())["reward_source"]
    assert record == {"source": "logged"}  # no Q-function: nothing to fit
    train_on_frame(frame, manifest, tmp_path / "cql", _config("discrete_cql", "logged", 20),
                   progress=False)
    with pytest.raises(TrainingError, match="reward_source"):
        train_on_frame(frame, manifest, tmp_path / "cql", _config("discrete_cql", "expected", 40),
                       resume=True, progress=False)


def test_auto_means_expected_for_the_discrete_q_learners_only() -> None:
    auto, logged, expected = (TrainConfig(reward_source=s) for s in ("auto", "logged", "expected"))
    assert TrainConfig().reward_source == "auto"
    resolved = {"discrete_cql": "expected", "discrete_bcq": "expected", "cql": "logged",
                "bcq": "logged", "discrete_bc": "logged", "bc": "logged"}
    assert set(resolved) == set(AGENT_CONFIGS)
    for name, source in resolved.items():
        agent = AGENT_CONFIGS[name]()
        assert reward_source(auto, agent) == source
        assert reward_source(logged, agent) == "logged"
        learns = name not in ("discrete_bc", "bc")  # behaviour cloning has no Q-function
        assert reward_source(expected, agent) == ("expected" if learns else "logged")
