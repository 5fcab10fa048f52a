"""The nightly job: ETL for one day, train, evaluate against production, report, verdict.

``run_nightly(config, date)`` is what ``ecomrl run --config nightly.toml --date D`` calls:

1. **ETL** of day ``D`` into the transition dataset ``[run].dataset`` (a backfill of every day
   up to ``D`` when the dataset does not exist yet), replacing that day's partition atomically.
2. **split** (``ecomrl.holdout``): a fixed share of users (by a hash of ``user_id``) is held out;
   their complete first episodes (started at least ``[run].eval_min_age_days`` before ``D``)
   are the unbiased sample the gate tests. The other users split into a fitting part and a
   selection part. Nothing after ``D`` is used. (``[run].holdout = "time"``: the last
   ``eval_days`` days are held out instead.)
3. **train** the agent (``[train]``; warm-started from the policy in production when
   ``[run].warm_start``) and, as a baseline, behaviour cloning, on the fitting users.
4. **certify** (``ecomrl.certify``, discrete agents): build the family of candidates between the
   logging policy and the agent (mixtures, SPIBB, Soft-SPIBB), score every member on the
   selection users and pick the one with the highest predicted lower bound (HCPI).
5. **evaluate** the pick (named ``candidate``), the unconstrained agent, the production policy
   (the last policy approved by a run of an earlier date), behaviour cloning and the rule
   baselines off-policy on the held-out episodes; the gate tests the paired improvement over the
   logging policy (``[evaluate]``, ``[approval]``).
6. **report** (HTML, Markdown, JSON) and ``run.json`` with the verdict and the exit code;
   the timings (and the ETL mode) apart in ``timings.json``.

Everything is built in a scratch folder and published as ``runs/D/`` in one rename, under a lock
on the runs folder, so two runs cannot collide and a killed run leaves the previous good state.
A rerun of the same date with the same inputs reproduces every file of ``runs/D/`` byte for byte
but ``timings.json`` (seeded training and bootstrap; files name the published paths, never the
scratch folder; the production policy for ``D`` is looked up among approvals of earlier dates
only).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
import structlog

from ecomrl.certify import build_family, choose_certified, selection_data
from ecomrl.config import EcomrlConfig
from ecomrl.holdout import RunSplit, split_by_time, split_by_users
from ecomrl.runs import published_path, run_lock, staged_directory
from etl import EtlResult, run_etl
from evaluation.approval import Verdict
from evaluation.candidates import load_artifact
from evaluation.data import TransitionsDataset
from evaluation.evaluate import EvaluationResult, evaluate_candidates
from evaluation.report import render_report, report_inputs_from_run
from offline_rl import TrainConfig, load_transitions, train_on_frame
from offline_rl.certified import AGENT_DIR, is_certified, load_policy
from offline_rl.data import TransitionManifest
from offline_rl.errors import TrainingError

log = structlog.get_logger(__name__)

EXIT_APPROVED = 0
EXIT_REJECTED = 3
APPROVALS = "approvals"
TIMINGS = "timings.json"
"""The one file of a run folder that differs between two runs of the same date: the seconds
each stage took and whether the ETL backfilled the dataset (the first run) or added a day."""


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


@dataclass(frozen=True)
class TrainedAgents:
    """The artifacts trained on the fitting users: the agent and the optional BC baseline."""

    agent: Path
    bc: Path | None


@dataclass(frozen=True)
class Candidates:
    """What the gate evaluates: the candidate first, and the selection behind it."""

    policies: list[Any]
    artifact: Path
    agent_artifact: Path
    selection: dict[str, Any] | None
    selection_notes: dict[str, str]


def split_logs(frame: pl.DataFrame, date: dt.date, config: EcomrlConfig) -> RunSplit:
    """The fitting, selection and held-out parts of the transitions for the run of ``date``."""
    run = config.run
    selection = config.certify.selection_fraction if config.certify.enabled else 0.0
    if run.holdout == "time":
        return split_by_time(frame, date, eval_days=run.eval_days, selection_fraction=selection)
    age = run.eval_min_age_days
    return split_by_users(
        frame,
        date,
        holdout_fraction=run.holdout_fraction,
        selection_fraction=selection,
        min_age_days=config.etl.horizon_days if age is None else age,
        first_only=run.eval_episodes == "first",
    )


def _train(
    split: RunSplit,
    manifest: TransitionManifest,
    scratch: Path,
    config: EcomrlConfig,
    production: Path | None,
) -> TrainedAgents:
    init = None
    if config.run.warm_start and production is not None:
        init = production / AGENT_DIR if is_certified(production) else production
    agent = train_on_frame(
        split.fit, manifest, scratch / "candidate", config.train, init_from=init
    )
    bc: Path | None = None
    if config.run.bc_baseline:
        discrete = manifest.discrete
        bc_config = TrainConfig.model_validate(
            {**config.train.model_dump(), "agent": "discrete_bc" if discrete else "bc"}
        )
        bc = train_on_frame(split.fit, manifest, scratch / "baseline_bc", bc_config).artifact
    return TrainedAgents(agent.artifact, bc)


def build_candidates(
    split: RunSplit,
    manifest: TransitionManifest,
    dataset: Path,
    scratch: Path,
    trained: TrainedAgents,
    config: EcomrlConfig,
) -> Candidates:
    """The certified pick (discrete, ``[certify].enabled``) or the agent itself."""
    discrete = manifest.discrete
    certify = config.certify
    if not (discrete and certify.enabled and certify.has_members()):
        reason = "continuous actions" if not discrete else "[certify] is disabled"
        log.info("no candidate family", reason=reason)
        return Candidates(
            [load_artifact(trained.agent, name="candidate")], trained.agent, trained.agent,
            {"built": False, "reason": reason}, {},
        )
    if split.selection.height == 0:
        raise TrainingError(
            "no selection episodes: the selection users have no complete episode up to the run "
            "date (lower [run].eval_min_age_days or [certify].selection_fraction, or wait for "
            "more logs)"
        )
    agent = load_policy(trained.agent)
    members = build_family(split.fit, manifest, agent, certify)
    data = selection_data(split.selection, manifest, dataset, config.evaluate)
    n_test = int(split.held_out["episode_id"].n_unique())
    result = choose_certified(members, data, n_test, config.evaluate, config.approval, certify)
    index = result.pick
    if index is None:
        index = max(range(len(members)), key=lambda i: result.members[i].predicted_lower_bound)
    artifact = members[index].save(scratch / "candidate" / "certified", trained.agent)
    policies = [
        load_artifact(artifact, name="candidate"),
        load_artifact(trained.agent, name="agent:unconstrained"),
    ]
    return Candidates(
        policies, artifact, trained.agent, {"built": True, **result.to_dict()},
        {} if result.note() is None else {"candidate": str(result.note())},
    )


def _with_realised(selection: dict[str, Any] | None, result: EvaluationResult) -> Any:
    """The selection record with the pick's realised bound on the held-out episodes."""
    if selection is None or not selection.get("built"):
        return selection
    improvement = result.candidate("candidate").improvement
    realised = None if improvement is None else improvement.lower_bound
    pick = next((m for m in selection["members"] if m["label"] == selection["pick"]), None)
    predicted = None if pick is None else pick["predicted_lower_bound"]
    return {**selection, "predicted_lower_bound": predicted, "realised_lower_bound": realised}


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")


def _write_report(
    ope_json: Path, dataset: Path, agent: Path, date: dt.date, scratch: Path, final: Path
) -> None:
    """The report of the run, naming the files where they will be once published (``final``),
    not where they are being built (``scratch``, gone after the rename)."""
    inputs = report_inputs_from_run(
        ope_json,
        dataset / "_manifest.json",
        agent,
        data_dir=dataset,
        candidate="candidate",
        current_date=date.isoformat(),
        generated_at=f"by the nightly run for {date.isoformat()}",
    )
    sources = {
        name: str(published_path(Path(path), scratch, final))
        for name, path in inputs.sources.items()
    }
    render_report(replace(inputs, sources=sources), scratch / "report")


def run_nightly(config: EcomrlConfig, date: dt.date) -> NightlyOutcome:
    """Run the whole nightly job for ``date``; see the module docstring."""
    run = config.run
    if run.input is None:
        raise TrainingError("[run].input is not set: where are the raw logs?")
    runs_dir = run.runs_dir
    dataset = run.dataset if run.dataset is not None else runs_dir / "dataset"
    timings: dict[str, float] = {}

    with run_lock(runs_dir):
        data = _etl_and_split(run.input, dataset, date, config, timings)
        production = production_policy(runs_dir, date)
        final = runs_dir / date.isoformat()
        with staged_directory(final) as scratch:
            clock = time.perf_counter()
            trained = _train(data.split, data.manifest, scratch, config, production)
            chosen = build_candidates(
                data.split, data.manifest, dataset, scratch, trained, config
            )
            timings["train_s"] = time.perf_counter() - clock
            result = _evaluate(data, chosen, trained, production, dataset, scratch, config,
                               timings)
            clock = time.perf_counter()
            _write_report(result.ope_json, dataset, chosen.agent_artifact, date, scratch, final)
            timings["report_s"] = time.perf_counter() - clock
            verdict = result.evaluation.candidate("candidate").verdict
            approved = verdict.decision == "approve"
            summary = _run_summary(date, verdict, chosen, result.evaluation, data, production,
                                   scratch, config)
            _write_json(scratch / "run.json", summary)
            _write_json(
                scratch / TIMINGS,
                {"seconds": {k: round(v, 3) for k, v in timings.items()},
                 "etl_backfill": data.backfill},
            )
        _record_approval(runs_dir, date, summary["candidate_artifact"], approved)

    return NightlyOutcome(
        date=date,
        run_dir=final,
        approved=approved,
        verdict=verdict.decision,
        reason=verdict.decided_by,
        report_html=final / "report" / "report.html",
        exit_code=int(summary["exit_code"]),
    )


@dataclass(frozen=True)
class _NightData:
    """The night's dataset after the ETL, split for training, selection and the gate."""

    etl: EtlResult
    backfill: bool
    manifest: TransitionManifest
    split: RunSplit


@dataclass(frozen=True)
class _Evaluated:
    evaluation: EvaluationResult
    ope_json: Path


def _etl_and_split(
    raw: Path, dataset: Path, date: dt.date, config: EcomrlConfig, timings: dict[str, float]
) -> _NightData:
    """ETL of ``date`` into ``dataset`` (a backfill the first time), then the split."""
    clock = time.perf_counter()
    backfill = not (dataset / "_manifest.json").is_file()
    etl_result = run_etl(raw, dataset, config.etl, date=None if backfill else date)
    timings["etl_s"] = time.perf_counter() - clock
    log.info("etl done", date=str(date), backfill=backfill, counts=etl_result.counts)
    frame, manifest = load_transitions(dataset)
    split = split_logs(frame, date, config)
    if split.fit.height == 0 or split.held_out.height == 0:
        raise TrainingError(
            f"not enough data up to {date}: {split.fit.height} decisions to train on and "
            f"{split.held_out.height} to evaluate on ({split.description}; see [run] "
            "holdout, eval_min_age_days, eval_days)"
        )
    log.info("split", description=split.description)
    return _NightData(etl_result, backfill, manifest, split)


def _evaluate(
    data: _NightData,
    chosen: Candidates,
    trained: TrainedAgents,
    production: Path | None,
    dataset: Path,
    scratch: Path,
    config: EcomrlConfig,
    timings: dict[str, float],
) -> _Evaluated:
    """Every policy of the night off-policy on the held-out episodes; ``ope.json`` written."""
    clock = time.perf_counter()
    policies = list(chosen.policies)
    if trained.bc is not None:
        policies.append(load_artifact(trained.bc, name="baseline:bc"))
    if production is not None:
        policies.append(load_artifact(production, name="production"))
    policies.extend(config.run.baselines)
    held_out = TransitionsDataset(frame=data.split.held_out, manifest=data.manifest.data,
                                  path=dataset)
    result = evaluate_candidates(
        held_out, policies, config=config.evaluate, approval=config.approval,
        data_path=dataset, episodes_per_day=data.split.episodes_per_day,
        selection_notes=chosen.selection_notes,
    )
    result = replace(
        result, selection=_with_realised(chosen.selection, result),
        holdout=data.split.description,
    )
    ope_json, _ = result.write(scratch / "evaluation")
    timings["evaluate_s"] = time.perf_counter() - clock
    return _Evaluated(result, ope_json)


def _run_summary(
    date: dt.date,
    verdict: Verdict,
    chosen: Candidates,
    result: EvaluationResult,
    data: _NightData,
    production: Path | None,
    scratch: Path,
    config: EcomrlConfig,
) -> dict[str, Any]:
    """``run.json``: what the night decided and from what (no timings: reruns reproduce it)."""
    runs_dir = config.run.runs_dir
    approved = verdict.decision == "approve"
    return {
        "date": date.isoformat(),
        "verdict": verdict.decision,
        "reason": verdict.decided_by,
        "exit_code": EXIT_APPROVED if approved else EXIT_REJECTED,
        "candidate_artifact": str(chosen.artifact.relative_to(scratch)),
        "agent_artifact": str(chosen.agent_artifact.relative_to(scratch)),
        "selection": result.selection,
        "holdout": data.split.description,
        "production_policy": str(production.relative_to(runs_dir)) if production else None,
        "warm_started": bool(config.run.warm_start and production is not None),
        "etl_counts": data.etl.counts,
    }


def _record_approval(runs_dir: Path, date: dt.date, artifact: str, approved: bool) -> None:
    """``runs/approvals/D.json`` names the approved artifact; a rerun that rejects withdraws it."""
    record = runs_dir / APPROVALS / f"{date.isoformat()}.json"
    if approved:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"artifact": f"{date.isoformat()}/{artifact}"}))
        tmp.replace(record)
    elif record.exists():
        record.unlink()
