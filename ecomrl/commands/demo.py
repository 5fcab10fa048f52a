"""``ecomrl demo``: the whole pipeline on the bundled sample logs, then the simulator's truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ecomrl.config import load_config
from ecomrl.errors import ConfigError

_REPO = Path(__file__).resolve().parents[2]
DEFAULT_SAMPLE = _REPO / "data_samples" / "promotion"
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "demo.toml"


def register(app: typer.Typer) -> None:
    """Add the ``demo`` subcommand to ``app``."""

    @app.command("demo")
    def demo_command(
        out: Annotated[
            Path, typer.Option("--out", help="Runs folder for the demo (report, artifacts).")
        ] = Path("runs/demo"),
        sample: Annotated[
            Path, typer.Option("--sample", help="Raw logs to run on (a bundled sample).")
        ] = DEFAULT_SAMPLE,
        truth_users: Annotated[
            int,
            typer.Option(
                "--truth-users",
                help="Simulated users for the true-value check of the candidate (0: skip).",
            ),
        ] = 3000,
    ) -> int:
        """Summarise the sample logs, run the nightly job on their last day, check the truth.

        Runs exactly what `ecomrl run` does (ETL, training of the candidate and a behaviour
        cloning baseline, off-policy evaluation, approval report) on the bundled promotion
        sample, prints the verdict and where the report is, and then, because the sample comes
        from the simulator, runs the candidate and the logging policy online to show their true
        values beside what the report estimated.
        """
        from ecomrl.pipeline import run_nightly
        from simulator import read_raw_logs, simulate_summary

        if not (sample / "events").is_dir():
            raise ConfigError(f"sample logs not found: {sample} (expected events/ and orders/)")
        logs = read_raw_logs(sample)
        typer.echo(f"== sample logs: {sample}")
        for row in simulate_summary(logs).iter_rows():
            typer.echo(f"  {row[0]:<34}{row[1]}")

        decisions = logs.events.filter(logs.events["event_type"] == "decision")
        last_day = decisions["event_ts"].max().date()  # type: ignore[union-attr]
        cfg = load_config(DEMO_CONFIG)
        run_cfg = cfg.run.model_copy(update={"input": sample, "runs_dir": out})
        cfg = cfg.model_copy(update={"run": run_cfg})

        typer.echo(f"== nightly job for {last_day} (ecomrl run) into {out}")
        outcome = run_nightly(cfg, last_day)
        typer.echo(f"verdict: {outcome.verdict.upper()}: {outcome.reason}")

        if truth_users > 0 and (sample / "_simulator.json").is_file():
            typer.echo("== ground truth: both policies run online in the simulator")
            _truth(sample, outcome.run_dir, cfg.run.dataset or out / "dataset", truth_users)
        typer.echo(f"report: {outcome.report_html.resolve()}")
        return 0


def _truth(sample: Path, run_dir: Path, dataset: Path, n_users: int) -> None:
    from etl import ObservationBuilder
    from offline_rl import load_policy
    from simulator import SimulatorConfig, logging_policy, rollout

    sim_config = SimulatorConfig.model_validate_json((sample / "_simulator.json").read_text())
    hook = ObservationBuilder.from_manifest(dataset / "_manifest.json")
    summary = json.loads((run_dir / "run.json").read_text())
    # The seed also draws the simulated world (catalogue, segments): keep it, so the truth is of
    # the world the logs came from; more users than the logs only narrows the interval.
    seed = sim_config.seed
    results = {
        "logging policy": rollout(
            logging_policy(sim_config), sim_config, n_users=n_users, seed=seed
        ),
        "candidate": rollout(
            load_policy(run_dir / summary["candidate_artifact"]), sim_config,
            observation_hook=hook,
            n_users=n_users, seed=seed,
        ),
    }
    ope = json.loads((run_dir / "evaluation" / "ope.json").read_text())
    candidate = next(c for c in ope["candidates"] if c["name"] == "candidate")
    primary = next(e for e in candidate["estimates"] if e["estimator"] == ope["primary_estimator"])
    estimated = {"logging policy": ope["behaviour"], "candidate": primary}
    for name, result in results.items():
        est = estimated[name]
        typer.echo(
            f"  {name:<15} true value {result.value:7.3f} [{result.ci_low:.3f}, "
            f"{result.ci_high:.3f}]   estimated from the logs ({est['estimator']}) "
            f"{est['estimate']:7.3f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}]"
        )
    (run_dir.parent / "demo_truth.json").write_text(
        json.dumps(
            {
                name: {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high}
                for name, r in results.items()
            }
            | {"estimated": estimated},
            indent=2,
        )
    )
