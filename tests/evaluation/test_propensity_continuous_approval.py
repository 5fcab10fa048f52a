"""Estimated propensities, continuous-action kernel estimators, and the approval rule."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.approval import Diagnostics, approve
from evaluation.candidates import ConstantPolicy
from evaluation.config import ApprovalConfig, BehaviourModelConfig, EvaluateConfig, KernelConfig
from evaluation.data import EpisodeData
from evaluation.estimators import KernelDR, KernelIS, OPEInput
from evaluation.estimators.continuous import bandwidth, kernel_target_probability
from evaluation.evaluate import evaluate_candidates
from evaluation.propensity import fill_missing_propensities


def _logistic_bandit(n: int, seed: int) -> tuple[EpisodeData, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    logits = np.column_stack([np.zeros(n), 1.5 * x[:, 0], -x[:, 0] + x[:, 1]])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    a = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    means = np.array([1.0, 2.0, 0.5])
    r = means[a] + 0.5 * x[:, 0] + rng.normal(size=n)
    data = EpisodeData.from_arrays(
        episode=np.arange(n),
        action=a,
        reward=r,
        behaviour_propensity=None,
        n_actions=3,
        observation=x.astype(np.float32),
        decision_id=np.array([f"d{i}" for i in range(n)]),
    )
    return data, p


@pytest.mark.parametrize("backend", ["offline_rl", "sklearn"])
def test_missing_propensities_are_estimated_cross_fitted_and_flagged(backend: str) -> None:
    data, p_true = _logistic_bandit(6000, seed=0)
    filled, report = fill_missing_propensities(data, BehaviourModelConfig(backend=backend))
    assert report is not None
    true_logged = p_true[np.arange(data.n_decisions), data.action]
    assert np.mean(np.abs(filled.behaviour_propensity - true_logged)) < 0.03
    assert filled.propensity_source is not None
    assert set(filled.propensity_source) == {"estimated"}
    assert report.n_filled == 6000 and report.share_filled == 1.0
    assert report.expected_calibration_error is not None
    assert report.expected_calibration_error < 0.03
    assert filled.behaviour_action_probabilities is not None


def test_evaluation_with_estimated_propensities_recovers_a_constant_rule() -> None:
    data, _ = _logistic_bandit(6000, seed=1)
    cfg = EvaluateConfig(estimators=["ipw", "snipw", "dr_bandit"], primary_estimator="dr_bandit")
    cfg.bootstrap.n_resamples = 200
    result = evaluate_candidates(data, [ConstantPolicy(1)], config=cfg)
    assert result.propensity["estimated"] is True
    assert "ESTIMATED" in result.propensity["note"]
    est = result.candidates[0].estimate("dr_bandit")
    truth = 2.0  # mean reward of action 1 (the x effect averages to 0)
    assert abs(est.estimate - truth) < 4 * est.se + 0.02
    assert result.to_dict()["behaviour_model"]["propensities_estimated"] is True


def _continuous_bandit(n: int, seed: int) -> EpisodeData:
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=n)
    mu, sd = 0.1 + 0.1 * x, 0.04
    a = mu + sd * rng.standard_normal(n)
    density = np.exp(-0.5 * ((a - mu) / sd) ** 2) / (np.sqrt(2 * np.pi) * sd)
    r = 1.0 - 20.0 * (a - 0.15) ** 2 + 0.2 * x + 0.1 * rng.standard_normal(n)
    return EpisodeData.from_arrays(
        episode=np.arange(n),
        action=a,
        reward=r,
        behaviour_propensity=density,
        continuous=True,
        action_low=-0.1,
        action_high=0.4,
        observation=x[:, None].astype(np.float32),
    )


@pytest.mark.parametrize("backend", ["offline_rl", "sklearn"])
def test_missing_continuous_densities_are_estimated(backend: str) -> None:
    data = _continuous_bandit(4000, seed=5)
    true_density = data.behaviour_propensity.copy()
    missing = data.with_propensities(
        np.full(data.n_decisions, np.nan), source=np.full(data.n_decisions, "missing")
    )
    filled, report = fill_missing_propensities(missing, BehaviourModelConfig(backend=backend))
    assert report is not None and report.n_filled == 4000
    assert np.corrcoef(filled.behaviour_propensity, true_density)[0, 1] > 0.9
    assert np.median(filled.behaviour_propensity / true_density) == pytest.approx(1.0, abs=0.15)


def test_bandwidth_rule_is_silverman_with_the_fifth_root() -> None:
    a = np.random.default_rng(0).normal(size=1000)
    iqr = np.subtract(*np.quantile(a, [0.75, 0.25]))
    expected = 1.06 * min(a.std(ddof=1), iqr / 1.34) * 1000 ** (-0.2)
    assert bandwidth(a) == pytest.approx(expected)
    assert bandwidth(a, KernelConfig(bandwidth_scale=2.0)) == pytest.approx(2 * expected)
    assert bandwidth(a, KernelConfig(bandwidth=0.3)) == 0.3


@pytest.mark.parametrize("rate", [0.12, 0.18])
def test_kernel_estimators_recover_a_constant_discount_rate(rate: float) -> None:
    data = _continuous_bandit(20_000, seed=2)
    truth = 1.0 - 20.0 * (rate - 0.15) ** 2 + 0.1
    k, h = kernel_target_probability(data, np.full(data.n_decisions, rate))
    x = data.observation[:, 0]  # type: ignore[index]
    model = lambda act: 1.0 - 20.0 * (act - 0.15) ** 2 + 0.2 * x  # noqa: E731
    inp = OPEInput(data, k, q_logged=model(data.action), v_hat=model(np.full_like(x, rate)))
    smoothing_bias = 20.0 * h**2
    kis = KernelIS().estimate_policy_value(inp)
    kdr = KernelDR().estimate_policy_value(inp)
    se = np.std(inp.rho * data.reward) / np.sqrt(data.n_decisions)
    assert abs(kis - truth) < 4 * se + smoothing_bias
    assert abs(kdr - truth) < 0.01 + smoothing_bias


def test_continuous_evaluation_end_to_end() -> None:
    data = _continuous_bandit(8000, seed=3)
    cfg = EvaluateConfig(estimators=["pdis", "wpdis", "dr", "dm"])
    cfg.bootstrap.n_resamples = 100
    result = evaluate_candidates(data, ["rule:constant=0.15", "rule:behaviour"], config=cfg)
    best = result.candidates[0]
    names = {e.estimator for e in best.estimates}
    assert {"kernel_is", "kernel_wis", "kernel_dr", "dm"} <= names
    assert best.primary_estimator == "kernel_dr"
    assert best.estimate("kernel_dr").estimate == pytest.approx(1.1, abs=0.03)
    assert best.diagnostics["kernel_bandwidth"] > 0
    behaviour = result.candidates[1]
    assert behaviour.estimate("kernel_is").estimate == pytest.approx(result.behaviour.estimate)


def _diag(**over: float) -> Diagnostics:
    base = {"ess": 500.0, "ess_fraction": 0.5, "max_weight_share": 0.01, "unsupported_share": 0.0}
    base.update(over)
    return Diagnostics(**base)


def test_approval_approves_only_when_the_bound_beats_the_bar_and_checks_pass() -> None:
    cfg = ApprovalConfig(min_improvement=0.1)
    ok = approve(lower_bound=1.2, behaviour_value=1.0, diagnostics=_diag(), config=cfg)
    assert ok.approved and ok.decided_by.startswith("Approved")
    assert all(c.passed for c in ok.checks)
    short = approve(lower_bound=1.05, behaviour_value=1.0, diagnostics=_diag(), config=cfg)
    assert not short.approved and "not shown to beat" in short.decided_by
    improvement = next(c for c in short.checks if c.name == "improvement")
    assert improvement.threshold == pytest.approx(1.1) and improvement.value == 1.05
    rel = approve(
        lower_bound=1.2,
        behaviour_value=1.0,
        diagnostics=_diag(),
        config=ApprovalConfig(min_relative_improvement=0.25),
    )
    assert not rel.approved  # margin 0.25 * |1.0|
    unsafe = approve(
        lower_bound=5.0, behaviour_value=1.0, diagnostics=_diag(max_weight_share=0.4), config=cfg
    )
    assert not unsafe.approved and "largest_weight_share" in unsafe.decided_by
    spread = approve(
        lower_bound=5.0,
        behaviour_value=1.0,
        diagnostics=_diag(family_spread=1.0, primary_se=0.1),
        config=cfg,
    )
    assert not spread.approved and "estimator_agreement" in spread.decided_by
    calib = approve(
        lower_bound=5.0,
        behaviour_value=1.0,
        diagnostics=_diag(calibration_error=0.2),
        config=cfg,
    )
    assert not calib.approved and "propensity_calibration" in calib.decided_by
    assert calib.to_dict()["decision"] == "reject"
