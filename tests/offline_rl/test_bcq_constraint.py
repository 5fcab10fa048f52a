"""DiscreteBCQ's constraint binds with our defaults: a tier the logging policy almost never
took is never chosen, however good its few logged rewards look (d3rlpy's imitator penalty,
``beta`` 0.5, flattens the imitator so much that it is chosen almost everywhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from offline_rl.agents.bcq import DiscreteBCQConfig
from offline_rl.config import TrainConfig
from offline_rl.data import TransitionManifest
from offline_rl.testing.synthetic import make_transitions
from offline_rl.train import train_on_frame


def _skewed() -> tuple[pl.DataFrame, np.ndarray, TransitionManifest]:
    frame, manifest = make_transitions(300, n_features=6, n_actions=4, seed=5)
    action = np.random.default_rng(0).choice(4, size=frame.height, p=[0.91, 0.03, 0.03, 0.03])
    frame = frame.with_columns(  # the rare tier 3 always pays: an unconstrained argmax takes it
        pl.Series("action", action).cast(frame.schema["action"]),
        pl.Series("reward", (action == 3) * 5.0).cast(frame.schema["reward"]),
    )
    return frame, np.asarray(frame["observation"].to_numpy(), dtype=np.float32), manifest


@pytest.mark.parametrize("beta", [None, 0.5])
def test_the_constraint_keeps_rarely_logged_tiers_out(beta: float | None, tmp_path: Path) -> None:
    frame, obs, manifest = _skewed()
    table = {} if beta is None else {"beta": beta}
    # the rewards as logged: with expected rewards (the default) the response model's leaves of
    # 20 rows would also blur the rare tier's 30 rewards, and the test is about the constraint
    config = TrainConfig.model_validate({"agent": "discrete_bcq", "n_steps": 300, "seed": 0,
                                         "checkpoint_every": 300, "reward_source": "logged",
                                         "discrete_bcq": table})
    result = train_on_frame(frame, manifest, tmp_path / "bcq", config, progress=False)
    chosen = np.bincount(result.algo.predict(obs), minlength=4) / len(obs)
    if beta is None:  # our default, the paper's 0.01: only the logged tier is allowed
        assert DiscreteBCQConfig().beta == 0.01
        assert chosen[0] == 1.0
    else:  # d3rlpy's default: a flat imitator lets the rare, well-paid tier through
        assert chosen[3] > 0.9
