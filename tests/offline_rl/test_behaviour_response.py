"""Behaviour models recover known logging policies; the response model ranks actions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import special

from offline_rl.behaviour import (
    behaviour_model,
    fill_propensities,
    fit_predict_crossfit,
    propensity_check,
)
from offline_rl.config import BehaviourConfig, ResponseConfig
from offline_rl.response import ResponseModel
from offline_rl.testing.synthetic import logging_weights, make_transitions, softmax

DISCRETE = {"type": "discrete", "n": 4}
CONTINUOUS = {"type": "continuous", "low": [0.0], "high": [0.3]}


def test_multinomial_recovers_a_known_softmax_policy() -> None:
    rng = np.random.default_rng(0)
    n, d = 6000, 5
    x = rng.normal(size=(n, d))
    w = logging_weights(d, 4, seed=11)
    true = softmax(x @ w)
    actions = (rng.random((n, 1)) > true.cumsum(axis=1)).sum(axis=1).clip(0, 3)
    model = behaviour_model(DISCRETE).fit(x[:5000], actions[:5000])
    est = model.predict_proba(x[5000:])
    assert np.abs(est - true[5000:]).mean() < 0.02
    check = propensity_check(
        true[5000:][np.arange(1000), actions[5000:]],
        model.propensity(x[5000:], actions[5000:]),
        est,
        actions[5000:],
    )
    assert check["relative_mae"] < 0.08
    assert check["ece"] < 0.02


def test_an_action_never_logged_gets_probability_zero() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    actions = rng.integers(0, 3, size=300)  # action 3 never logged
    probs = behaviour_model(DISCRETE).fit(x, actions).predict_proba(x)
    assert probs.shape == (300, 4)
    assert np.all(probs[:, 3] == 0.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_beta_regression_recovers_a_known_continuous_policy() -> None:
    rng = np.random.default_rng(2)
    n, d = 5000, 3
    x = rng.normal(size=(n, d))
    coef, phi = np.array([0.8, -0.5, 0.0]), 12.0
    mean = special.expit(x @ coef - 0.4)
    u = rng.beta(phi * mean, phi * (1 - mean))
    rates = 0.3 * u
    model = behaviour_model(CONTINUOUS).fit(x, rates)
    inner = model.estimator_
    np.testing.assert_allclose(inner.coef_, coef, atol=0.06)
    assert abs(inner.phi_ - phi) / phi < 0.1
    true_density = (
        np.exp(
            (phi * mean - 1) * np.log(u)
            + (phi * (1 - mean) - 1) * np.log1p(-u)
            - special.betaln(phi * mean, phi * (1 - mean))
        )
        / 0.3
    )
    est = model.propensity(x, rates)
    assert np.median(np.abs(est - true_density) / true_density) < 0.05


def test_crossfit_keeps_episodes_out_of_their_own_model() -> None:
    frame, _ = make_transitions(150, n_features=4, seed=5)
    obs = np.asarray(frame["observation"].to_numpy(), np.float64)
    act = frame["action"].to_numpy()
    groups = frame["episode_id"].to_numpy()
    result = fit_predict_crossfit(obs, act, groups, DISCRETE, BehaviourConfig(n_folds=3))
    assert set(np.unique(result.fold)) == {0, 1, 2}
    per_episode = (
        pl.DataFrame({"g": groups, "f": result.fold}).group_by("g").agg(pl.col("f").n_unique())
    )
    assert per_episode["f"].max() == 1  # an episode never spans two folds
    assert result.probabilities is not None
    np.testing.assert_allclose(result.probabilities[np.arange(len(act)), act], result.propensity)


def test_missing_propensities_are_filled_and_checked() -> None:
    frame, manifest = make_transitions(600, n_features=4, seed=6)
    missing = np.arange(frame.height) % 2 == 0
    logged = frame["behaviour_propensity"].to_numpy().copy()
    damaged = frame.with_columns(
        pl.Series("behaviour_propensity", np.where(missing, np.nan, logged)).fill_nan(None),
        pl.Series("propensity_source", np.where(missing, "missing", "logged")),
    )
    filled, check = fill_propensities(damaged, manifest)
    assert filled["behaviour_propensity"].null_count() == 0
    src = filled["propensity_source"].to_numpy()
    assert np.all(src[missing] == "estimated") and np.all(src[~missing] == "logged")
    np.testing.assert_array_equal(
        filled["behaviour_propensity"].to_numpy()[~missing], logged[~missing]
    )
    # the estimate is close to the truth on the rows where it was filled in
    est = filled["behaviour_propensity"].to_numpy()[missing]
    assert np.mean(np.abs(est - logged[missing]) / logged[missing]) < 0.15
    assert check["n"] == (~missing).sum() and check["relative_mae"] < 0.15


@pytest.mark.parametrize("space", [DISCRETE, CONTINUOUS])
def test_response_model_learns_the_best_action(space: dict[str, object]) -> None:
    rng = np.random.default_rng(7)
    n = 4000
    x = rng.normal(size=(n, 3))
    if space["type"] == "discrete":
        a = rng.integers(0, 4, size=n)
        effect = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]])
        r = (x * effect[a]).sum(axis=1) + rng.normal(0, 0.1, n)
    else:
        a = rng.uniform(0, 0.3, size=n)
        r = 10 * (x[:, 0] * a - 2 * a**2) + rng.normal(0, 0.1, n)
    model = ResponseModel(space, ResponseConfig(max_iter=60)).fit(x, a, r, purchases=r > 0)
    test = rng.normal(size=(500, 3))
    if space["type"] == "discrete":
        grid = model.predict_all_actions(test)
        assert grid.shape == (500, 4)
        truth = test @ np.array([[1.0, 0, 0, -1.0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
        assert np.mean(grid.argmax(axis=1) == truth.argmax(axis=1)) > 0.8
        np.testing.assert_allclose(
            grid[np.arange(500), 2], model.predict_reward(test, np.full(500, 2))
        )
    else:
        rates = np.linspace(0, 0.3, 7)
        grid = model.predict_all_actions(test, rates)
        truth = 10 * (test[:, :1] * rates - 2 * rates**2)
        assert np.corrcoef(grid.ravel(), truth.ravel())[0, 1] > 0.9
    purchase = model.predict_purchase(test, np.zeros(500))
    assert np.all((purchase >= 0) & (purchase <= 1))


@pytest.mark.slow
@pytest.mark.parametrize("space", ["discrete", "continuous"])
def test_behaviour_model_recovers_the_simulators_logged_propensities(space: str) -> None:
    from etl.config import EtlConfig
    from etl.pipeline import build_transitions
    from offline_rl.data import TransitionManifest
    from simulator import SimulatorConfig, simulate

    logs = simulate(SimulatorConfig(n_users=600, seed=1, action_space=space))  # type: ignore[arg-type]
    etl = build_transitions(logs.events, logs.orders, EtlConfig())
    manifest = TransitionManifest.from_dict(etl.manifest)
    assert etl.transitions["behaviour_propensity"].null_count() == 0
    # hide every logged propensity, estimate them (cross-fitted), compare with the logged truth
    truth = etl.transitions["behaviour_propensity"].to_numpy()
    hidden = etl.transitions.with_columns(
        pl.lit(None, dtype=pl.Float64).alias("behaviour_propensity"),
        pl.lit("missing").alias("propensity_source"),
    )
    filled, _ = fill_propensities(hidden, manifest, BehaviourConfig(n_folds=3))
    est = filled["behaviour_propensity"].to_numpy()
    check = propensity_check(truth, est)
    assert check["relative_mae"] < 0.2
    assert (filled["propensity_source"] == "estimated").all()
