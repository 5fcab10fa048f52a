"""The nightly job end to end on the bundled promotion sample (tiny training budget)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from ecomrl.cli import EXIT_REJECTED, main
from ecomrl.config import EcomrlConfig, config_from_dict
from ecomrl.pipeline import EXIT_APPROVED, production_policy, run_nightly
from ecomrl.runs import RunLockedError, run_lock

SAMPLE = Path(__file__).resolve().parents[2] / "data_samples" / "promotion"
DAY = dt.date(2026, 2, 1)


def _config(runs: Path) -> EcomrlConfig:
    return config_from_dict(
        {
            # the sample's users all arrive in its first week: their first episodes are 21 days
            # old or more on the run date (the default age is the 30-day episode horizon)
            "run": {
                "input": str(SAMPLE), "runs_dir": str(runs), "bc_baseline": False,
                "eval_min_age_days": 14,
            },
            "train": {"n_steps": 150, "checkpoint_every": 150, "onnx": False},
            "evaluate": {"bootstrap": {"n_resamples": 200}},
        }
    )


@pytest.mark.slow
def test_nightly_run_publishes_a_report_and_reproduces_on_rerun(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    config = _config(runs)
    first = run_nightly(config, DAY)
    run_dir = runs / DAY.isoformat()
    assert first.run_dir == run_dir
    for name in ("report/report.html", "report/report.json", "evaluation/ope.json", "run.json"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "run.json").read_text())
    assert (run_dir / summary["candidate_artifact"] / "SHA256SUMS").is_file()
    assert summary["verdict"] == first.verdict
    assert first.exit_code == (EXIT_APPROVED if first.approved else EXIT_REJECTED)
    assert (runs / "approvals" / f"{DAY}.json").exists() == first.approved
    # nothing half-written is left beside the published run
    assert not [p for p in runs.iterdir() if ".partial-" in p.name]

    outputs = ("evaluation/ope.json", "report/report.json", "report/report.md",
               "report/report.html", "run.json")
    before = {name: (run_dir / name).read_bytes() for name in outputs}
    second = run_nightly(config, DAY)  # rerun of the same date: the ETL now runs incrementally
    assert second.verdict == first.verdict
    for name in outputs:
        if name == "run.json":  # differs only in its timings and the ETL mode
            continue
        assert (run_dir / name).read_bytes() == before[name], name

    # an approval only counts for later dates
    assert production_policy(runs, DAY) is None


def test_second_run_on_the_same_runs_dir_is_refused(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with run_lock(runs), pytest.raises(RunLockedError):
        run_nightly(_config(runs), DAY)


def test_run_command_reports_bad_date_as_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--date", "yesterday"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err


def test_production_policy_is_the_latest_approval_before_the_date(tmp_path: Path) -> None:
    for day in ("2026-01-03", "2026-01-05"):
        (tmp_path / day / "candidate" / "discrete_cql").mkdir(parents=True)
    approvals = tmp_path / "approvals"
    approvals.mkdir()
    for day in ("2026-01-03", "2026-01-05"):
        (approvals / f"{day}.json").write_text(
            json.dumps({"artifact": f"{day}/candidate/discrete_cql"})
        )
    assert production_policy(tmp_path, dt.date(2026, 1, 3)) is None
    assert production_policy(tmp_path, dt.date(2026, 1, 5)) == (
        tmp_path / "2026-01-03" / "candidate" / "discrete_cql"
    )
    assert production_policy(tmp_path, dt.date(2026, 1, 9)) == (
        tmp_path / "2026-01-05" / "candidate" / "discrete_cql"
    )


@pytest.mark.slow
def test_next_day_evaluates_the_approved_policy_and_warm_starts_from_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    config = _config(runs)
    earlier = DAY - dt.timedelta(days=1)
    run_nightly(config, earlier)
    artifact = json.loads((runs / earlier.isoformat() / "run.json").read_text())[
        "candidate_artifact"
    ]
    # as if that run had been approved
    (runs / "approvals").mkdir(exist_ok=True)
    (runs / "approvals" / f"{earlier}.json").write_text(
        json.dumps({"artifact": f"{earlier}/{artifact}"})
    )
    warm = config.model_copy(update={"run": config.run.model_copy(update={"warm_start": True})})
    run_nightly(warm, DAY)
    summary = json.loads((runs / DAY.isoformat() / "run.json").read_text())
    assert summary["production_policy"] == f"{earlier}/{artifact}"
    assert summary["warm_started"] is True
    ope = json.loads((runs / DAY.isoformat() / "evaluation" / "ope.json").read_text())
    assert {c["name"] for c in ope["candidates"]} >= {"candidate", "production"}
