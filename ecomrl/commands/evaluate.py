"""``ecomrl evaluate``: off-policy evaluation of candidate policies on logged transitions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecomrl.commands._options import Overrides
from ecomrl.config import load_config


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` subcommand to ``app``."""

    @app.command("evaluate")
    def evaluate_command(
        data: Annotated[
            Path,
            typer.Option(
                "--data",
                help="ETL output folder (transitions/ and _manifest.json), or a folder or file "
                "of transitions Parquet.",
            ),
        ],
        policy: Annotated[
            list[str],
            typer.Option(
                "--policy",
                help="Candidate to evaluate; repeat for several. rule:constant=K (always action "
                "K: index, label such as pct_10, or a discount rate), rule:uniform, "
                "rule:behaviour (the logging policy itself), table:PATH.parquet (columns "
                "decision_id, action, probability), artifact:PATH (a trained policy folder; "
                "artifact:PATH#epsilon=0.05 for an epsilon-soft version).",
            ),
        ],
        out: Annotated[
            Path,
            typer.Option("--out", help="Folder for ope.json and ope.parquet (created)."),
        ],
        config: Annotated[
            Path | None,
            typer.Option(
                "--config",
                help="TOML config file; its evaluate and approval tables are used.",
            ),
        ] = None,
        overrides: Overrides = None,
    ) -> None:
        """Estimate what each candidate policy would earn, from the logs alone, and judge it.

        For every candidate: importance-sampling, doubly-robust and model-based estimates of its
        value (mean discounted reward per episode), each with a bootstrap interval and a
        standard error; the logging policy's own value from the logs beside them; diagnostics
        (effective sample size, weight tails, unsupported actions, estimator agreement); and
        the approval verdict: approve only if the candidate's lower confidence bound beats the
        current policy by the configured margin and every diagnostic passes.

        Writes OUT/ope.json and OUT/ope.parquet (one row per candidate and estimator) and
        prints one line per candidate. Missing logging propensities are estimated (and said
        so in the output).
        """
        from evaluation.evaluate import evaluate_candidates

        cfg = load_config(config, overrides or ())
        result = evaluate_candidates(
            data, list(policy), config=cfg.evaluate, approval=cfg.approval, data_path=data
        )
        json_path, _ = result.write(out)
        b = result.behaviour
        typer.echo(
            f"behaviour (logged): {b.estimate:.4f}  [{b.ci_low:.4f}, {b.ci_high:.4f}]  "
            f"over {result.n_episodes} episodes"
        )
        for c in result.candidates:
            p = c.primary
            typer.echo(
                f"{c.name}: {p.estimator}={p.estimate:.4f}  [{p.ci_low:.4f}, {p.ci_high:.4f}]  "
                f"lower bound {c.lower_bound:.4f}  -> {c.verdict.decision.upper()}"
            )
        typer.echo(f"wrote {json_path}")
