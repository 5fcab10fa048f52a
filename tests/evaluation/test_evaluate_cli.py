"""``evaluate_candidates`` outputs and the ``ecomrl evaluate`` command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ecomrl.cli import main
from evaluation.config import EvaluateConfig
from evaluation.evaluate import evaluate_candidates
from evaluation.testing.synthetic import TabularMDP, mix, softmax_policy

MDP = TabularMDP.random(seed=1)
BEHAVIOUR = softmax_policy(np.random.default_rng(0).normal(size=(4, 3)))


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    data, states = MDP.sample(BEHAVIOUR, 3000, np.random.default_rng(1))
    root = tmp_path_factory.mktemp("etl")
    part = root / "transitions" / "date=2026-01-05"
    part.mkdir(parents=True)
    ids = np.array([f"user{i:05d}" for i in range(data.n_episodes)])
    pl.DataFrame(
        {
            "episode_id": ids[data.episode],
            "step": data.step.astype(np.int32),
            "decision_id": data.decision_id,
            "observation": data.observation,
            "action": data.action.astype(np.int32),
            "reward": data.reward,
            "terminal": data.terminal,
            "timeout": data.timeout,
            "behaviour_propensity": data.behaviour_propensity,
            "propensity_source": ["logged"] * data.n_decisions,
        }
    ).write_parquet(part / "part-00000.parquet")
    (root / "_manifest.json").write_text(
        json.dumps({"gamma": 0.9, "action_space": {"type": "discrete", "n": 3}})
    )
    close = mix(BEHAVIOUR, np.eye(3)[[0, 1, 2, 0]], 0.2)[states]
    pl.DataFrame(
        {
            "decision_id": np.repeat(data.decision_id, 3),  # type: ignore[arg-type]
            "action": np.tile(np.arange(3), data.n_decisions),
            "probability": close.ravel(),
        }
    ).write_parquet(root / "close.parquet")
    return root, states


def test_evaluate_candidates_returns_dataclasses_and_a_tidy_frame(
    logged: tuple[Path, np.ndarray],
) -> None:
    root, _ = logged
    cfg = EvaluateConfig()
    cfg.bootstrap.n_resamples = 200
    result = evaluate_candidates(
        root, ["rule:behaviour", "rule:constant=0", f"table:{root / 'close.parquet'}"], config=cfg
    )
    assert [c.name for c in result.candidates][:2] == ["rule:behaviour", "rule:constant=0"]
    frame = result.to_frame()
    assert frame.filter(pl.col("policy") == "behaviour (logged)").height == 1
    assert set(frame.get_column("estimator").unique()) >= {"on_policy", "is", "wpdis", "dr", "dm"}
    assert frame.select((pl.col("ci_low") <= pl.col("estimate")).all()).item()
    behaviour = result.candidate("rule:behaviour")
    assert behaviour.estimate("pdis").estimate == pytest.approx(result.behaviour.estimate)
    truth_close = MDP.value(mix(BEHAVIOUR, np.eye(3)[[0, 1, 2, 0]], 0.2))
    close = result.candidates[2]
    assert abs(close.primary.estimate - truth_close) < 4 * close.primary.se
    const = result.candidate("rule:constant=0")
    assert not const.verdict.approved  # far from the logs and worse: rejected
    assert const.verdict.checks and const.verdict.decided_by.startswith("Rejected")
    d = result.to_dict()
    json.dumps(d)  # JSON-safe
    assert d["candidates"][2]["verdict"]["decision"] in ("approve", "reject")


def test_clipping_is_reported_only_when_asked(logged: tuple[Path, np.ndarray]) -> None:
    root, _ = logged
    cfg = EvaluateConfig(estimators=["pdis", "dr"])
    cfg.bootstrap.n_resamples = 50
    plain = evaluate_candidates(root, ["rule:constant=0"], config=cfg).candidates[0]
    assert "clipping_effect" not in plain.diagnostics and not plain.clipped
    cfg.clipping.max_weight = 2.0
    clipped = evaluate_candidates(root, ["rule:constant=0"], config=cfg).candidates[0]
    assert clipped.clipped
    assert clipped.diagnostics["unclipped_estimate"] == pytest.approx(plain.primary.estimate)
    assert clipped.diagnostics["clipping_effect"] == pytest.approx(
        clipped.primary.estimate - plain.primary.estimate
    )
    assert clipped.diagnostics["clipped_fraction"] > 0


def test_cli_writes_ope_json_and_parquet(
    logged: tuple[Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = logged
    config = tmp_path / "c.toml"
    config.write_text(
        "[evaluate]\nestimators = ['pdis', 'wpdis', 'dr']\n[evaluate.bootstrap]\n"
        "n_resamples = 100\n[approval]\nmin_improvement = 0.05\n"
    )
    out = tmp_path / "out"
    code = main(
        [
            "evaluate",
            "--data", str(root),
            "--policy", "rule:constant=1",
            "--policy", "rule:behaviour",
            "--out", str(out),
            "--config", str(config),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "rule:constant=1" in printed and "behaviour (logged)" in printed
    ope = json.loads((out / "ope.json").read_text())
    assert ope["approval"]["min_improvement"] == 0.05
    assert {e["estimator"] for e in ope["candidates"][0]["estimates"]} == {"pdis", "wpdis", "dr"}
    assert "decided_by" in ope["candidates"][0]["verdict"]
    frame = pl.read_parquet(out / "ope.parquet")
    assert frame.height == 1 + 2 * 3


def test_cli_user_errors_exit_2(logged: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    root, _ = logged
    assert (
        main(["evaluate", "--data", str(root), "--policy", "rule:x", "--out", str(tmp_path)]) == 2
    )
    assert (
        main(["evaluate", "--data", str(tmp_path / "no"), "--policy", "rule:uniform",
              "--out", str(tmp_path)])
        == 2
    )  # fmt: skip


def test_model_estimators_are_skipped_with_a_reason_without_observations() -> None:
    data, _ = MDP.sample(BEHAVIOUR, 500, np.random.default_rng(3))
    bare = dataclasses.replace(data, observation=None)  # same data, no observations
    cfg = EvaluateConfig(estimators=["pdis", "dr", "dm"], primary_estimator="dr")
    cfg.bootstrap.n_resamples = 50
    result = evaluate_candidates(bare, ["rule:constant=1"], config=cfg)
    cand = result.candidates[0]
    assert [e.estimator for e in cand.estimates] == ["pdis"]
    assert "no observations" in cand.skipped["dr"]
    assert cand.primary_estimator == "pdis"
