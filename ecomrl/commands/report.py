"""``ecomrl report``: turn an evaluation into the policy-approval report (HTML, Markdown, JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecomrl.commands._options import Overrides
from ecomrl.config import load_config
from ecomrl.logging import emit_result

_HELP = (
    "Write the policy-approval report of an evaluation and print its verdict.\n\n"
    "The report opens with the verdict (APPROVE or REJECT) and the rule that decided it in plain "
    "words, then the value of each candidate against the current policy (every estimator with "
    "its interval), the diagnostics with their thresholds, the data (rows used and quarantined, "
    "episodes, rewards, feature drift), the training curves and the behaviour-model check.\n\n"
    "Writes OUT/report.html (self-contained: open it in any browser, offline), OUT/report.md and "
    "OUT/report.json, then prints the path of report.html and the verdict line. Example:\n\n"
    "ecomrl report --evaluation runs/eval --data runs/etl --artifact runs/train/discrete_cql "
    "--out runs/report"
)


def register(app: typer.Typer) -> None:
    """Add the ``report`` subcommand to ``app``."""

    @app.command("report", help=_HELP)
    def report_command(
        evaluation: Annotated[
            Path,
            typer.Option(
                "--evaluation",
                help="Folder that `ecomrl evaluate --out` wrote (holds ope.json), or the "
                "ope.json file itself.",
            ),
        ],
        out: Annotated[
            Path,
            typer.Option(
                "--out", help="Folder for report.html, report.md and report.json (created)."
            ),
        ],
        data: Annotated[
            Path | None,
            typer.Option(
                "--data",
                help="ETL output folder (transitions/ and _manifest.json): rows, quarantine "
                "reasons, episode and reward summaries, drift of the last day. Default: the "
                "data folder recorded in ope.json, when it exists.",
            ),
        ] = None,
        artifact: Annotated[
            Path | None,
            typer.Option(
                "--artifact",
                help="Training artifact folder of the candidate, for its loss curves.",
            ),
        ] = None,
        candidate: Annotated[
            str | None,
            typer.Option(
                "--candidate",
                help="Which evaluated candidate the verdict is about (default: the "
                "evaluation's primary candidate).",
            ),
        ] = None,
        date: Annotated[
            str | None,
            typer.Option(
                "--date",
                help="Day (YYYY-MM-DD) whose state features are checked for drift against the "
                "earlier days of --data. Default: the last day in the data.",
            ),
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option("--config", help="TOML config file (validated; report needs no keys)."),
        ] = None,
        overrides: Overrides = None,
    ) -> None:
        """Write the policy-approval report of an evaluation and print its verdict."""
        from evaluation.report import render_report
        from evaluation.report.errors import ReportError
        from evaluation.report.inputs import report_inputs_from_run
        from evaluation.report.sources import read_json

        load_config(config, overrides or ())
        ope_path = evaluation / "ope.json" if evaluation.is_dir() else evaluation
        if not ope_path.is_file():
            raise ReportError(
                f"no ope.json at {ope_path}: pass the folder `ecomrl evaluate --out` wrote"
            )
        data_dir = data
        if data_dir is None:
            recorded = read_json(ope_path, "evaluation result (ope.json)")
            guess = recorded.get("data") if isinstance(recorded, dict) else None
            if isinstance(guess, str) and (Path(guess) / "_manifest.json").is_file():
                data_dir = Path(guess)
        if data_dir is not None and not (data_dir / "_manifest.json").is_file():
            raise ReportError(f"no _manifest.json in the data folder {data_dir}")
        inputs = report_inputs_from_run(
            ope_path,
            data_dir / "_manifest.json" if data_dir is not None else None,
            artifact,
            data_dir=data_dir,
            candidate=candidate,
            current_date=date,
        )
        paths = render_report(inputs, out)
        emit_result(
            "report.result",
            f"{paths.html}\n{inputs.verdict.decision}: {inputs.verdict.sentence}",
            html=str(paths.html),
            verdict=inputs.verdict.decision,
            sentence=inputs.verdict.sentence,
        )
