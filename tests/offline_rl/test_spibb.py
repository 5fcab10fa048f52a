"""SPIBB, Soft-SPIBB and mixtures against exact dynamic programming on a small tabular MDP.

The MDP is ``test_truth_tabular``'s (4 states, 3 actions, horizon 5, gamma 0.9, seed 1) with
noisier rewards (sd 1.0). The logging policy is good but not optimal: a softmax of the optimal
policy's action values at temperature 0.3 (true value 3.837 against 4.148 for the best
stationary policy), so a model-based agent fitted on few episodes has much to lose.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from evaluation.testing.synthetic import TabularMDP, softmax_policy
from offline_rl.errors import TrainingError
from offline_rl.spibb import (
    discounted_occupancy,
    estimate_from_episodes,
    finite_horizon_q,
    mixture_policy,
    occupancy_weighted_q,
    soft_spibb_distance,
    soft_spibb_policy,
    soft_spibb_tabular,
    spibb_policy,
    spibb_tabular,
)

S, K, H, GAMMA = 4, 3, 5, 0.9
MDP = TabularMDP.random(n_states=S, n_actions=K, horizon=H, gamma=GAMMA, reward_sd=1.0, seed=1)
UNIFORM = np.full((S, K), 1.0 / K)
ALL_SEEN = np.full((S, K), 1e9)
OPTIMAL = spibb_tabular(MDP, UNIFORM, ALL_SEEN, 0, GAMMA, H)  # policy iteration, true MDP
BEHAVIOUR = softmax_policy(occupancy_weighted_q(MDP, OPTIMAL, GAMMA, H), temperature=0.3)
TOLERANCE = 0.05  # "worse than the behaviour": by more than 0.05 (1.3 % of its value)


def _random_rows(seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    behaviour = rng.dirichlet(np.ones(4), size=n)
    counts = rng.integers(0, 40, size=(n, 4)).astype(float)  # about 1 in 40 pairs unseen
    return q, behaviour, counts


# ----------------------------------------------------------------------------- mixture
def test_mixture_endpoints_and_exact_probabilities() -> None:
    greedy = np.eye(K)[[0, 1, 2, 0]]
    assert np.array_equal(mixture_policy(BEHAVIOUR, greedy, 0.0), BEHAVIOUR)
    assert np.array_equal(mixture_policy(BEHAVIOUR, greedy, 1.0), greedy)
    half = mixture_policy(BEHAVIOUR, greedy, 0.5)
    np.testing.assert_allclose(half, (BEHAVIOUR + greedy) / 2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(half.sum(axis=1), 1.0, atol=1e-12)


def test_mixture_value_is_not_linear_but_its_slope_at_zero_is_the_advantage() -> None:
    """V((1 - e) pi_b + e pi) is a polynomial in e (the state distribution moves too), not a
    line; its derivative at 0 is sum_s D(s) sum_a (pi - pi_b) Qbar (performance difference)."""
    target = OPTIMAL
    values = np.array([MDP.value(mixture_policy(BEHAVIOUR, target, e)) for e in (0, 0.5, 1)])
    curvature = values[1] - (values[0] + values[2]) / 2
    assert abs(curvature) > 1e-3  # measured: +0.0033 (V 3.8370, 3.9957, 4.1478)
    h = 1e-6
    slope = (MDP.value(mixture_policy(BEHAVIOUR, target, h)) - values[0]) / h
    occupancy = discounted_occupancy(MDP, BEHAVIOUR, GAMMA, H).sum(axis=0)
    qbar = occupancy_weighted_q(MDP, BEHAVIOUR, GAMMA, H)
    expected = float(occupancy @ np.sum((target - BEHAVIOUR) * qbar, axis=1))
    assert slope == pytest.approx(expected, abs=1e-4)


def test_mixture_validates_its_inputs() -> None:
    with pytest.raises(TrainingError, match="sum to 1"):
        mixture_policy(BEHAVIOUR * 0.9, BEHAVIOUR, 0.5)
    with pytest.raises(TrainingError, match="shape"):
        mixture_policy(BEHAVIOUR, BEHAVIOUR[:2], 0.5)
    with pytest.raises(TrainingError, match="epsilon"):
        mixture_policy(BEHAVIOUR, BEHAVIOUR, 1.5)


# ----------------------------------------------------------------------------- Pi_b-SPIBB
def test_spibb_projection_by_hand() -> None:
    q = np.array([[10.0, 1.0, 2.0], [1.0, 3.0, 3.0], [5.0, 0.0, 0.0]])
    behaviour = np.array([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
    counts = np.array([[3, 50, 50], [50, 50, 50], [1, 2, 3]], dtype=float)
    pi = spibb_policy(q, behaviour, counts, n_wedge=10)
    # row 0: action 0 is bootstrapped (kept at 0.2 although its q is highest), the rest goes
    # to the best non-bootstrapped action; row 1: tie -> lowest index; row 2: all bootstrapped
    expected = np.array([[0.2, 0.0, 0.8], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(pi, expected, rtol=0, atol=1e-15)


def test_spibb_limits_are_the_behaviour_and_the_greedy_policy() -> None:
    q, behaviour, counts = _random_rows(0)
    assert np.array_equal(spibb_policy(q, behaviour, counts, np.inf), behaviour)
    assert np.array_equal(spibb_policy(q, behaviour, counts, 0), np.eye(4)[np.argmax(q, axis=1)])
    pi = spibb_policy(q, behaviour, counts, 15)
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, atol=1e-12)
    boot = counts < 15
    assert np.array_equal(pi[boot], behaviour[boot])
    assert np.all(np.sum(pi * q, axis=1) >= np.sum(behaviour * q, axis=1) - 1e-12)


def test_spibb_tabular_limits() -> None:
    data, _ = MDP.sample(BEHAVIOUR, 100, np.random.default_rng(0))
    model = estimate_from_episodes(data, K, H)
    assert np.array_equal(
        spibb_tabular(model, BEHAVIOUR, model.counts, np.inf, GAMMA, H), BEHAVIOUR
    )
    greedy = spibb_tabular(model, BEHAVIOUR, model.counts, 0, GAMMA, H)
    assert set(np.unique(greedy)) <= {0.0, 1.0}
    assert model.value(greedy) >= model.value(BEHAVIOUR)


def test_policy_iteration_finds_the_best_deterministic_policy_of_the_true_mdp() -> None:
    """The occupancy-weighted Qbar makes stationary policy iteration reach the best of the 81
    deterministic policies (projecting Q_0 instead stops at 3.966 < 4.148 here)."""
    best = max(MDP.value(np.eye(K)[list(c)]) for c in itertools.product(range(K), repeat=S))
    assert MDP.value(OPTIMAL) == pytest.approx(best, abs=1e-12)
    assert best == pytest.approx(4.1478, abs=1e-4)


# ----------------------------------------------------------------------------- Soft-SPIBB
def _reference_soft_row(
    q: np.ndarray, behaviour: np.ndarray, err: np.ndarray, epsilon: float
) -> tuple[np.ndarray, float]:
    """The authors' ``Soft_SPIBB_sort_Q`` row loop (github.com/RomainLaroche/SPIBB), without
    our budget cap, scalar; returns the row and the lowest budget left along the way."""
    pi = behaviour.copy()
    budget = lowest = epsilon
    for a_bot in np.argsort(q, kind="stable"):
        mass_bot = min(pi[a_bot], budget / (2 * err[a_bot]))
        for a_top in np.argsort(-(q - q[a_bot]) / err, kind="stable"):
            if a_top == a_bot:
                break
            mass_top = min(mass_bot, budget / (2 * err[a_top]))
            if mass_top > 0:
                mass_bot -= mass_top
                pi[a_bot] -= mass_top
                pi[a_top] += mass_top
                budget -= mass_top * (err[a_bot] + err[a_top])
                lowest = min(lowest, budget)
                if mass_bot == 0:
                    break
    return pi, lowest


def test_soft_spibb_by_hand() -> None:
    q = np.array([[0.0, 1.0], [0.0, 1.0]])
    behaviour = np.array([[0.5, 0.5], [0.5, 0.5]])
    counts = np.array([[4.0, 4.0], [0.0, 4.0]])  # e = 1 / sqrt(4) = 0.5; unseen: inf
    pi = soft_spibb_policy(q, behaviour, counts, epsilon=0.2)
    # row 0: 0.2 moves (0.5 * 0.2 + 0.5 * 0.2 = epsilon); row 1: the unseen action keeps pi_b
    np.testing.assert_allclose(pi, [[0.3, 0.7], [0.5, 0.5]], rtol=0, atol=1e-15)


def test_soft_spibb_constraint_holds_and_rows_are_distributions() -> None:
    q, behaviour, counts = _random_rows(1)
    assert np.array_equal(soft_spibb_policy(q, behaviour, counts, 0.0), behaviour)
    for epsilon, kappa in [(0.05, 1.0), (0.5, 1.0), (2.0, 1.0), (1.0, 4.2), (50.0, 1.0)]:
        pi = soft_spibb_policy(q, behaviour, counts, epsilon, kappa)
        assert np.all(soft_spibb_distance(pi, behaviour, counts, kappa) <= epsilon + 1e-9)
        assert np.all(pi >= -1e-15)
        np.testing.assert_allclose(pi.sum(axis=1), 1.0, atol=1e-12)
        unseen = counts == 0
        assert np.array_equal(pi[unseen], behaviour[unseen])
        assert np.all(np.sum(pi * q, axis=1) >= np.sum(behaviour * q, axis=1) - 1e-12)


def test_soft_spibb_matches_the_authors_loop_and_caps_its_overspending() -> None:
    q, behaviour, counts = _random_rows(2, n=300)
    err = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1e-300)), np.inf)
    overspent = 0
    for epsilon in (0.1, 0.5, 2.0):
        ours = soft_spibb_policy(q, behaviour, counts, epsilon)
        for i in range(len(q)):
            ref, lowest = _reference_soft_row(q[i], behaviour[i], err[i], epsilon)
            if lowest >= 0:  # our cap never binds: the same transfers
                np.testing.assert_allclose(ours[i], ref, rtol=0, atol=1e-12)
            else:
                overspent += 1
    # measured: the authors' loop overspends its budget on 36 of these 900 rows, and breaks the
    # constraint itself (sum_a e |pi - pi_b| > epsilon) on 30 of them
    assert overspent < 0.1 * 3 * len(q)
    # one a- feeding two a+: e = (1, 10, 0.1), pi_b(a-) = 0.5; the authors' loop spends 1.045
    q1 = np.array([[0.0, 1.0, 0.005]])
    b1 = np.array([[0.5, 0.25, 0.25]])
    c1 = np.array([[100.0, 1.0, 10_000.0]])  # kappa 10: e = 10 / sqrt(n)
    ref, _ = _reference_soft_row(q1[0], b1[0], np.array([1.0, 10.0, 0.1]), 1.0)
    assert soft_spibb_distance(ref[None], b1, c1, kappa=10.0)[0] == pytest.approx(1.045)
    ours = soft_spibb_policy(q1, b1, c1, 1.0, kappa=10.0)
    assert soft_spibb_distance(ours, b1, c1, kappa=10.0)[0] <= 1.0 + 1e-12


def test_soft_spibb_validates_its_inputs() -> None:
    q, behaviour, counts = _random_rows(3, n=5)
    with pytest.raises(TrainingError, match="kappa"):
        soft_spibb_policy(q, behaviour, counts, 0.1, kappa=0.0)
    with pytest.raises(TrainingError, match="epsilon"):
        soft_spibb_policy(q, behaviour, counts, -0.1)
    with pytest.raises(TrainingError, match="counts"):
        soft_spibb_policy(q, behaviour, -counts, 0.1)
    with pytest.raises(TrainingError, match="q"):
        spibb_policy(q[:, :3], behaviour, counts, 5)


# ----------------------------------------------------------------------------- MLE MDP
def test_mle_mdp_recovers_the_truth_and_plans_like_tabular_mdp() -> None:
    data, _ = MDP.sample(BEHAVIOUR, 20_000, np.random.default_rng(1))
    model = estimate_from_episodes(data, K, H)
    assert model.counts.sum() == data.n_decisions
    seen = model.counts >= 500
    assert np.max(np.abs(model.transition - MDP.transition)[seen]) < 0.06
    assert np.max(np.abs(model.end - MDP.end)[seen]) < 0.05
    assert np.max(np.abs(model.reward_mean - MDP.reward_mean)[seen]) < 0.1
    assert model.value(BEHAVIOUR) == pytest.approx(MDP.value(BEHAVIOUR), abs=0.05)
    # the same dynamic programme as evaluation.testing.synthetic's
    as_mdp = TabularMDP(
        model.initial, model.transition, model.end, model.reward_mean, 0.0, H, GAMMA
    )
    np.testing.assert_allclose(
        finite_horizon_q(model, OPTIMAL, GAMMA, H), as_mdp.q_values(OPTIMAL), atol=1e-12
    )


def test_mle_mdp_unseen_pairs_end_with_reward_zero() -> None:
    data, _ = MDP.sample(BEHAVIOUR, 3, np.random.default_rng(2))
    model = estimate_from_episodes(data, K, H)
    unseen = model.counts == 0
    assert unseen.any()
    assert np.all(model.end[unseen] == 1.0) and np.all(model.reward_mean[unseen] == 0.0)
    np.testing.assert_allclose(model.transition.sum(axis=2), 1.0)


# ----------------------------------------------------------------------------- safety
def _theorem2_zeta(n_wedge: float, rho_spibb_hat: float, rho_b_hat: float) -> float:
    """Laroche et al. (2019), Theorem 2: with probability 1 - delta,
    rho(pi_spibb, M*) >= rho(pi_b, M*) - zeta, where
    zeta = 4 V_max / (1 - gamma) sqrt(2 / N_wedge log(2 |X| |A| 2^|X| / delta))
           - rho(pi_spibb, M_hat) + rho(pi_b, M_hat).
    V_max = R_max / (1 - gamma); our rewards are Gaussian, so R_max = max |mean| + 5 sd (a
    draw beyond it has probability < 6e-7). The theorem is stated for a discounted MDP without
    a horizon; at these sizes it is vacuous anyway (its first term is 2,733 at N_wedge = 20 and
    1,729 at 50, against values near 4), so this is a sanity check and the empirical rates
    below are the test."""
    r_max = float(np.max(np.abs(MDP.reward_mean)) + 5 * MDP.reward_sd)
    v_max = r_max / (1 - GAMMA)
    log_term = np.log(2 * S * K * 2**S / DELTA)
    first = 4 * v_max / (1 - GAMMA) * np.sqrt(2 / n_wedge * log_term)
    return float(first - rho_spibb_hat + rho_b_hat)


DELTA = 0.05
N_DATASETS, N_EPISODES = 200, 200
WEDGES = (20, 50)
SOFT_EPSILON = 0.05


@pytest.fixture(scope="module")
def experiment() -> dict[str, Any]:
    return _run_experiment()


def _run_experiment() -> dict[str, Any]:
    """True improvement over the behaviour of each method on N_DATASETS datasets."""
    rng = np.random.default_rng(123)
    v_b = MDP.value(BEHAVIOUR)
    gaps: dict[str, list[float]] = {"greedy": [], "soft": [], **{f"spibb{w}": [] for w in WEDGES}}
    zeta_slack: list[float] = []
    for _ in range(N_DATASETS):
        data, _ = MDP.sample(BEHAVIOUR, N_EPISODES, rng)
        model = estimate_from_episodes(data, K, H)
        greedy = spibb_tabular(model, BEHAVIOUR, model.counts, 0, GAMMA, H)
        gaps["greedy"].append(MDP.value(greedy) - v_b)
        soft = soft_spibb_tabular(model, BEHAVIOUR, model.counts, SOFT_EPSILON, GAMMA, H)
        gaps["soft"].append(MDP.value(soft) - v_b)
        for w in WEDGES:
            pi = spibb_tabular(model, BEHAVIOUR, model.counts, w, GAMMA, H)
            gaps[f"spibb{w}"].append(MDP.value(pi) - v_b)
            zeta = _theorem2_zeta(w, model.value(pi), model.value(BEHAVIOUR))
            zeta_slack.append(MDP.value(pi) - (v_b - zeta))
    return {"gaps": {k: np.array(v) for k, v in gaps.items()}, "slack": np.array(zeta_slack)}


@pytest.mark.slow
def test_spibb_respects_the_theorem_2_bound(experiment: dict[str, Any]) -> None:
    slack = experiment["slack"]
    assert np.mean(slack < 0) <= DELTA  # measured: never violated; smallest slack 1,728
    assert slack.min() > 0


@pytest.mark.slow
def test_spibb_is_rarely_worse_than_the_behaviour_where_greedy_often_is(
    experiment: dict[str, Any],
) -> None:
    """200 datasets of 200 episodes (about 560 decisions; the rarest pairs seen a few times).

    Measured share of datasets worse than the behaviour by more than 0.05 / mean true gain /
    share that improves at all: greedy policy of the MLE MDP 0.205 / +0.057 / 0.795; Pi_b-SPIBB
    N_wedge=20 0.050 / +0.165 / 0.90; N_wedge=50 0.005 / +0.039 / 0.385; Approx-Soft-SPIBB
    epsilon=0.05, kappa=1, 0.000 / +0.156 / 1.00. (With a poor logging policy, e.g. a softmax of
    random logits, the greedy policy is rarely worse and this contrast disappears: the setting
    was picked for a good logging policy, the case SPIBB is for.)
    """
    worse = {k: float(np.mean(v < -TOLERANCE)) for k, v in experiment["gaps"].items()}
    mean = {k: float(np.mean(v)) for k, v in experiment["gaps"].items()}
    assert worse["greedy"] >= 0.15, worse
    assert worse["spibb20"] <= 0.08, worse
    assert worse["spibb50"] <= 0.02, worse
    assert worse["soft"] <= 0.02, worse
    for key in ("spibb20", "spibb50", "soft"):
        assert worse["greedy"] >= 2.5 * worse[key], worse
    assert mean["spibb20"] > mean["greedy"] + 0.05, mean
    assert mean["soft"] > mean["greedy"] + 0.05, mean


def test_with_enough_data_spibb_and_soft_spibb_strictly_improve() -> None:
    data, _ = MDP.sample(BEHAVIOUR, 5_000, np.random.default_rng(7))
    model = estimate_from_episodes(data, K, H)
    v_b = MDP.value(BEHAVIOUR)
    for n_wedge in (20, 50):
        pi = spibb_tabular(model, BEHAVIOUR, model.counts, n_wedge, GAMMA, H)
        assert MDP.value(pi) > v_b + 0.2  # measured: +0.309 (the optimum is +0.311)
    soft = soft_spibb_tabular(model, BEHAVIOUR, model.counts, SOFT_EPSILON, GAMMA, H)
    assert np.all(soft_spibb_distance(soft, BEHAVIOUR, model.counts) <= SOFT_EPSILON + 1e-9)
    assert MDP.value(soft) > v_b + 0.2  # measured: +0.311
