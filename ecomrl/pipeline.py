"""The nightly job: ETL for one day, train, evaluate against production, report, verdict.

``run_nightly(config, date)`` is what ``ecomrl run --config nightly.toml --date D`` calls:

1. **ETL** of day ``D`` into the transition dataset ``[run].dataset`` (a backfill of every day
   up to ``D`` when the dataset does not exist yet), replacing that day's partition atomically.
2. **split**: episodes that start in the last ``[run].eval_days`` days up to ``D`` are held out
   for evaluation; older episodes train. Nothing after ``D`` is used.
3. **train** the candidate (``[train]``; warm-started from the policy in production when
   ``[run].warm_start``)
   and, as a baseline, behaviour cloning.
4. **evaluate** the candidate, the production policy (the last policy approved by a run of an
   earlier date, else the logging policy itself), behaviour cloning and the configured rule
   baselines off-policy on the held-out episodes (``[evaluate]``, ``[approval]``).
5. **report** (HTML, Markdown, JSON) and ``run.json`` with the verdict and the exit code.

Everything is built in a scratch folder and published as ``runs/D/`` in one rename, under a lock
on the runs folder, so two runs cannot collide and a killed run leaves the previous good state.
A rerun of the same date with the same inputs reproduces the same outputs (seeded training and
bootstrap; the production policy for ``D`` is looked up among approvals of earlier dates only).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import structlog

from ecomrl.config import EcomrlConfig
from ecomrl.runs import run_lock, staged_directory

log = structlog.get_logger(__name__)

EXIT_APPROVED = 0
EXIT_REJECTED = 3
APPROVALS = "approvals"


@dataclass(frozen=True)
class NightlyOutcome:
    """What one nightly run decided and where it wrote it."""

    date: dt.date
    run_dir: Path
    approved: bool
    verdict: str
    reason: str
    report_html: Path
    exit_code: int


def production_policy(runs_dir: Path, date: dt.date) -> Path | None:
    """The artifact of the latest approval recorded by a run of a date before ``date``."""
    folder = runs_dir / APPROVALS
    if not folder.is_dir():
        return None
    earlier = sorted(p for p in folder.glob("*.json") if p.stem < date.isoformat())
    if not earlier:
        return None
    record = json.loads(earlier[-1].read_text(encoding="utf-8"))
    artifact = runs_dir / record["artifact"]
    return artifact if artifact.is_dir() else None


def _episode_windows(frame: pl.DataFrame, date: dt.date, eval_days: int) -> pl.DataFrame:
    """Tag each row with its episode's start date and whether the episode is held out."""
    first_eval_day = date - dt.timedelta(days=eval_days - 1)
    start = pl.col("decision_ts").min().over("episode_id").dt.date()
    return (
        frame.filter(pl.col("decision_ts").dt.date() <= date)
        .with_columns(start.alias("_episode_start"))
        .with_columns((pl.col("_episode_start") >= first_eval_day).alias("_held_out"))
    )


def run_nightly(config: EcomrlConfig, date: dt.date) -> NightlyOutcome:
    """Run the whole nightly job for ``date``; see the module docstring."""
    from etl import run_etl
    from evaluation.candidates import load_artifact
    from evaluation.data import TransitionsDataset
    from evaluation.evaluate import evaluate_candidates
    from evaluation.report import render_report, report_inputs_from_run
    from offline_rl import TrainConfig, load_transitions, train_on_frame
    from offline_rl.errors import TrainingError

    run = config.run
    if run.input is None:
        raise TrainingError("[run].input is not set: where are the raw logs?")
    runs_dir = run.runs_dir
    dataset = run.dataset if run.dataset is not None else runs_dir / "dataset"
    timings: dict[str, float] = {}

    with run_lock(runs_dir):
        clock = time.perf_counter()
        backfill = not (dataset / "_manifest.json").is_file()
        etl_result = run_etl(run.input, dataset, config.etl, date=None if backfill else date)
        timings["etl_s"] = time.perf_counter() - clock
        log.info("etl done", date=str(date), backfill=backfill, counts=etl_result.counts)

        frame, manifest = load_transitions(dataset)
        tagged = _episode_windows(frame, date, run.eval_days)
        train_frame = tagged.filter(~pl.col("_held_out")).drop("_episode_start", "_held_out")
        eval_frame = tagged.filter(pl.col("_held_out")).drop("_episode_start", "_held_out")
        if train_frame.height == 0 or eval_frame.height == 0:
            raise TrainingError(
                f"not enough data up to {date}: {train_frame.height} decisions to train on and "
                f"{eval_frame.height} to evaluate on (eval_days={run.eval_days})"
            )

        production = production_policy(runs_dir, date)
        final = runs_dir / date.isoformat()
        with staged_directory(final) as scratch:
            clock = time.perf_counter()
            candidate = train_on_frame(
                train_frame, manifest, scratch / "candidate", config.train,
                init_from=production if run.warm_start else None,
            )
            policies: list[Any] = [load_artifact(candidate.artifact, name="candidate")]
            if run.bc_baseline:
                discrete = manifest.data["action_space"]["type"] == "discrete"
                bc_config = TrainConfig.model_validate(
                    {**config.train.model_dump(), "agent": "discrete_bc" if discrete else "bc"}
                )
                bc = train_on_frame(train_frame, manifest, scratch / "baseline_bc", bc_config)
                policies.append(load_artifact(bc.artifact, name="baseline:bc"))
            timings["train_s"] = time.perf_counter() - clock

            if production is not None:
                policies.append(load_artifact(production, name="production"))
            policies.extend(run.baselines)

            clock = time.perf_counter()
            held_out = TransitionsDataset(frame=eval_frame, manifest=manifest.data, path=dataset)
            result = evaluate_candidates(
                held_out, policies, config=config.evaluate, approval=config.approval,
                data_path=dataset,
            )
            ope_json, _ = result.write(scratch / "evaluation")
            timings["evaluate_s"] = time.perf_counter() - clock

            clock = time.perf_counter()
            inputs = report_inputs_from_run(
                ope_json,
                dataset / "_manifest.json",
                candidate.artifact,
                data_dir=dataset,
                candidate="candidate",
                current_date=date.isoformat(),
                generated_at=f"by the nightly run for {date.isoformat()}",
            )
            render_report(inputs, scratch / "report")
            timings["report_s"] = time.perf_counter() - clock

            artifact = candidate.artifact.relative_to(scratch)
            verdict = result.candidate("candidate").verdict
            approved = verdict.decision == "approve"
            exit_code = EXIT_APPROVED if approved else EXIT_REJECTED
            summary = {
                "date": date.isoformat(),
                "verdict": verdict.decision,
                "reason": verdict.decided_by,
                "exit_code": exit_code,
                "candidate_artifact": str(artifact),
                "production_policy": str(production.relative_to(runs_dir)) if production else None,
                "warm_started": bool(run.warm_start and production is not None),
                "backfill": backfill,
                "etl_counts": etl_result.counts,
                "timings_s": {k: round(v, 3) for k, v in timings.items()},
            }
            (scratch / "run.json").write_text(json.dumps(summary, indent=2, sort_keys=True))

        approvals = runs_dir / APPROVALS
        record = approvals / f"{date.isoformat()}.json"
        if approved:
            approvals.mkdir(parents=True, exist_ok=True)
            tmp = record.with_suffix(".tmp")
            tmp.write_text(json.dumps({"artifact": f"{date.isoformat()}/{artifact}"}))
            tmp.replace(record)
        elif record.exists():  # a rerun that now rejects withdraws that date's approval
            record.unlink()

    return NightlyOutcome(
        date=date,
        run_dir=final,
        approved=approved,
        verdict=verdict.decision,
        reason=verdict.decided_by,
        report_html=final / "report" / "report.html",
        exit_code=exit_code,
    )
