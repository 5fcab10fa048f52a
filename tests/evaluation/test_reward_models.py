"""Reward models on (context, action): shared strength, calibration, held-out quality."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.candidates import Candidate, CandidateProbabilities
from evaluation.config import DirectMethodConfig, EvaluateConfig, KernelConfig
from evaluation.data import EpisodeData
from evaluation.errors import EvaluationError
from evaluation.estimators.direct import FittedQEvaluation, resolve_model
from evaluation.estimators.reward_models import joint_design, joint_scores
from evaluation.evaluate import evaluate_candidates
from evaluation.testing.synthetic_bandit import BanditWorld, simulate_logs


class Given(Candidate):
    """A candidate given by its distribution on the logged contexts."""

    def __init__(self, name: str, dist: np.ndarray) -> None:
        self.name = name
        self.dist = dist

    def probabilities(
        self, data: EpisodeData, kernel: KernelConfig | None = None
    ) -> CandidateProbabilities:
        return CandidateProbabilities(
            logged=self.dist[np.arange(data.n_decisions), data.action], distribution=self.dist
        )


def _logs(items: int, n: int, seed: int = 1) -> tuple[BanditWorld, np.ndarray, EpisodeData]:
    world = BanditWorld.make(items, base=-3.0, seed=0)
    logs = simulate_logs(world, world.uniform(), n, seed=seed)
    return world, logs.context, logs.to_episode_data()


def test_joint_scores_equal_the_design_for_every_action() -> None:
    rng = np.random.default_rng(0)
    x, k = rng.normal(size=(7, 3)), 4
    coef = rng.normal(size=3 + k + 3 * k)
    scores = joint_scores(x, coef, k, 0.5)
    for a in range(k):
        design = joint_design(x, np.full(7, a), k, 0.5)
        np.testing.assert_allclose(scores[:, a], design @ coef, atol=1e-12)


def test_auto_picks_a_classifier_for_clicks_and_ridge_for_q_models() -> None:
    _, _, data = _logs(5, 200)
    assert resolve_model(DirectMethodConfig(), data) == "logistic"
    multi = EpisodeData.from_arrays(
        episode=np.repeat(np.arange(100), 2),
        action=data.action[:200],
        reward=data.reward[:200],
        n_actions=5,
        observation=np.asarray(data.observation)[:200],
    )
    assert resolve_model(DirectMethodConfig(), multi) == "ridge"
    with pytest.raises(EvaluationError, match="one-step"):
        resolve_model(DirectMethodConfig(model="logistic"), multi)


def test_shared_models_learn_many_actions_better_than_ridge_per_action() -> None:
    """40 items, 2,000 impressions (50 per item): the truth is the world's click probability."""
    world, x, data = _logs(40, 2000)
    truth = world.click_probability(x)
    uniform = np.full(truth.shape, 1 / 40)
    errors = {}
    for model in ("ridge", "logistic"):
        pred = FittedQEvaluation(DirectMethodConfig(model=model)).predict(
            data, target_distribution=uniform
        )
        assert pred.q_all is not None and pred.quality is not None
        errors[model] = float(np.mean((pred.q_all - truth) ** 2))
    assert errors["logistic"] < 0.8 * errors["ridge"]


def test_held_out_quality_is_in_the_results() -> None:
    world, x, data = _logs(10, 3000)
    result = evaluate_candidates(
        data,
        [Given("sharp", world.softmax(2.0)(x))],
        EvaluateConfig(
            estimators=["ipw", "dm_bandit", "dr_bandit"],
            primary_estimator="dr_bandit",
            bootstrap={"n_resamples": 0},
        ),
    )
    quality = result.candidates[0].diagnostics["reward_model"]
    assert quality["held_out"] and quality["folds"] == 5 and quality["n"] == 3000
    assert quality["log_loss"] < quality["baseline_log_loss"]
    assert quality["expected_calibration_error"] < 0.05
    notes = result.to_dict()["candidates"][0]["notes"]
    assert any("log loss" in n and "held out" in n for n in notes)


def test_hgb_classifier_is_calibrated_and_one_reward_model_serves_all_candidates() -> None:
    world, x, data = _logs(6, 2000)
    fitter = FittedQEvaluation(DirectMethodConfig(model="hgb_classifier", hgb_max_iter=30))
    first = fitter.predict(data, target_distribution=world.uniform()(x))
    second = fitter.predict(data, target_distribution=world.softmax(1.0)(x))
    assert first.q_all is second.q_all  # fitted once per dataset
    assert first.quality is not None and first.quality.expected_calibration_error is not None
    assert first.quality.expected_calibration_error < 0.05
    assert first.q_all is not None
    assert np.all((first.q_all >= 0) & (first.q_all <= 1))
