"""Estimators on hand-computed examples, and against a brute-force padded reference."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.data import EpisodeData
from evaluation.errors import EvaluationError
from evaluation.estimators import (
    IPW,
    SNIPW,
    DirectMethod,
    DirectMethodBandit,
    DoublyRobust,
    DoublyRobustBandit,
    OnPolicyValue,
    OPEInput,
    PerDecisionIS,
    SelfNormalizedDoublyRobust,
    TrajectoryIS,
    WeightedDoublyRobust,
    WeightedIS,
    WeightedPerDecisionIS,
)


def _two_episodes() -> OPEInput:
    # Episode A: two decisions (rho 2, 2), episode B: one decision (rho 0.5); gamma 0.5.
    data = EpisodeData.from_arrays(
        episode=np.array([0, 0, 1]),
        action=np.array([0, 1, 1]),
        reward=np.array([1.0, 2.0, 3.0]),
        behaviour_propensity=np.array([0.5, 0.25, 0.5]),
        gamma=0.5,
        n_actions=2,
    )
    return OPEInput(
        data,
        target_probability=np.array([1.0, 0.5, 0.25]),
        q_logged=np.array([1.5, 1.0, 2.0]),
        v_hat=np.array([1.2, 0.8, 2.5]),
    )


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        (TrajectoryIS(), 4.75),  # (4 * 2 + 0.5 * 3) / 2
        (PerDecisionIS(), 3.75),  # (2 * 1 + 0.5 * 4 * 2 + 0.5 * 3) / 2
        (WeightedIS(), 9.5 / 4.5),
        # step 0: (2 + 1.5) / (2 + 0.5); step 1: (0.5 * 4 * 2) / (4 + 0.5): B's frozen weight counts
        (WeightedPerDecisionIS(), 3.5 / 2.5 + 4.0 / 4.5),
        (DoublyRobust(), 3.0),  # A: 0.2 + 2.8, B: 3.0
        # step 0: (-1 + 0.5) / 2.5 + (1.2 + 2.5) / 2; step 1: 0.5 * (4 / 4.5 + 1.6 / 2.5)
        (WeightedDoublyRobust(), -0.2 + 1.85 + 0.5 * (4.0 / 4.5 + 1.6 / 2.5)),
        (DirectMethod(), 1.85),
    ],
)
def test_sequential_estimators_match_hand_computation(estimator: object, expected: float) -> None:
    assert estimator.estimate_policy_value(_two_episodes()) == pytest.approx(expected, abs=1e-12)  # type: ignore[attr-defined]


def _padded_reference(inp: OPEInput) -> dict[str, float]:
    """Brute force on a fixed-horizon padding: absorbing state, reward 0, ratio 1, model 0."""
    d = inp.data
    n, horizon = d.n_episodes, d.horizon
    r = np.zeros((n, horizon))
    rho = np.ones((n, horizon))
    q = np.zeros((n, horizon))
    v = np.zeros((n, horizon))
    for row in range(d.n_decisions):
        i, t = d.episode[row], d.step[row]
        r[i, t] = d.reward[row]
        rho[i, t] = inp.target_probability[row] / d.behaviour_propensity[row]
        q[i, t] = inp.q_logged[row]  # type: ignore[index]
        v[i, t] = inp.v_hat[row]  # type: ignore[index]
    w = np.cumprod(rho, axis=1)
    w_prev = np.hstack([np.ones((n, 1)), w[:, :-1]])
    g = d.gamma ** np.arange(horizon)
    wpdis = sum(g[t] * np.sum(w[:, t] * r[:, t]) / np.sum(w[:, t]) for t in range(horizon))
    wdr = 0.0
    for t in range(horizon):
        wdr += g[t] * np.sum(w[:, t] * (r[:, t] - q[:, t])) / np.sum(w[:, t])
        wdr += g[t] * np.sum(w_prev[:, t] * v[:, t]) / np.sum(w_prev[:, t])
    returns = (r * g).sum(axis=1)
    return {
        "is": float(np.mean(w[:, -1] * returns)),
        "pdis": float(np.mean((w * r * g).sum(axis=1))),
        "wis": float(np.sum(w[:, -1] * returns) / np.sum(w[:, -1])),
        "wpdis": float(wpdis),
        "dr": float(np.mean((g * (w * (r - q) + w_prev * v)).sum(axis=1))),
        "wdr": float(wdr),
    }


def test_variable_length_estimators_equal_padded_fixed_horizon_reference() -> None:
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 8, size=60)
    episode = np.repeat(np.arange(60), lengths)
    n = len(episode)
    data = EpisodeData.from_arrays(
        episode=episode,
        action=rng.integers(0, 3, size=n),
        reward=rng.normal(size=n),
        behaviour_propensity=rng.uniform(0.2, 0.9, size=n),
        gamma=0.9,
        n_actions=3,
    )
    inp = OPEInput(
        data,
        target_probability=rng.uniform(0.0, 1.0, size=n),
        q_logged=rng.normal(size=n),
        v_hat=rng.normal(size=n),
    )
    ref = _padded_reference(inp)
    ours = {
        "is": TrajectoryIS(),
        "pdis": PerDecisionIS(),
        "wis": WeightedIS(),
        "wpdis": WeightedPerDecisionIS(),
        "dr": DoublyRobust(),
        "wdr": WeightedDoublyRobust(),
    }
    for name, est in ours.items():
        assert est.estimate_policy_value(inp) == pytest.approx(ref[name], rel=1e-10), name


def _bandit() -> OPEInput:
    data = EpisodeData.from_arrays(
        episode=np.arange(3),
        action=np.array([0, 1, 1]),
        reward=np.array([1.0, 0.0, 2.0]),
        behaviour_propensity=np.array([0.5, 0.25, 0.8]),
        n_actions=2,
    )
    return OPEInput(
        data,
        target_probability=np.array([0.8, 0.5, 0.1]),
        q_logged=np.array([0.9, 0.2, 1.5]),
        v_hat=np.array([0.7, 0.4, 1.0]),
    )


def test_one_step_estimators_hand_computed_and_equal_to_sequential_forms() -> None:
    inp = _bandit()
    expected = {
        "ipw": 1.85 / 3,  # weights 1.6, 2, 0.125
        "snipw": 1.85 / 3.725,
        "dm": 0.7,
        "dr": (0.86 + 0.0 + 1.0625) / 3,
        "sndr": 0.7 + (0.16 - 0.4 + 0.0625) / 3.725,
    }
    bandit = {
        "ipw": IPW(),
        "snipw": SNIPW(),
        "dm": DirectMethodBandit(),
        "dr": DoublyRobustBandit(),
        "sndr": SelfNormalizedDoublyRobust(),
    }
    sequential = {
        "ipw": [TrajectoryIS(), PerDecisionIS()],
        "snipw": [WeightedIS(), WeightedPerDecisionIS()],
        "dm": [DirectMethod()],
        "dr": [DoublyRobust()],
        "sndr": [WeightedDoublyRobust()],
    }
    for name, value in expected.items():
        assert bandit[name].estimate_policy_value(inp) == pytest.approx(value, abs=1e-12)
        # the per-episode statistics (used by the bootstrap) give the same value
        assert bandit[name].episode_statistics(inp).value() == pytest.approx(value, abs=1e-12)
        for est in sequential[name]:
            assert est.estimate_policy_value(inp) == value or est.estimate_policy_value(
                inp
            ) == pytest.approx(value, abs=1e-12), (name, est.name)


def test_one_step_estimator_refuses_multi_step_episodes() -> None:
    with pytest.raises(EvaluationError, match="one-step"):
        IPW().estimate_policy_value(_two_episodes())


def test_behaviour_as_candidate_gives_the_on_policy_value_exactly() -> None:
    inp = _two_episodes()
    same = OPEInput(inp.data, target_probability=inp.data.behaviour_propensity.copy())
    on_policy = OnPolicyValue().estimate_policy_value(same)
    assert on_policy == pytest.approx((2.0 + 3.0) / 2)
    for est in (TrajectoryIS(), PerDecisionIS(), WeightedIS(), WeightedPerDecisionIS()):
        assert est.estimate_policy_value(same) == pytest.approx(on_policy, abs=1e-12)


def test_clipping_caps_each_ratio() -> None:
    inp = _two_episodes()
    clipped = OPEInput(inp.data, inp.target_probability, max_weight=1.5)
    # ratios 2, 2, 0.5 -> 1.5, 1.5, 0.5; weights A: 1.5, 2.25; B: 0.5
    assert PerDecisionIS().estimate_policy_value(clipped) == pytest.approx(
        (1.5 * 1 + 0.5 * 2.25 * 2 + 0.5 * 3) / 2
    )


def test_model_estimators_need_predictions() -> None:
    inp = _two_episodes()
    bare = OPEInput(inp.data, inp.target_probability)
    with pytest.raises(EvaluationError, match="model predictions"):
        DoublyRobust().estimate_policy_value(bare)
