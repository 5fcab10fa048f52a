"""``ecomrl simulate``: generate raw e-commerce logs (events, orders) with the bundled simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from pydantic import ValidationError

from ecomrl.commands._options import Overrides
from ecomrl.config import load_config
from simulator import (
    SAMPLE_CONFIGS,
    DirtConfig,
    SimulatorConfig,
    SimulatorError,
    simulate,
    simulate_summary,
    write_raw_logs,
    write_sample_set,
)


def _apply_overrides(base: SimulatorConfig, overrides: dict[str, Any]) -> SimulatorConfig:
    data = base.model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SimulatorConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise SimulatorError(
            f"simulator option '{key}': {err['msg']} (got {err.get('input')!r})"
        ) from None


def _echo_summary(summary: pl.DataFrame) -> None:
    width = max(len(m) for m in summary["metric"].to_list())
    for metric, value in summary.iter_rows():
        typer.echo(f"{metric:<{width}}  {value}")


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` subcommand to the ``ecomrl`` app."""

    @app.command("simulate")
    def simulate_command(
        config: Annotated[
            Path | None,
            typer.Option("--config", help="TOML config; its \\[simulator] table is used."),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option(
                "--out",
                help="Write the raw logs here: events/ and orders/ partitioned by date, plus "
                "_truth.parquet (the simulator's ground truth). Without it only the summary "
                "is printed.",
            ),
        ] = None,
        scenario: Annotated[
            str | None,
            typer.Option("--scenario", help="promotion (one incentive per session) or "
                         "recommendation (one category per page view)."),
        ] = None,
        action_space: Annotated[
            str | None,
            typer.Option("--action-space", help="promotion only: discrete tiers or a "
                         "continuous discount rate in [0, 0.3]."),
        ] = None,
        n_users: Annotated[int | None, typer.Option("--n-users", help="Number of users.")] = None,
        seed: Annotated[int | None, typer.Option("--seed", help="Random seed.")] = None,
        days: Annotated[int | None, typer.Option("--days", help="Days of logs.")] = None,
        no_propensity: Annotated[
            bool,
            typer.Option("--no-propensity", help="Do not log the logging policy's propensities "
                         "(as many real sites)."),
        ] = False,
        dirt: Annotated[
            bool,
            typer.Option("--dirt", help="Switch on every kind of real-world dirt (duplicates, "
                         "late and out-of-order events, bots, anonymous sessions, extra "
                         "returns, sessions across midnight)."),
        ] = False,
        sample_set: Annotated[
            Path | None,
            typer.Option(
                "--sample-set",
                help="Regenerate the bundled samples byte-for-byte into DIR/"
                + ", DIR/".join(SAMPLE_CONFIGS)
                + " (ignores the other options).",
            ),
        ] = None,
        settings: Overrides = None,
    ) -> None:
        """Simulate users of a web shop under the stochastic logging policy and write the raw
        logs real sites have (events and order lines, no transitions), with a summary.

        Example: ecomrl simulate --n-users 2000 --seed 1 --dirt --out runs/raw
        """
        if sample_set is not None:
            written = write_sample_set(sample_set)
            for name, path in written.items():
                typer.echo(f"{name}: {path}")
            return
        base = load_config(config, settings or ()).simulator
        options: dict[str, Any] = {
            "scenario": scenario,
            "action_space": action_space,
            "n_users": n_users,
            "seed": seed,
            "days": days,
        }
        if no_propensity:
            options["log_propensity"] = False
        if dirt:
            options["dirt"] = DirtConfig.all_on().model_dump()
        cfg = _apply_overrides(base, options)
        logs = simulate(cfg, progress=True)
        if out is not None:
            write_raw_logs(logs, out)
            typer.echo(f"wrote {out}")
        _echo_summary(simulate_summary(logs))
