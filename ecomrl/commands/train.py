"""``ecomrl train``: train a conservative agent on an ETL transition dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ecomrl.commands._options import Overrides
from ecomrl.config import load_config
from ecomrl.logging import emit_result

_AGENTS = "auto, discrete_cql, discrete_bcq, discrete_bc, cql, bcq, bc"


def register(app: typer.Typer) -> None:
    """Add the ``train`` subcommand to ``app``."""

    @app.command("train")
    def train_command(
        data: Annotated[
            Path,
            typer.Option(
                "--data",
                help="ETL output folder (holds transitions/ and _manifest.json).",
            ),
        ],
        out: Annotated[
            Path,
            typer.Option(
                "--out",
                help="Output folder: the policy artifact goes to OUT/<agent>/, "
                "checkpoints to OUT/checkpoints/<agent>/.",
            ),
        ],
        agent: Annotated[
            str | None,
            typer.Option(
                "--agent",
                help=f"Agent to train ({_AGENTS}). Default: the agent key of the config's "
                "train table; 'auto' picks DiscreteCQL or CQL from the dataset's action space.",
            ),
        ] = None,
        steps: Annotated[
            int | None,
            typer.Option(
                "--steps",
                min=1,
                help="Gradient steps (overrides n_steps of the config's train table).",
            ),
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option("--config", help="TOML config file; its train table is used."),
        ] = None,
        resume: Annotated[
            bool,
            typer.Option(
                "--resume",
                help="Continue from the last checkpoint under OUT (weights, optimizer, step "
                "counter and random state restored).",
            ),
        ] = False,
        device: Annotated[
            str | None,
            typer.Option(
                "--device",
                help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N. "
                "Default: the config's train device (auto).",
            ),
        ] = None,
        overrides: Overrides = None,
    ) -> None:
        """Train an offline RL policy (DiscreteCQL/BCQ/BC or CQL/BCQ/BC) from logged decisions.

        Reads the transitions the ETL wrote, trains with d3rlpy's algorithms in a fast
        vectorised loop, saves a verified policy artifact (d3rlpy model, TorchScript policy,
        config, metrics, SHA256SUMS) and prints where it is with the final metrics.
        """
        from offline_rl._quiet import import_d3rlpy

        import_d3rlpy()  # first, so that d3rlpy's structlog setup is undone (--log-json)
        from offline_rl.errors import TrainingError
        from offline_rl.train import train

        cfg = load_config(config, overrides or ()).train
        updates: dict[str, object] = {}
        if agent is not None:
            updates["agent"] = agent
        if steps is not None:
            updates["n_steps"] = steps
        if device is not None:
            updates["device"] = device
        if updates:
            try:
                cfg = type(cfg).model_validate({**cfg.model_dump(), **updates})
            except ValueError as exc:
                first = str(exc).splitlines()
                raise TrainingError(
                    f"bad option: {first[1] if len(first) > 1 else exc}; agents: {_AGENTS}"
                ) from exc
        result = train(data, out, cfg, resume=resume)
        summary = {
            "agent": result.agent,
            "steps": result.n_steps,
            "resumed_from": result.resumed_from,
            "updates_per_second": round(result.updates_per_second, 1),
            "final_losses": {k: round(v, 6) for k, v in result.final_losses.items()},
            "validation": {k: round(v, 6) for k, v in result.validation.items()},
        }
        emit_result(
            "train.result",
            f"policy artifact: {result.artifact}\n{json.dumps(summary, indent=2)}",
            artifact=str(result.artifact),
            **summary,
        )
