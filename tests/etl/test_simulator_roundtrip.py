"""Round trip with the simulator: the ETL's reward per decision is the simulator's own record of
it, and the ETL's observation of a decision is exactly what the rollout handed the policy."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from etl import EtlConfig, ObservationBuilder, build_transitions, run_etl

simulator_logs = pytest.importorskip("simulator.logs")
simulator_rollout = pytest.importorskip("simulator.rollout")
simulator_config = pytest.importorskip("simulator.config")
SimulatorConfig = simulator_config.SimulatorConfig
DirtConfig = simulator_config.DirtConfig

CASES = [("promotion", "discrete"), ("promotion", "continuous"), ("recommendation", "discrete")]


def _etl_config(sim: Any) -> EtlConfig:
    return EtlConfig(scenario=sim.scenario, n_categories=sim.n_categories,
                     churn_days=sim.churn_days, settlement_days=sim.settlement_days,
                     horizon_days=sim.horizon_days, horizon_steps=sim.horizon_decisions,
                     reward_weights=sim.rec_reward.model_dump())


def _compare_truth(transitions: pl.DataFrame, truth: pl.DataFrame, churn_days: int) -> None:
    if "is_bot" in truth.columns:  # bot sessions make no transitions; real users all do
        assert truth.filter("is_bot")["decision_id"].is_in(
            transitions["decision_id"].implode()).sum() == 0
        truth = truth.filter(~pl.col("is_bot"))
    joined = transitions.join(
        truth.select("decision_id", pl.col("reward").alias("true_reward"),
                     pl.col("step").alias("true_step"), pl.col("terminal").alias("true_term")),
        on="decision_id", how="full", coalesce=True,
    )
    assert joined.height == truth.height == transitions.height
    np.testing.assert_allclose(joined["reward"], joined["true_reward"], atol=1e-6)
    assert (joined["step"] == joined["true_step"]).all()
    # the logs tell churn only when they extend churn_days past the decision (the contract);
    # the simulator's record also knows it for users who churned just before the data's end
    end = transitions["decision_ts"].max()
    assert isinstance(end, dt.datetime)
    known = joined.filter(pl.col("decision_ts") + pl.duration(days=churn_days) < end)
    assert (known["terminal"] == known["true_term"]).all()
    assert (joined.filter("terminal")["true_term"]).all()


@pytest.mark.parametrize("dirt", [False, True], ids=["clean", "dirty"])
@pytest.mark.parametrize(("scenario", "space"), CASES)
def test_reward_per_decision_equals_simulator_truth(scenario: str, space: str, dirt: bool) -> None:
    sim = SimulatorConfig(n_users=150, days=21, scenario=scenario, action_space=space, seed=3,
                          dirt=DirtConfig.all_on() if dirt else DirtConfig())
    logs = simulator_logs.simulate(sim)
    res = build_transitions(logs.events, logs.orders, _etl_config(sim))
    if not dirt:
        assert res.counts["events"]["used"] == logs.events.height
    else:
        assert set(res.counts["events"]["dropped"]) == {"bot", "duplicate_event_id"}
    _compare_truth(res.transitions, logs.truth, sim.churn_days)
    labels = res.manifest["action_space"].get("labels")
    if labels is not None:  # discrete: the action index is the truth's
        got = res.transitions.join(logs.truth.select("decision_id", "action"), on="decision_id")
        assert (got["action"] == got["action_right"]).all()


@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "space", "dirt"), [(*c, False) for c in CASES]
                         + [("promotion", "discrete", True)])
def test_rollout_observations_equal_etl_observations(scenario: str, space: str,
                                                     dirt: bool) -> None:
    sim = SimulatorConfig(n_users=60, days=14, scenario=scenario, action_space=space, seed=5,
                          dirt=DirtConfig.all_on() if dirt else DirtConfig())
    config = _etl_config(sim)
    fitted = build_transitions(*_frames(simulator_logs.simulate(sim)), config)
    builder = ObservationBuilder.from_manifest(fitted.manifest)

    def policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if space == "continuous":
            return rng.uniform(0.0, 0.3, len(obs))
        n = fitted.manifest["action_space"]["n"]
        return rng.integers(0, n, len(obs))

    out = simulator_rollout.rollout(policy, sim, observation_hook=builder, return_logs=True)
    assert out.logs is not None and out.observations is not None
    res = build_transitions(out.logs.events, out.logs.orders, config, scaling=builder.scaling)
    online = out.observations.rename({"observation": "online"})
    joined = res.transitions.join(online, on="decision_id", how="inner")
    assert joined.height == res.transitions.height
    assert online.height >= res.transitions.height  # bot sessions make no transitions
    np.testing.assert_array_equal(joined["observation"].to_numpy(), joined["online"].to_numpy())
    _compare_truth(res.transitions, out.logs.truth, sim.churn_days)


def _frames(logs: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    return logs.events, logs.orders


SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"


@pytest.mark.parametrize("name", ["promotion", "promotion_continuous", "recommendation"])
def test_bundled_samples_reward_equals_their_truth(name: str, tmp_path: Path) -> None:
    root = SAMPLES / name
    if not (root / "_truth.parquet").is_file():
        pytest.skip(f"no sample logs in {root}")
    sim = SimulatorConfig.model_validate(json.loads((root / "_simulator.json").read_text()))
    res = run_etl(root, tmp_path / "out", _etl_config(sim))
    truth = pl.read_parquet(root / "_truth.parquet")
    _compare_truth(res.transitions, truth, sim.churn_days)
