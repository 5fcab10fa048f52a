"""d3rlpy's fitted Q evaluation through ``evaluate_candidates`` (one-step data: Q = reward)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.config import EvaluateConfig, FQEConfig
from evaluation.data import EpisodeData
from evaluation.evaluate import evaluate_candidates


@pytest.mark.slow
def test_d3rlpy_fqe_recovers_a_constant_rule_on_bandit_data() -> None:
    rng = np.random.default_rng(0)
    n, k, s = 3000, 3, 4
    state = rng.integers(0, s, size=n)
    means = rng.normal(1.0, 1.0, size=(s, k))
    action = rng.integers(0, k, size=n)
    data = EpisodeData.from_arrays(
        episode=np.arange(n),
        action=action,
        reward=means[state, action] + 0.3 * rng.standard_normal(n),
        behaviour_propensity=np.full(n, 1 / k),
        n_actions=k,
        observation=np.eye(s, dtype=np.float32)[state],
    )
    cfg = EvaluateConfig(
        estimators=["ipw", "dm_bandit", "fqe"],
        primary_estimator="ipw",
        fqe=FQEConfig(n_steps=300, learning_rate=1e-2, batch_size=128, n_steps_per_epoch=300),
    )
    cfg.bootstrap.n_resamples = 50
    result = evaluate_candidates(data, ["rule:constant=2"], config=cfg)
    truth = float(np.mean(means[state, 2]))
    fqe = result.candidates[0].estimate("fqe")
    assert fqe.family == "direct"
    assert fqe.estimate == pytest.approx(truth, abs=0.15)
    assert result.candidates[0].estimate("ipw").estimate == pytest.approx(truth, abs=0.15)
