"""``ecomrl import``: step-level logs (a d3rlpy dataset file, a Parquet table) through train
and evaluate unchanged, and the estimate on imported bandit logs against its closed form."""

from __future__ import annotations

import json
from pathlib import Path

import d3rlpy
import numpy as np
import polars as pl
import pytest

from ecomrl.cli import EXIT_USER_ERROR, main
from offline_rl.data import load_transitions

# a one-step bandit: 3 actions logged uniformly (propensity 1/3), reward Bernoulli(BUY[a])
BUY = np.array([0.1, 0.3, 0.6])


def _bandit(n: int = 3000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    action = rng.integers(0, 3, size=n)
    return pl.DataFrame(
        {
            "episode": np.arange(n),
            "step": np.zeros(n, dtype=np.int64),
            "observation": rng.normal(size=(n, 2)).tolist(),
            "action": action,
            "reward": (rng.random(n) < BUY[action]).astype(np.float64),
            "terminal": np.ones(n, dtype=bool),
            "propensity": np.full(n, 1 / 3),
        }
    )


def test_imported_bandit_logs_evaluate_to_the_closed_form(tmp_path: Path) -> None:
    _bandit().write_parquet(tmp_path / "steps.parquet")
    data = tmp_path / "data"
    code = main([
        "import", "--input", str(tmp_path / "steps.parquet"), "--out", str(data),
        "--set", "steps.date=2026-03-01", "--set", "steps.columns.propensity=propensity",
    ])
    assert code == 0
    code = main([
        "evaluate", "--data", str(data), "--policy", "rule:constant=2",
        "--out", str(tmp_path / "ope"),
    ])
    assert code in (0, 3)
    ope = json.loads((tmp_path / "ope" / "ope.json").read_text())
    estimates = {e["estimator"]: e for e in ope["candidates"][0]["estimates"]}
    ipw = estimates.get("is") or estimates["pdis"]
    # the true value of always-2 is BUY[2] = 0.6; IS over 3,000 uniform logs has sd ~0.016
    assert abs(ipw["estimate"] - BUY[2]) < 0.05
    assert ipw["ci_low"] <= BUY[2] <= ipw["ci_high"]


def test_d3rlpy_dataset_file_imports_trains_and_evaluates(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 400
    terminals, timeouts = np.zeros(n), np.zeros(n)
    terminals[9::20], timeouts[19::20] = 1.0, 1.0
    observations = rng.normal(size=(n, 4)).astype(np.float32)
    dataset = d3rlpy.dataset.MDPDataset(
        observations, rng.integers(0, 2, size=n), rng.normal(size=n).astype(np.float32),
        terminals, timeouts,
    )
    with (tmp_path / "logs.h5").open("w+b") as f:
        dataset.dump(f)
    data = tmp_path / "data"
    assert main([
        "import", "--input", str(tmp_path / "logs.h5"), "--out", str(data),
        "--set", "steps.date=2026-03-01", "--set", "steps.standardise=false",
    ]) == 0
    frame, manifest = load_transitions(data)
    assert frame.height == n and frame["episode_id"].n_unique() == 40
    assert manifest.data["action_space"] == {"type": "discrete", "n": 2, "labels": ["0", "1"]}
    assert int(frame["terminal"].sum()) == 20 and int(frame["timeout"].sum()) == 20
    by_order = frame.sort(pl.col("episode_id").cast(pl.Int64), "step")
    np.testing.assert_array_equal(np.asarray(by_order["observation"].to_list()), observations)
    assert main([
        "train", "--data", str(data), "--out", str(tmp_path / "policies"), "--steps", "20",
        "--agent", "discrete_cql",
    ]) == 0
    trained = json.loads((tmp_path / "policies" / "discrete_cql" / "data.json").read_text())
    assert trained["scaling"] == manifest.data["scaling"]  # checked when evaluated elsewhere
    code = main([
        "evaluate", "--data", str(data),
        "--policy", f"artifact:{tmp_path / 'policies' / 'discrete_cql'}",
        "--policy", "rule:uniform", "--out", str(tmp_path / "ope"),
    ])
    assert code in (0, 3)
    names = {c["name"] for c in json.loads((tmp_path / "ope" / "ope.json").read_text())[
        "candidates"]}
    assert len(names) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "steps.date=2026-03-01", "--set", "steps.columns.reward=gain"],
         "missing columns ['gain']"),
        ([], "no timestamp column"),
    ],
)
def test_import_mistakes_exit_2_with_the_reason(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _bandit(50).write_parquet(tmp_path / "steps.parquet")
    code = main(["import", "--input", str(tmp_path / "steps.parquet"), "--out",
                 str(tmp_path / "data"), *args])
    assert code == EXIT_USER_ERROR
    assert message in capsys.readouterr().err
