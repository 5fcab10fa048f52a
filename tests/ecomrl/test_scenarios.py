"""Every bundled sample through the nightly job with its shipped config, and the notebook API.

``configs/<sample>.toml`` is what a user runs (``ecomrl run --config configs/<sample>.toml``);
these tests run exactly that through the CLI, with a few training steps set by ``--set``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecomrl.cli import EXIT_REJECTED, EXIT_USER_ERROR, main
from ecomrl.commands.demo import sample_and_config
from ecomrl.config import apply_overrides, load_config
from ecomrl.errors import ConfigError
from ecomrl.pipeline import EXIT_APPROVED

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

# sample, run date (the last day with decisions), the report's words for its action space
SCENARIOS = [
    ("promotion", "2026-02-01", "discrete: 4 actions (none, pct_5, pct_10, free_shipping)"),
    ("promotion_continuous", "2026-02-01", "continuous: 1-dimensional, bounds [0, 0.3]"),
    ("recommendation", "2026-01-25", "discrete: 8 actions (cat_00, cat_01, cat_02, cat_03"),
]
FEW_STEPS = [
    "--set",
    "train.n_steps=100",
    "--set",
    "train.checkpoint_every=100",
    "--set",
    "train.onnx=false",
    "--set",
    "run.bc_baseline=false",
    "--set",
    "evaluate.bootstrap.n_resamples=200",
]


@pytest.mark.slow
@pytest.mark.parametrize(("sample", "day", "space"), SCENARIOS)
def test_shipped_config_runs_the_nightly_job_to_a_report(
    sample: str, day: str, space: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the shipped configs name the samples relative to the repository
    runs = tmp_path / "runs"
    code = main(
        [
            "run",
            "--config",
            f"configs/{sample}.toml",
            "--date",
            day,
            "--set",
            f"run.runs_dir={runs}",
            "--set",
            f"run.dataset={tmp_path / 'dataset'}",
            *FEW_STEPS,
        ]
    )
    assert code in (EXIT_APPROVED, EXIT_REJECTED)
    run_dir = runs / day
    ope = json.loads((run_dir / "evaluation" / "ope.json").read_text())
    assert "candidate" in {c["name"] for c in ope["candidates"]}
    for name in ("report.md", "report.html", "report.json"):
        assert (run_dir / "report" / name).is_file(), name
    assert f"| action space | {space}" in (run_dir / "report" / "report.md").read_text()


@pytest.mark.parametrize("sample", [s for s, _, _ in SCENARIOS])
def test_shipped_configs_validate_and_name_their_sample(sample: str) -> None:
    config = load_config(CONFIGS / f"{sample}.toml")
    assert config.run.input == Path("data_samples") / sample
    simulated = json.loads((ROOT / "data_samples" / sample / "_simulator.json").read_text())
    assert config.etl.scenario == simulated["scenario"]
    if simulated["scenario"] == "recommendation":
        assert config.etl.n_categories == simulated["n_categories"]
        assert config.etl.reward_weights.model_dump() == simulated["rec_reward"]


def test_set_overrides_reach_nested_keys_and_read_toml_values() -> None:
    data = apply_overrides(
        {"train": {"n_steps": 5}},
        [
            "train.n_steps=300",
            "etl.reward_weights.click=2.5",
            "run.input=data/raw",
            'run.baselines=["rule:uniform"]',
            "certify.enabled=false",
        ],
    )
    assert data == {
        "train": {"n_steps": 300},
        "etl": {"reward_weights": {"click": 2.5}},
        "run": {"input": "data/raw", "baselines": ["rule:uniform"]},
        "certify": {"enabled": False},
    }
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides({}, ["train.n_steps"])
    with pytest.raises(ConfigError, match="'n_steps' is a value"):
        apply_overrides({"train": {"n_steps": 5}}, ["train.n_steps.x=1"])


def test_bad_override_is_a_user_error_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--date", "2026-02-01", "--set", "train.n_stepz=3"])
    assert code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "unknown key 'train.n_stepz'" in err and "--set train.n_stepz=3" in err


def test_demo_resolves_bundled_names_and_refuses_unknown_samples(tmp_path: Path) -> None:
    root, config = sample_and_config("recommendation", None)
    assert root == ROOT / "data_samples" / "recommendation"
    assert config == CONFIGS / "recommendation.toml"
    assert sample_and_config("promotion", None)[1].name == "demo.toml"
    with pytest.raises(ConfigError, match="bundled samples: promotion, promotion_continuous"):
        sample_and_config(str(tmp_path), None)


@pytest.mark.slow
def test_notebook_api_runs_the_recommendation_scenario(tmp_path: Path) -> None:
    """The Python API of the README on the recommendation sample, ETL to report."""
    from etl import run_etl
    from evaluation.candidates import ModelPolicy
    from evaluation.data import TransitionsDataset
    from evaluation.evaluate import evaluate_candidates
    from evaluation.report import render_report, report_inputs_from_run
    from offline_rl import (
        TrainConfig,
        TransitionManifest,
        load_policy,
        split_by_time,
        train_on_frame,
    )

    config = load_config(CONFIGS / "recommendation.toml")
    dataset = tmp_path / "dataset"
    etl_result = run_etl(ROOT / "data_samples" / "recommendation", dataset, config.etl)
    assert etl_result.manifest["action_space"]["labels"] == [f"cat_{k:02d}" for k in range(8)]
    train_frame, eval_frame = split_by_time(etl_result.transitions, valid_fraction=0.3)
    trained = train_on_frame(
        train_frame,
        TransitionManifest.read(dataset / "_manifest.json"),
        tmp_path / "agent",
        TrainConfig(agent="discrete_cql", n_steps=50, log_every=25, onnx=False),
        progress=False,
    )
    held_out = TransitionsDataset(frame=eval_frame, manifest=etl_result.manifest, path=dataset)
    result = evaluate_candidates(
        held_out,
        [ModelPolicy(load_policy(trained.artifact), name="candidate"), "rule:constant=cat_03"],
        data_path=dataset,
    )
    frame = result.to_frame()
    assert set(frame["policy"]) >= {"candidate", "rule:constant=cat_03"}
    ope_json, _ = result.write(tmp_path / "evaluation")
    inputs = report_inputs_from_run(
        ope_json,
        dataset / "_manifest.json",
        trained.artifact,
        data_dir=dataset,
        candidate="candidate",
    )
    assert inputs.data is not None and inputs.data.scenario == "recommendation"
    paths = render_report(inputs, tmp_path / "report")
    assert "discrete: 8 actions (cat_00" in Path(paths.html).read_text()


@pytest.mark.parametrize(
    "command",
    [
        ["etl", "--input", "x", "--out", "y"],
        ["import", "--input", "x", "--out", "y"],
        ["train", "--data", "x", "--out", "y"],
        ["evaluate", "--data", "x", "--policy", "rule:uniform", "--out", "y"],
        ["report", "--evaluation", "x", "--out", "y"],
        ["simulate", "--n-users", "5"],
        ["run", "--date", "2026-02-01"],
        ["demo"],
    ],
)
def test_every_command_reads_set_overrides(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--set", "train.n_stepz=3"]) == EXIT_USER_ERROR
    assert "unknown key 'train.n_stepz'" in capsys.readouterr().err
