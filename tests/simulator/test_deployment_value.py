"""Arrivals over the whole period and the deployment value (value per new user's first episode)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from simulator import (
    DirtConfig,
    SimulatorConfig,
    constant_action,
    deployment_value,
    deployment_world,
    logging_policy,
    rollout,
    simulate,
    value_from_truth,
)
from simulator.model import Catalog
from simulator.truth import episode_returns


def _first_visit_days(truth: pl.DataFrame, config: SimulatorConfig) -> pl.DataFrame:
    """Per user: bot flag and the day (0-based, from ``start_date``) of the first decision."""
    start = dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC)
    return truth.group_by("user_id").agg(
        pl.col("is_bot").first(),
        ((pl.col("decision_ts").min() - start).dt.total_seconds() // 86_400).alias("day"),
    )


def test_arrivals_spread_uniformly_over_the_whole_period() -> None:
    cfg = SimulatorConfig(n_users=5_600, seed=41, dirt=DirtConfig(bots=True))
    assert cfg.arrival_days is None and cfg.days == 28
    firsts = _first_visit_days(simulate(cfg).truth, cfg)
    real = firsts.filter(~pl.col("is_bot"))
    assert real.height == cfg.n_users  # everyone arrives inside the window
    counts = np.bincount(real["day"].to_numpy(), minlength=cfg.days)
    assert counts.size == cfg.days and (counts > 0).all()
    expected = cfg.n_users / cfg.days
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < stats.chi2.isf(1e-6, cfg.days - 1)  # fails by chance once in a million
    # bots (2 %, 112) arrive over the same window: all in the first 3 weeks has prob. 0.75**112
    assert firsts.filter(pl.col("is_bot"))["day"].max() >= 21


def test_an_explicit_arrival_window_still_holds() -> None:
    cfg = SimulatorConfig(n_users=500, seed=42, arrival_days=3, dirt=DirtConfig(bots=True))
    firsts = _first_visit_days(simulate(cfg).truth, cfg)
    assert firsts["day"].max() == 2 and firsts["day"].min() == 0


def test_deployment_world_finishes_every_first_episode() -> None:
    cfg = SimulatorConfig(n_users=600, seed=43)
    world = deployment_world(cfg, arrival_days=5)
    assert (world.arrival_days, world.days) == (5, 5 + 30 + 14 + 1)
    truth = rollout(constant_action(0), world).truth
    first = truth.filter(pl.col("episode") == 0)
    ends = first.group_by("user_id").agg(pl.len().alias("n"), pl.col("terminal").any())
    later = truth.filter(pl.col("episode") == 1)["user_id"].unique()
    # an episode that neither churned nor used up its decisions went on past horizon_days
    open_ended = ends.filter(~pl.col("terminal") & (pl.col("n") < cfg.horizon_decisions))
    assert open_ended.height > 20
    assert open_ended["user_id"].is_in(later.implode()).all()


def test_deployment_value_holds_first_episodes_only() -> None:
    cfg = SimulatorConfig(n_users=500, seed=44, dirt=DirtConfig(bots=True))
    res = deployment_value(constant_action(1), cfg, gamma=0.8)
    assert res.n_episodes == cfg.n_users == res.returns.height
    assert res.returns["episode_id"].str.ends_with("-e00").all()
    assert res.truth["episode"].max() == 0  # bots' first episodes too, flagged by is_bot
    assert (res.value, res.std_error) == pytest.approx(value_from_truth(res.truth, 0.8)[:2])
    assert res.value == pytest.approx(res.returns["discounted"].mean())
    assert res.gamma == 0.8 and res.ci_low < res.value < res.ci_high


def _held_out_first_episodes(config: SimulatorConfig, gamma: float) -> np.ndarray:
    """Discounted first-episode returns of the users of a ``simulate`` log (arrivals over the
    whole period) whose first decision leaves room for a complete, settled first episode."""
    truth = simulate(config).truth.filter(~pl.col("is_bot"))
    end = dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC) + dt.timedelta(
        days=config.days
    )
    cutoff = end - dt.timedelta(days=config.horizon_days + config.settlement_days)
    early = (
        truth.group_by("user_id")
        .agg(pl.col("decision_ts").min().alias("first_ts"))
        .filter(pl.col("first_ts") <= cutoff)
    )
    complete = pl.col("user_id").is_in(early["user_id"].implode())
    first = truth.filter((pl.col("episode") == 0) & complete)
    return episode_returns(first, gamma)["discounted"].to_numpy()


@pytest.fixture
def one_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed draws the catalogue too (prices and margins per category, which move the value
    by about 2 between seeds): fix it, so that two seeds are two samples of users of one world."""
    build = Catalog.build

    def fixed(config: SimulatorConfig, rng: np.random.Generator) -> Catalog:
        return build(config, np.random.default_rng([0, 3]))

    monkeypatch.setattr(Catalog, "build", fixed)


@pytest.mark.usefixtures("one_catalogue")
def test_held_out_first_episodes_estimate_the_deployment_value() -> None:
    # logs of 88 days: users arriving in the first 44 days have complete first episodes
    logged = SimulatorConfig(n_users=6_000, seed=45, days=88)
    held_out = _held_out_first_episodes(logged, 0.9)
    assert 2_700 < held_out.size < 3_300
    truth = deployment_value(logging_policy(logged), logged, seed=46)
    se = math.hypot(truth.std_error, held_out.std(ddof=1) / math.sqrt(held_out.size))
    assert abs(held_out.mean() - truth.value) < 4 * se


def test_paired_difference_uses_common_random_numbers() -> None:
    cfg = SimulatorConfig(n_users=3_000, seed=47)
    a = deployment_value(logging_policy(cfg), cfg)
    b = deployment_value(constant_action(0), cfg)
    assert a.returns["episode_id"].equals(b.returns["episode_id"])
    mean, half_width = a.paired_difference(b)
    assert mean == pytest.approx(a.value - b.value)
    unpaired = 1.959963984540054 * math.hypot(a.std_error, b.std_error)
    assert half_width < 0.75 * unpaired
