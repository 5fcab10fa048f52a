"""Online rollouts: true values, the observation hook, agreement with ``simulate``."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from simulator import (
    DirtConfig,
    SimulatorConfig,
    constant_action,
    logging_policy,
    rollout,
    simulate,
    value_from_truth,
)
from simulator.rollout import RolloutResult


def test_rollout_of_the_logging_policy_is_simulate() -> None:
    cfg = SimulatorConfig(n_users=300, seed=31, dirt=DirtConfig.all_on())
    logs = simulate(cfg)
    res = rollout(logging_policy(cfg), cfg, return_logs=True)
    assert res.logs is not None
    assert res.logs.events.equals(logs.events)
    assert res.logs.orders.equals(logs.orders)
    assert res.logs.truth.equals(logs.truth)
    value, se, undiscounted, n = value_from_truth(logs.truth, 0.9)
    assert res.value == pytest.approx(value) and res.std_error == pytest.approx(se)
    assert res.n_episodes == n == logs.truth.filter(~pl.col("is_bot"))["episode_id"].n_unique()
    assert res.ci_low < res.value < res.ci_high
    assert res.undiscounted_mean == pytest.approx(undiscounted)
    assert undiscounted > res.value > 0


def _per_user(res: RolloutResult) -> pl.DataFrame:
    return res.returns.group_by(pl.col("episode_id").str.split("-").list.first().alias("u")).agg(
        pl.col("discounted").sum()
    )


@pytest.mark.slow
def test_true_values_are_ordered_as_the_design_implies() -> None:
    """Discounts build an expectation that costs margin later: always giving 10 % is worse than
    never giving anything (although it wins on the first session: greedy is wrong), and the
    logging policy (which hands out incentives about half of the time) sits in between."""
    cfg = SimulatorConfig(n_users=20_000, seed=3, arrival_days=7)  # the README's table
    none = rollout(constant_action(0), cfg)
    pct10 = rollout(constant_action(2), cfg)
    behaviour = rollout(logging_policy(cfg), cfg)
    assert none.ci_low > pct10.ci_high
    # ... although greedily, on the first session, 10 % earns more than nothing
    def first_session(res: RolloutResult) -> float:
        return float(res.truth.filter(pl.col("step") == 0)["reward"].mean())  # type: ignore[arg-type]

    assert first_session(pct10) > first_session(none) + 0.1
    assert behaviour.ci_low > pct10.ci_high
    assert none.value > behaviour.value
    # paired over the same users (common random numbers): none beats the logging policy
    j = _per_user(none).join(_per_user(behaviour), on="u", suffix="_b")
    diff = (j["discounted"] - j["discounted_b"]).to_numpy()
    assert diff.mean() > 2 * diff.std(ddof=1) / np.sqrt(len(diff))


def test_the_hook_sees_exactly_the_rows_before_each_decision() -> None:
    cfg = SimulatorConfig(
        n_users=150, seed=32,
        dirt=DirtConfig(duplicates=True, late_events=True, midnight_sessions=True),
    )
    seen: list[pl.DataFrame] = []

    def hook(events: pl.DataFrame, orders: pl.DataFrame, decisions: pl.DataFrame) -> np.ndarray:
        assert decisions["event_type"].unique().to_list() == ["decision"]
        assert decisions["action"].null_count() == decisions.height
        assert not events["decision_id"].is_in(decisions["decision_id"].implode()).any()
        # per user: every row strictly before that user's pending decision
        d = decisions.select("user_id", pl.col("event_ts").alias("cut"), "decision_id")
        for frame, ts in ((events, "event_ts"), (orders, "order_ts")):
            j = frame.join(d, on="user_id", how="inner")
            assert (j[ts] < j["cut"]).all()
        counts = d.join(
            events.group_by("user_id").len(), on="user_id", how="left"
        ).with_columns(pl.col("len").fill_null(0))
        seen.append(counts)
        feature = counts["len"].cast(pl.Float32).to_numpy()
        return np.stack([feature, np.ones_like(feature)], axis=1)

    def policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        assert obs.shape[1] == 2 and (obs[:, 1] == 1).all()
        return np.where(obs[:, 0] > 20, 2, 0)

    res = rollout(policy, cfg, observation_hook=hook, return_logs=True)
    assert res.logs is not None and res.observations is not None
    assert len(seen) > 3
    # the history the hook got is exactly the final logs' rows before the decision
    rec = pl.concat(seen)
    ev = res.logs.events
    expected = (
        rec.join(ev.select("user_id", "event_ts"), on="user_id", how="left")
        .filter(pl.col("event_ts") < pl.col("cut"))
        .group_by("decision_id")
        .len()
    )
    chk = rec.join(expected, on="decision_id", how="left", suffix="_x").with_columns(
        pl.col("len_x").fill_null(0)
    )
    assert (chk["len"] == chk["len_x"]).all()
    # the policy acted on the hook's observation
    dec = ev.filter(pl.col("event_type") == "decision").unique("decision_id")
    acted = dec.join(res.observations, on="decision_id")
    obs = np.stack(acted["observation"].to_numpy())
    expected_action = np.where(obs[:, 0] > 20, "pct_10", "none")
    assert (acted["action"].to_numpy() == expected_action).all()
    assert set(acted["action"].unique()) == {"none", "pct_10"}


def test_recommendation_and_continuous_rollouts() -> None:
    rec = SimulatorConfig(scenario="recommendation", n_users=150, seed=33, days=10)
    favourite = rollout(logging_policy(rec), rec)
    fixed = rollout(constant_action(0), rec)
    assert favourite.n_episodes > 100 and np.isfinite(fixed.value)
    cont = SimulatorConfig(action_space="continuous", n_users=200, seed=34)
    res = rollout(lambda o, r: np.full(len(o), 0.05), cont, return_logs=True)
    assert res.logs is not None
    rates = res.logs.events.filter(pl.col("event_type") == "decision")["action"]
    assert (rates == 0.05).all()
    assert res.logs.events["propensity"].null_count() == res.logs.events.height


def test_recommendation_hook_rounds_are_page_views() -> None:
    cfg = SimulatorConfig(scenario="recommendation", n_users=60, seed=35, days=6)
    rounds: list[int] = []

    def hook(events: pl.DataFrame, orders: pl.DataFrame, decisions: pl.DataFrame) -> np.ndarray:
        rounds.append(decisions.height)
        d = decisions.select("session_id", pl.col("event_ts").alias("cut"), "decision_id")
        j = events.join(d, on="session_id", how="inner")
        assert (j["event_ts"] < j["cut"]).all()
        # every earlier page of the session is in the history, with its decision
        steps = decisions["decision_id"].str.split("-").list.last().cast(pl.Int64)
        seen = d.join(
            events.filter(pl.col("event_type") == "decision").group_by("session_id").len(),
            on="session_id", how="left",
        )["len"].fill_null(0)
        assert (seen == steps).all()
        return np.zeros((decisions.height, 1), np.float32)

    res = rollout(lambda o, r: np.zeros(len(o), int), cfg, observation_hook=hook)
    assert len(rounds) > cfg.max_pages and res.n_episodes > 0


def test_paired_difference_pairs_the_same_episodes() -> None:
    config = SimulatorConfig(n_users=300, seed=5, days=14)
    none = rollout(constant_action(0), config)
    ten = rollout(constant_action(2), config)
    mean, half = ten.paired_difference(none)
    # brute force: episode by episode, by id
    a = dict(zip(ten.returns["episode_id"], ten.returns["discounted"], strict=True))
    b = dict(zip(none.returns["episode_id"], none.returns["discounted"], strict=True))
    diff = np.array([a[k] - b[k] for k in sorted(a.keys() & b.keys())])
    assert len(diff) > 100
    assert mean == pytest.approx(diff.mean(), rel=1e-12)
    assert half == pytest.approx(1.959963984540054 * diff.std(ddof=1) / np.sqrt(diff.size))
    # pairing removes the users' own variance: tighter than the two unpaired intervals
    assert half < (ten.ci_high - ten.ci_low) / 2
    assert none.paired_difference(none) == (0.0, 0.0)
