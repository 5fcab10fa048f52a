"""The reward scale decides what d3rlpy's Huber TD loss estimates: means or purchase odds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from offline_rl.agents import (
    BCQConfig,
    CQLConfig,
    DiscreteBCConfig,
    DiscreteBCQConfig,
    DiscreteCQLConfig,
)
from offline_rl.artifacts import load_policy
from offline_rl.config import TrainConfig
from offline_rl.data import TransitionManifest, to_arrays
from offline_rl.testing.synthetic import make_purchase_bandit, make_transitions
from offline_rl.train import reward_multiplier, train_on_frame

PURCHASE = 30.0
P_BUY = 0.1


def _purchase_bandit() -> tuple[pl.DataFrame, TransitionManifest]:
    """One-step episodes whose reward is a purchase worth 30 with probability 0.1, else 0,
    whatever the state and the action: every Q(s, a) should be the mean, 3."""
    return make_purchase_bandit(8000, P_BUY, purchase=PURCHASE, seed=11)


def test_reward_multiplier_choices() -> None:
    frame, manifest = make_transitions(60, n_features=3, seed=2)
    arrays = to_arrays(frame, manifest)
    rewards = arrays.rewards[arrays.transition_rows]
    std, largest = 1 / np.std(rewards), 1 / np.abs(rewards).max()
    # "auto" (the default): 1 / max |r| for the Huber critics, 1 / std for the others
    assert TrainConfig().reward_scale == "auto"
    assert reward_multiplier(TrainConfig(), arrays) == pytest.approx(std)
    for agent, expected in ((DiscreteCQLConfig(), largest), (DiscreteBCQConfig(), largest),
                            (DiscreteBCConfig(), std), (CQLConfig(), std), (BCQConfig(), std)):
        assert reward_multiplier(TrainConfig(), arrays, agent) == pytest.approx(expected)
        assert reward_multiplier(TrainConfig(reward_scale="std"), arrays, agent) == (
            pytest.approx(std)
        )
    assert reward_multiplier(TrainConfig(reward_scale="std"), arrays) == pytest.approx(
        1 / np.std(rewards)
    )
    assert reward_multiplier(TrainConfig(reward_scale="max"), arrays) == pytest.approx(
        1 / np.abs(rewards).max()
    )
    assert reward_multiplier(TrainConfig(reward_scale=0.25), arrays) == 0.25
    zero = to_arrays(frame.with_columns(pl.lit(0.0).alias("reward")), manifest)
    assert reward_multiplier(TrainConfig(reward_scale="max"), zero) == 1.0
    with pytest.raises(ValidationError, match="reward_scale"):
        TrainConfig.model_validate({"reward_scale": "median"})


@pytest.mark.parametrize("scale", ["std", "max"])
def test_the_critic_estimates_the_mean_only_inside_the_huber_zone(
    tmp_path: Path, scale: str
) -> None:
    frame, manifest = _purchase_bandit()
    config = TrainConfig.model_validate({
        "agent": "discrete_cql", "n_steps": 1500, "checkpoint_every": 1500, "log_every": 500,
        "split": "none", "reward_scale": scale, "seed": 0, "reward_source": "logged",
        "discrete_cql": {"alpha": 0.0, "hidden_units": [16], "lr_schedule": "cosine",
                         "learning_rate": 1e-3},
    })
    result = train_on_frame(frame, manifest, tmp_path, config, progress=False)
    policy = load_policy(result.artifact)
    multiplier = float(policy.scalers["reward_multiplier"])
    arrays = to_arrays(frame, manifest)
    rows = arrays.transition_rows
    rewards = arrays.rewards[rows]
    # the critic's fit at the logged decisions (its estimate of E[r | s, a])
    q = float(np.mean(policy.predict_value(arrays.observations[rows], arrays.actions[rows])))
    q /= multiplier
    p = float((rewards > 0).mean())
    if scale == "max":  # every reward is within one unit: squared loss, the mean
        assert q == pytest.approx(rewards.mean(), abs=0.35)
    else:
        # a purchase is 30 / std ~ 3.3 units: the Huber location is p / (1 - p) units,
        # the purchase odds, whatever the purchase is worth (here a third of the mean)
        odds = p / (1 - p) / multiplier
        assert q == pytest.approx(odds, abs=0.35)
        assert q < 0.5 * rewards.mean()
