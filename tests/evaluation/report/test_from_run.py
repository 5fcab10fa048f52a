"""The report built from a real evaluation: ``ope.json`` written by ``evaluate_candidates``.

The expected numbers come from ``ope.json`` itself and from the transitions (computed here
independently of the report), so the test checks the mapping, not the estimators.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from markupsafe import escape

from ecomrl.cli import EXIT_OK, EXIT_USER_ERROR, main
from evaluation.config import ApprovalConfig
from evaluation.report import render_report, report_inputs_from_run
from evaluation.report.inputs import CHECK_TEXT
from evaluation.report.model import fmt_number
from tests.evaluation.report.run_fixture import RunFiles, build_run

RELAXED = ApprovalConfig(
    min_ess=1.0, min_ess_fraction=0.0, max_weight_share=1.0, max_family_spread_relative=1.0
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunFiles:
    return build_run(
        tmp_path_factory.mktemp("run"), candidates=("rule:constant=2", "rule:constant=0")
    )


@pytest.fixture(scope="module")
def approved_run(tmp_path_factory: pytest.TempPathFactory) -> RunFiles:
    return build_run(tmp_path_factory.mktemp("approved"), approval=RELAXED)


def test_inputs_follow_ope_json(run: RunFiles) -> None:
    ope = json.loads(run.ope_json.read_text(encoding="utf-8"))
    inputs = report_inputs_from_run(run.ope_json, run.manifest, run.artifact_dir)
    raw = ope["candidates"][0]
    verdict = inputs.verdict
    assert verdict.candidate == ope["primary_candidate"] == "rule:constant=2"
    assert verdict.approved is raw["verdict"]["approved"]
    assert verdict.lower_bound == raw["lower_bound"]
    assert verdict.baseline_value == ope["behaviour"]["estimate"]
    rule = next(c for c in raw["verdict"]["checks"] if c["name"] == "improvement")
    assert verdict.required_value == pytest.approx(rule["threshold"])
    assert verdict.beats_margin is rule["passed"]
    failed = [c["name"] for c in raw["verdict"]["checks"] if not c["passed"]]
    assert [c.name for c in verdict.failed_checks] == [
        CHECK_TEXT[n][0] for n in failed if n != "improvement"
    ]
    assert verdict.lower_bound_level == pytest.approx(1 - ope["lower_bound_delta"])
    assert [c.name for c in inputs.candidates] == ["rule:constant=2", "rule:constant=0"]
    for cand, raw_cand in zip(inputs.candidates, ope["candidates"], strict=True):
        assert [e.value for e in cand.estimates] == [e["estimate"] for e in raw_cand["estimates"]]
        assert [e.ci_low for e in cand.estimates] == [e["ci_low"] for e in raw_cand["estimates"]]
        assert cand.weights is not None
        assert cand.weights.max == raw_cand["diagnostics"]["weight_max"]
    assert inputs.behaviour_model is not None
    assert not inputs.behaviour_model.propensities_estimated


def test_data_facts_match_the_manifest_and_the_transitions(run: RunFiles) -> None:
    inputs = report_inputs_from_run(run.ope_json, run.manifest, run.artifact_dir)
    data = inputs.data
    assert data is not None
    frame = pl.read_parquet(run.data_dir / "transitions" / "*" / "*.parquet")
    assert data.n_decisions == frame.height
    assert data.rows_in == 5 * frame.height + 170 + 400
    assert data.rows_used == 5 * frame.height + 360
    assert data.quarantined == {
        "events: null_ids": 120,
        "events: unknown_event_type": 10,
        "orders: negative_quantity": 40,
    }
    assert data.dropped == {"events: duplicate_event_id": 40}
    assert data.excluded_decisions == {"bot_session": 7}
    assert data.rows_by_table["orders"] == {
        "rows in": 400,
        "used": 360,
        "quarantined": 40,
        "dropped": 0,
    }
    assert data.date_range == ("2026-11-01", "2026-11-03")
    assert data.n_episodes == frame["episode_id"].n_unique()
    assert data.propensity_source == {"logged": frame.height}
    # The mean discounted return per episode IS the behaviour policy's on-policy value.
    returns = (
        frame.group_by("episode_id")
        .agg((pl.col("reward") * 0.9 ** pl.col("step").cast(pl.Float64)).sum())
        .get_column("reward")
        .to_numpy()
    )
    assert data.episode_return["mean"] == pytest.approx(float(np.mean(returns)), rel=1e-9)
    assert data.episode_return["mean"] == pytest.approx(inputs.behaviour.value, rel=1e-9)
    assert data.episode_length["max"] == 4
    # the fixture shifts "frequency" on the last day only
    assert inputs.drift is not None
    assert inputs.drift.current_label == "2026-11-03"
    assert [r.feature for r in inputs.drift.flagged] == ["frequency"]
    training = inputs.training
    assert training is not None and training.algorithm == "discrete_cql"
    assert len(training.series["loss"]) == 10
    assert sorted(training.series) == ["conservative_loss", "loss"]
    assert training.validation["action_match"] == 0.47
    assert training.behaviour_check == {
        "ece": 0.013,
        "mae": 0.04,
        "n": 1921.0,
        "relative_mae": 0.13,
    }
    assert training.facts["train transitions"] == 6461


def test_rendered_formats_agree_on_a_real_evaluation(run: RunFiles, tmp_path: Path) -> None:
    inputs = report_inputs_from_run(run.ope_json, run.manifest, run.artifact_dir)
    paths = render_report(inputs, tmp_path)
    html = paths.html.read_text(encoding="utf-8")
    md = paths.markdown.read_text(encoding="utf-8")
    data = json.loads(paths.json.read_text(encoding="utf-8"))
    sentence = inputs.verdict.sentence
    assert data["verdict"]["sentence"] == sentence
    assert data["verdict"]["decision"] == inputs.verdict.decision == "REJECT"
    assert str(escape(sentence)) in html
    assert sentence in md
    for text in (html, md):
        assert "The training run's behaviour model against the logged propensities" in text
        assert "validation: action match" in text and "6,461" in text
    for cand in inputs.candidates:
        for est in cand.estimates:
            assert fmt_number(est.value) in html and fmt_number(est.value) in md
        assert fmt_number(cand.lower_bound) in html and fmt_number(cand.lower_bound) in md
    assert re.findall(r'data-plot="([^"]+)"', html) == [
        "forest",
        "weights-rule:constant=2",
        "weights-rule:constant=0",
        "reward",
        "drift",
        "training",
    ]  # no behaviour-model plot: every propensity was logged


def test_an_approved_candidate_reads_approved(approved_run: RunFiles, tmp_path: Path) -> None:
    inputs = report_inputs_from_run(approved_run.ope_json, approved_run.manifest)
    assert inputs.verdict.approved
    assert inputs.verdict.sentence.startswith("Approved: the lower 95 % bound")
    assert "gain over the current policy" in inputs.verdict.sentence
    assert "clears the required margin" in inputs.verdict.sentence
    paths = render_report(inputs, tmp_path)
    assert '<section id="verdict" class="verdict approve">' in paths.html.read_text("utf-8")


def test_cli_writes_the_report_and_prints_path_and_verdict(
    run: RunFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    code = main(
        [
            "report",
            "--evaluation",
            str(run.eval_dir),
            "--out",
            str(out),
            "--artifact",
            str(run.artifact_dir),
        ]
    )
    assert code == EXIT_OK
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == str(out / "report.html")
    assert lines[-1].startswith("REJECT: Rejected: the lower 95 % bound")
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    # the data folder was found through ope.json's "data" entry
    assert data["data"]["n_decisions"] == json.loads(run.ope_json.read_text())["n_decisions"]
    assert data["data"]["rows_by_table"]["orders"]["rows in"] == 400
    assert data["sources"]["manifest"] == str(run.manifest)
    assert data["training"]["algorithm"] == "discrete_cql"


def test_cli_user_errors_are_one_line(
    run: RunFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["report", "--evaluation", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("ecomrl: error: no ope.json at") and "\n" not in err
    code = main(
        [
            "report",
            "--evaluation",
            str(run.eval_dir),
            "--out",
            str(tmp_path / "o"),
            "--candidate",
            "rule:nope",
        ]
    )
    assert code == EXIT_USER_ERROR
    assert "candidate 'rule:nope' is not in the evaluation" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ope.json").write_text("{not json", encoding="utf-8")
    code = main(["report", "--evaluation", str(broken), "--out", str(tmp_path / "o")])
    assert code == EXIT_USER_ERROR
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.slow  # fits the OPE package's cross-fitted behaviour model
def test_estimated_propensities_are_said_plainly(tmp_path: Path) -> None:
    files = build_run(tmp_path / "run", log_propensities=False)
    ope = json.loads(files.ope_json.read_text(encoding="utf-8"))
    assert ope["behaviour_model"]["propensities_estimated"]
    inputs = report_inputs_from_run(files.ope_json, files.manifest)
    check = inputs.behaviour_model
    assert check is not None and check.propensities_estimated
    assert check.calibration_error == ope["behaviour_model"]["calibration_error"]
    assert check.calibration_error is not None and check.threshold is not None
    assert check.passed is (check.calibration_error <= check.threshold)
    assert len(check.bins) == len(ope["behaviour_model"]["bins"]) > 0
    calibration = next(c for c in inputs.verdict.checks if c.name == "behaviour-model calibration")
    assert calibration.applicable
    paths = render_report(inputs, tmp_path / "report")
    html = paths.html.read_text(encoding="utf-8")
    assert "The importance weights use ESTIMATED propensities" in html
    assert 'data-plot="behaviour-model"' in html
    assert "ESTIMATED propensities" in paths.markdown.read_text(encoding="utf-8")
