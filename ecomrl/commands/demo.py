"""``ecomrl demo``: the whole pipeline on the bundled sample logs, then the simulator's truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ecomrl.commands._options import Overrides
from ecomrl.config import load_config
from ecomrl.errors import ConfigError

_REPO = Path(__file__).resolve().parents[2]
SAMPLES = _REPO / "data_samples"
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "demo.toml"
BUNDLED = ("promotion", "promotion_continuous", "recommendation")
"""The bundled samples ``--sample`` accepts by name (``data_samples/<name>``)."""


def sample_and_config(sample: str, config: Path | None) -> tuple[Path, Path]:
    """The raw logs and the config the demo runs: a bundled name or a folder, and its config.

    A bundled name runs on ``data_samples/<name>`` with its shipped config
    (``configs/<name>.toml``; the promotion sample keeps the demo's own ``ecomrl/demo.toml``).
    A folder runs with ``config`` or, without one, the demo's config.
    """
    if sample in BUNDLED:
        root = SAMPLES / sample
        shipped = DEMO_CONFIG if sample == "promotion" else _REPO / "configs" / f"{sample}.toml"
    else:
        root, shipped = Path(sample), DEMO_CONFIG
    if not (root / "events").is_dir():
        raise ConfigError(
            f"sample logs not found: {root} (expected events/ and orders/; bundled samples: "
            f"{', '.join(BUNDLED)})"
        )
    chosen = config or shipped
    if not chosen.is_file():
        raise ConfigError(f"config not found: {chosen}")
    return root, chosen


def register(app: typer.Typer) -> None:
    """Add the ``demo`` subcommand to ``app``."""

    @app.command("demo")
    def demo_command(
        out: Annotated[
            Path, typer.Option("--out", help="Runs folder for the demo (report, artifacts).")
        ] = Path("runs/demo"),
        sample: Annotated[
            str,
            typer.Option(
                "--sample",
                help=f"A bundled sample ({', '.join(BUNDLED)}) or a folder of raw logs.",
            ),
        ] = "promotion",
        config: Annotated[
            Path | None,
            typer.Option(
                "--config",
                help="TOML config (default: the sample's configs/<sample>.toml; "
                "ecomrl/demo.toml for promotion and for folders).",
            ),
        ] = None,
        truth_users: Annotated[
            int,
            typer.Option(
                "--truth-users",
                help="Simulated users for the true-value check of the candidate (0: skip).",
            ),
        ] = 3000,
        overrides: Overrides = None,
    ) -> int:
        """Summarise the sample logs, run the nightly job on their last day, check the truth.

        Runs exactly what `ecomrl run` does (ETL, training of the candidate and a behaviour
        cloning baseline, off-policy evaluation, approval report) on a bundled sample (the
        promotion one by default), prints the verdict and where the report is, and then, because
        the sample comes from the simulator, runs the candidate and the logging policy online to
        show their true values beside what the report estimated.
        """
        from ecomrl.pipeline import run_nightly
        from simulator import read_raw_logs, simulate_summary

        root, config_path = sample_and_config(sample, config)
        logs = read_raw_logs(root)
        typer.echo(f"== sample logs: {root} (config {config_path})")
        for row in simulate_summary(logs).iter_rows():
            typer.echo(f"  {row[0]:<34}{row[1]}")

        decisions = logs.events.filter(logs.events["event_type"] == "decision")
        last_day = decisions["event_ts"].max().date()  # type: ignore[union-attr]
        cfg = load_config(config_path, overrides or ())
        run_cfg = cfg.run.model_copy(update={"input": root, "runs_dir": out, "dataset": None})
        cfg = cfg.model_copy(update={"run": run_cfg})

        typer.echo(f"== nightly job for {last_day} (ecomrl run) into {out}")
        outcome = run_nightly(cfg, last_day)
        typer.echo(f"verdict: {outcome.verdict.upper()}: {outcome.reason}")

        if truth_users > 0 and (root / "_simulator.json").is_file():
            typer.echo("== ground truth: both policies run online in the simulator")
            _truth(root, outcome.run_dir, cfg.run.dataset or out / "dataset", truth_users)
        typer.echo(f"report: {outcome.report_html.resolve()}")
        return 0


def _truth(sample: Path, run_dir: Path, dataset: Path, n_users: int) -> None:
    from etl import ObservationBuilder
    from offline_rl import load_policy
    from simulator import SimulatorConfig, deployment_value, logging_policy

    sim_config = SimulatorConfig.model_validate_json((sample / "_simulator.json").read_text())
    hook = ObservationBuilder.from_manifest(dataset / "_manifest.json")
    summary = json.loads((run_dir / "run.json").read_text())
    # The seed also draws the simulated world (catalogue, segments): keep it, so the truth is of
    # the world the logs came from; another number of users draws fresh users of that world.
    # The value is the gate's: the discounted return of a new user's first episode.
    seed = sim_config.seed
    base = deployment_value(logging_policy(sim_config), sim_config, n_users=n_users, seed=seed)
    shipped = deployment_value(
        load_policy(run_dir / summary["candidate_artifact"]), sim_config,
        observation_hook=hook, n_users=n_users, seed=seed,
    )
    gain, half = shipped.paired_difference(base)
    ope = json.loads((run_dir / "evaluation" / "ope.json").read_text())
    candidate = next(c for c in ope["candidates"] if c["name"] == "candidate")
    improvement = candidate.get("improvement") or {}
    verdict = candidate["verdict"]
    typer.echo(
        f"  logging policy  true value {base.value:7.3f} [{base.ci_low:.3f}, {base.ci_high:.3f}]"
        f"   estimated from the logs {ope['behaviour']['estimate']:7.3f}"
    )
    typer.echo(
        f"  candidate       true gain {gain:+7.3f} +- {half:.3f} (paired rollouts)   estimated "
        f"gain {improvement.get('estimate', float('nan')):+7.3f} "
        f"[{improvement.get('ci_low', float('nan')):.3f}, "
        f"{improvement.get('ci_high', float('nan')):.3f}]"
    )
    shipped_text = "shipped" if verdict["approved"] else "not shipped: the logging policy stays"
    typer.echo(f"  what the job did: {shipped_text}")
    power = verdict.get("power") or {}
    if not verdict["approved"] and power:
        typer.echo(
            f"  these logs ({power['n_episodes']} held-out episodes) can certify gains of "
            f"{power['smallest_certifiable_gain']:.3g} per episode or more; the true gain "
            f"is {gain:+.3g}"
        )
    (run_dir.parent / "demo_truth.json").write_text(
        json.dumps(
            {
                "logging policy": {"value": base.value, "ci_low": base.ci_low,
                                   "ci_high": base.ci_high},
                "candidate": {"true_gain": gain, "half_width": half,
                              "approved": verdict["approved"]},
                "estimated": {"behaviour": ope["behaviour"], "improvement": improvement},
            },
            indent=2,
        )
    )
