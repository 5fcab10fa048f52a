"""The logging policy: probabilities, logged propensities, the continuous density, adapters."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.integrate import quad

from simulator import (
    TIERS,
    SimulatorConfig,
    SimulatorError,
    as_policy,
    constant_action,
    continuous_density,
    logging_policy,
    logging_probabilities,
    rollout,
)
from simulator.policies import MIN_PROPENSITY, continuous_beta_params, promotion_scores


def _random_promotion_obs(rng: np.random.Generator, n: int) -> np.ndarray:
    obs = np.zeros((n, 13), np.float32)
    obs[np.arange(n), rng.integers(0, 3, n)] = 1
    obs[np.arange(n), 3 + rng.integers(0, 4, n)] = 1
    obs[:, 7] = rng.random(n) < 0.3
    obs[:, 8] = np.log1p(rng.integers(0, 8, n))
    obs[:, 9] = np.log1p(rng.integers(0, 12, n))
    obs[:, 10] = rng.random(n) * 13
    obs[:, 11] = rng.random(n)
    obs[:, 12] = rng.choice([0.0, 0.05, 0.1], n)
    return obs


@pytest.mark.parametrize("scenario", ["promotion", "recommendation"])
def test_probabilities_sum_to_one_and_respect_the_floor(scenario: str) -> None:
    cfg = SimulatorConfig(scenario=scenario)
    rng = np.random.default_rng(0)
    if scenario == "promotion":
        obs = _random_promotion_obs(rng, 5000)
    else:
        obs = rng.random((5000, 10 + 2 * cfg.n_categories)).astype(np.float32) * 4
    probs = logging_probabilities(obs, cfg)
    assert probs.shape == (5000, 4 if scenario == "promotion" else cfg.n_categories)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert probs.min() >= MIN_PROPENSITY
    # not uniform: the heuristic score matters
    assert probs.max() > 0.4


def test_logged_propensity_is_the_policy_probability_of_the_logged_action() -> None:
    cfg = SimulatorConfig(n_users=300, seed=5)
    res = rollout(logging_policy(cfg), cfg, return_logs=True)
    assert res.logs is not None and res.observations is not None
    dec = res.logs.events.filter(pl.col("event_type") == "decision").select(
        "decision_id", "action", "propensity"
    )
    joined = dec.join(res.observations, on="decision_id", how="inner")
    assert joined.height == dec.height > 0
    obs = np.stack(joined["observation"].to_numpy())
    probs = logging_probabilities(obs, cfg)
    labels = ["none", "pct_5", "pct_10", "free_shipping"]
    idx = np.array([labels.index(a) for a in joined["action"].to_list()])
    np.testing.assert_allclose(
        joined["propensity"].to_numpy(), probs[np.arange(len(idx)), idx], rtol=1e-12
    )


def test_logging_discount_bias_shifts_the_discount_tiers_scores() -> None:
    rng = np.random.default_rng(1)
    obs = _random_promotion_obs(rng, 4000)
    base = logging_probabilities(obs, SimulatorConfig())
    biased = logging_probabilities(obs, SimulatorConfig(logging_discount_bias=1.0))
    # brute force: the same softmax with +1 on tiers 1-3, mixed with the uniform floor
    scores = promotion_scores(obs)
    scores[:, 1:] += 1.0
    z = np.exp(scores - scores.max(axis=1, keepdims=True))
    eps = 1.2 * MIN_PROPENSITY * 4
    want = (1 - eps) * z / z.sum(axis=1, keepdims=True) + eps / 4
    np.testing.assert_allclose(biased, want, rtol=1e-12)
    assert (biased[:, 1:] > base[:, 1:]).all()
    cfg = SimulatorConfig(n_users=300, seed=5, logging_discount_bias=1.0)  # logged as it acts
    res = rollout(logging_policy(cfg), cfg, return_logs=True)
    assert res.logs is not None and res.observations is not None
    dec = res.logs.events.filter(pl.col("event_type") == "decision")
    joined = dec.select("decision_id", "action", "propensity").join(
        res.observations, on="decision_id", how="inner")
    seen = np.stack(joined["observation"].to_numpy())
    probs = logging_probabilities(seen, cfg)
    idx = np.array([TIERS.index(a) for a in joined["action"].to_list()])
    np.testing.assert_allclose(joined["propensity"].to_numpy(),
                               probs[np.arange(len(idx)), idx], rtol=1e-12)
    # an over-discounting platform: on the states it meets, "none" is far less often the most
    # likely tier (about 57 % of decisions against 92 % for the default heuristic)
    mode_none = (probs.argmax(axis=1) == 0).mean()
    default_none = (logging_probabilities(seen, SimulatorConfig()).argmax(axis=1) == 0).mean()
    assert mode_none < default_none - 0.2


def test_continuous_density_integrates_to_one_and_matches_the_logs() -> None:
    rng = np.random.default_rng(1)
    obs = _random_promotion_obs(rng, 6)
    for row in obs:
        total, _ = quad(lambda x, r=row: float(continuous_density(r[None, :], np.array([x]))[0]),
                        0.0, 0.3, limit=200)
        assert total == pytest.approx(1.0, abs=1e-6)
    a, b = continuous_beta_params(obs)
    assert (a >= 1).all() and (b >= 1).all()  # bounded density
    cfg = SimulatorConfig(n_users=150, seed=6, action_space="continuous")
    res = rollout(logging_policy(cfg), cfg, return_logs=True)
    assert res.logs is not None and res.observations is not None
    dec = res.logs.events.filter(pl.col("event_type") == "decision")
    joined = dec.join(res.observations, on="decision_id")
    rates = joined["action"].to_numpy()
    assert ((rates > 0) & (rates < 0.3)).all()
    dens = continuous_density(np.stack(joined["observation"].to_numpy()), rates)
    np.testing.assert_allclose(joined["propensity"].to_numpy(), dens, rtol=1e-10)


def test_as_policy_adapters() -> None:
    obs = np.zeros((7, 13), np.float32)
    rng = np.random.default_rng(0)

    class Model:
        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.full((len(x), 1), 0.12)

    np.testing.assert_array_equal(
        as_policy(lambda o, r: np.ones(len(o), int)).act(obs, rng), np.ones(7)
    )
    np.testing.assert_allclose(as_policy(Model()).act(obs, rng), 0.12)
    vec = as_policy(np.array([0.0, 0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(vec.act(obs, rng), 2)
    np.testing.assert_array_equal(vec.propensity(obs, np.array([2])), [1.0])
    np.testing.assert_array_equal(constant_action(3).act(obs, rng), 3)
    with pytest.raises(SimulatorError):
        as_policy(np.array([0.5, 0.2]))
    with pytest.raises(SimulatorError):
        as_policy(42)


def test_bad_actions_are_user_errors() -> None:
    cfg = SimulatorConfig(n_users=20)
    with pytest.raises(SimulatorError, match="out of range"):
        rollout(constant_action(7), cfg)
    with pytest.raises(SimulatorError, match="actions for"):
        rollout(lambda o, r: np.zeros(len(o) + 1, int), cfg)
