"""The paired improvement and its power analysis, against closed forms and exact DP."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from evaluation.approval import Diagnostics, approve
from evaluation.candidates import TablePolicy
from evaluation.config import ApprovalConfig, EvaluateConfig
from evaluation.data import EpisodeData
from evaluation.diagnostics import decision_weight_diagnostics
from evaluation.estimators import DoublyRobust, OnPolicyValue, OPEInput, WeightedIS
from evaluation.evaluate import evaluate_candidates
from evaluation.improvement import paired_difference, power_analysis
from evaluation.intervals import summarise
from evaluation.testing.synthetic import TabularMDP, mix, softmax_policy

MDP = TabularMDP.random(n_states=4, n_actions=3, horizon=5, seed=1)
BEHAVIOUR = softmax_policy(np.random.default_rng(0).normal(size=(4, 3)))
GREEDY = np.eye(3)[[0, 1, 2, 0]]
CLOSE = mix(BEHAVIOUR, GREEDY, 0.2)


def _input(policy: np.ndarray, n: int, seed: int) -> tuple[OPEInput, object]:
    data, states = MDP.sample(BEHAVIOUR, n, np.random.default_rng(seed))
    q = MDP.q_values(policy)[data.step, states] * 0.7  # a wrong but fixed model
    inp = OPEInput(
        data,
        target_probability=policy[states, data.action],
        target_distribution=policy[states],
        q_logged=q[np.arange(data.n_decisions), data.action],
        v_hat=np.sum(policy[states] * q, axis=1),
    )
    return inp, data


def test_paired_mean_type_is_the_mean_of_per_episode_differences() -> None:
    inp, data = _input(CLOSE, 500, 1)
    stats_dr = DoublyRobust().episode_statistics(inp)
    diff = paired_difference(stats_dr, data.returns)  # type: ignore[attr-defined]
    expected = stats_dr.contributions() - data.returns  # type: ignore[attr-defined]
    assert diff.mean_type
    assert diff.value() == pytest.approx(expected.mean(), abs=1e-12)
    s = summarise([diff], n_resamples=0)[0]
    assert s.se == pytest.approx(expected.std(ddof=1) / math.sqrt(len(expected)), rel=1e-9)


def test_paired_ratio_form_is_the_ratio_estimate_minus_the_mean_return() -> None:
    inp, data = _input(CLOSE, 500, 2)
    wis = WeightedIS().episode_statistics(inp)
    diff = paired_difference(wis, data.returns)  # type: ignore[attr-defined]
    assert diff.value() == pytest.approx(wis.value() - data.returns.mean(), abs=1e-12)  # type: ignore[attr-defined]


def test_the_behaviour_policy_improves_on_itself_by_exactly_zero() -> None:
    inp, data = _input(BEHAVIOUR, 300, 3)
    on = OnPolicyValue().episode_statistics(inp)
    s = summarise([paired_difference(on, data.returns)], n_resamples=100)[0]  # type: ignore[attr-defined]
    assert s.estimate == pytest.approx(0.0, abs=1e-12)
    assert s.se == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_paired_dr_is_unbiased_for_the_exact_gain_and_tighter_than_the_level() -> None:
    truth = MDP.value(CLOSE) - MDP.value(BEHAVIOUR)
    estimates, paired_se, level_se, covered = [], [], [], 0
    reps = 300
    for seed in range(reps):
        inp, data = _input(CLOSE, 400, 100 + seed)
        dr = DoublyRobust().episode_statistics(inp)
        paired, level = summarise(
            [paired_difference(dr, data.returns), dr], n_resamples=0  # type: ignore[attr-defined]
        )
        estimates.append(paired.estimate)
        paired_se.append(paired.se)
        level_se.append(level.se)
        covered += abs(paired.estimate - truth) <= 1.96 * paired.se
    mean = float(np.mean(estimates))
    assert abs(mean - truth) < 4 * np.std(estimates) / math.sqrt(reps)
    # the logged return is its own control variate: 1.29x tighter in this small MDP (the
    # more purchase luck in the returns, the larger the gain; see benchmarks.approval_truth)
    assert np.mean(level_se) > 1.2 * np.mean(paired_se)
    lo, _ = stats.beta.ppf([0.025, 0.975], covered, reps - covered + 1)
    assert lo < 0.95 and covered / reps > 0.9


def test_power_analysis_inverts_the_t_bound() -> None:
    n, se, margin, delta = 400, 0.05, 0.1, 0.05
    t = float(stats.t.ppf(1 - delta, n - 1))
    power = power_analysis(0.15, se, n, margin, delta, episodes_per_day=50.0)
    assert power.smallest_certifiable_gain == pytest.approx(margin + t * se)
    assert power.sd_per_episode == pytest.approx(se * math.sqrt(n))
    # with the episodes it asks for, the same estimate and sd put the bound on the margin
    needed = power.episodes_needed
    assert needed is not None
    t_needed = float(stats.t.ppf(1 - delta, n - 1))
    assert 0.15 - t_needed * power.sd_per_episode / math.sqrt(needed) == pytest.approx(margin)
    assert power.more_days == pytest.approx((needed - n) / 50.0)
    assert "more days" in power.sentence(margin)
    below = power_analysis(0.05, se, n, margin, delta)
    assert below.episodes_needed is None and "would not certify" in below.sentence(margin)


def test_verdict_words_say_gain_and_how_much_more_data() -> None:
    power = power_analysis(0.2, 0.15, 400, 0.0, 0.05, episodes_per_day=20.0)
    verdict = approve(
        lower_bound=10.0 - 0.05, behaviour_value=10.0,
        diagnostics=Diagnostics(ess=300.0, ess_fraction=0.75, max_weight_share=0.01,
                                unsupported_share=0.0),
        config=ApprovalConfig(), improvement=0.2, power=power,
    )
    assert not verdict.approved
    assert "estimated gain is 0.2" in verdict.decided_by
    assert "more days" in verdict.decided_by
    assert verdict.to_dict()["power"]["episodes_needed"] == pytest.approx(power.episodes_needed)


def _logged_with_table(
    policy: np.ndarray, n: int, seed: int
) -> tuple[EpisodeData, pl.DataFrame]:
    """Logs of the behaviour policy and ``policy`` as a long table per logged decision."""
    data, states = MDP.sample(BEHAVIOUR, n, np.random.default_rng(seed))
    assert data.decision_id is not None
    table = pl.DataFrame(
        {
            "decision_id": np.repeat(data.decision_id, 3),
            "action": np.tile(np.arange(3), data.n_decisions),
            "probability": policy[states].reshape(-1),
        }
    )
    return data, table


def test_fit_bootstrap_replaces_the_direct_method_interval_in_evaluate() -> None:
    data, table = _logged_with_table(CLOSE, 300, 9)
    results = {}
    for enabled in (False, True):
        cfg = EvaluateConfig.model_validate(
            {"estimators": ["dr", "dm"], "bootstrap": {"n_resamples": 100},
             "fit_bootstrap": {"enabled": enabled, "n_resamples": 40},
             "direct": {"step_interactions": True}}
        )
        out = evaluate_candidates(data, [TablePolicy(table, name="close")], config=cfg)
        results[enabled] = out.candidate("close").estimate("dm")
    fixed, refit = results[False], results[True]
    assert refit.ci_method == "fit bootstrap percentile"
    assert refit.estimate == pytest.approx(fixed.estimate)
    assert refit.se > 1.5 * fixed.se  # the fit's own variance, ignored by the fixed fit


def test_mdr_in_evaluate_uses_the_refit_bootstrap_and_decides_by_default() -> None:
    data, table = _logged_with_table(CLOSE, 400, 11)
    cfg = EvaluateConfig.model_validate({"bootstrap": {"n_resamples": 100}})
    result = evaluate_candidates(data, [TablePolicy(table, name="close")], config=cfg)
    cand = result.candidate("close")
    assert cand.primary_estimator == "mdr"
    row = cand.estimate("mdr")
    assert row.ci_method == "refit bootstrap percentile"
    improvement = cand.improvements["mdr"]
    assert cand.improvement is improvement
    assert improvement.ci_low < improvement.estimate < improvement.ci_high
    # the gate's bound is the paired one, in value units
    assert cand.lower_bound == pytest.approx(result.behaviour.estimate + improvement.lower_bound)


def test_decision_weight_diagnostics_closed_form() -> None:
    mu = np.array([0.0, 1.0, 3.0, 0.0])
    diag = decision_weight_diagnostics(mu)
    assert diag["ess"] == pytest.approx(16.0 / 10.0)
    assert diag["ess_fraction"] == pytest.approx(0.4)
    assert diag["max_weight_share"] == pytest.approx(0.75)
    assert decision_weight_diagnostics(np.zeros(3))["ess"] == 0.0


def test_mdr_primary_judges_overlap_on_its_own_weights() -> None:
    data, table = _logged_with_table(GREEDY, 400, 12)
    cfg = EvaluateConfig.model_validate({"bootstrap": {"n_resamples": 50}})
    cand = evaluate_candidates(data, [TablePolicy(table, name="greedy")], config=cfg)
    diag = cand.candidate("greedy").diagnostics
    assert diag["weights_basis"].startswith("marginal decision weights")
    # a deterministic policy: few whole episodes agree with it, many single decisions do
    assert diag["ess_fraction"] > 5 * diag["trajectory_ess_fraction"]
