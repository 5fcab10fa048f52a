"""The support check scales with the number of actions: a uniform logging policy passes it."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.candidates import BehaviourPolicy, UniformPolicy
from evaluation.config import EvaluateConfig
from evaluation.data import EpisodeData
from evaluation.evaluate import evaluate_candidates

CONFIG = dict(estimators=["ipw", "snipw"], primary_estimator="snipw", bootstrap={"n_resamples": 0})


def _uniform_logs(k: int, n: int = 3000, seed: int = 0) -> EpisodeData:
    rng = np.random.default_rng(seed)
    action = rng.integers(0, k, n)
    return EpisodeData.from_arrays(
        episode=np.arange(n),
        action=action,
        reward=(rng.random(n) < 0.05).astype(float),
        behaviour_propensity=np.full(n, 1.0 / k),
        gamma=1.0,
        n_actions=k,
        observation=rng.normal(size=(n, 2)).astype(np.float32),
    )


@pytest.mark.parametrize("k", [4, 100])
def test_uniform_logging_passes_its_own_support_check(k: int) -> None:
    data = _uniform_logs(k)
    result = evaluate_candidates(
        data,
        [UniformPolicy(), BehaviourPolicy()],
        EvaluateConfig(**CONFIG),
    )
    for c in result.candidates:
        assert c.diagnostics["unsupported_share"] == 0.0, c.name
        assert c.diagnostics["support_threshold"] == pytest.approx(0.05 / k)
        check = next(ch for ch in c.verdict.checks if "unsupported" in ch.name)
        assert check.passed, c.name


def test_the_old_fixed_threshold_flagged_uniform_logging_over_many_items() -> None:
    data = _uniform_logs(100)
    cfg = EvaluateConfig(**CONFIG, support_threshold=0.01)
    share = (
        evaluate_candidates(data, [UniformPolicy()], cfg)
        .candidates[0]
        .diagnostics["unsupported_share"]
    )
    assert share > 0.2  # about half the items were logged less than 1 % of the time


def test_mass_on_an_action_never_logged_is_unsupported() -> None:
    data = _uniform_logs(4)
    logged = EpisodeData.from_arrays(
        episode=np.arange(data.n_decisions),
        action=np.minimum(data.action, 2),
        reward=data.reward,
        behaviour_propensity=np.full(data.n_decisions, 1 / 3),
        gamma=1.0,
        n_actions=4,
        observation=data.observation,
    )
    result = evaluate_candidates(logged, [UniformPolicy()], EvaluateConfig(**CONFIG))
    assert result.candidates[0].diagnostics["unsupported_share"] == pytest.approx(0.25)
