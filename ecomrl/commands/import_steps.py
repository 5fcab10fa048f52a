"""``ecomrl import``: step-level logs from other tools -> the transition dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import polars as pl
import typer

from ecomrl.commands._options import Overrides
from ecomrl.config import load_config
from etl.steps import ImportResult, import_steps, read_steps

D3RLPY_SUFFIXES = (".h5", ".hdf5", ".d3")
"""Inputs read as d3rlpy dataset files (``MDPDataset.dump``)."""


def _summary(result: ImportResult) -> str:
    counts = result.manifest["counts"]["steps"]
    quarantined = sum(counts["quarantined"].values())
    lines = [
        f"wrote {result.transitions.height} transitions "
        f"({result.transitions['episode_id'].n_unique()} episodes) to {result.out}",
        f"  steps {counts['rows_in']:>10} in = {counts['used']:>10} used "
        f"+ {quarantined:>7} quarantined",
    ]
    lines += [f"            quarantined {r}: {n}" for r, n in counts["quarantined"].items()]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add the ``import`` command to the CLI."""

    @app.command("import")
    def import_command(
        input_path: Annotated[
            Path,
            typer.Option(
                "--input",
                help="Step-level logs: a Parquet file or folder, a CSV file, or a d3rlpy "
                f"dataset file ({', '.join(D3RLPY_SUFFIXES)}).",
            ),
        ],
        out: Annotated[
            Path, typer.Option("--out", help="Where to write transitions/ and _manifest.json.")
        ],
        config: Annotated[
            Path | None,
            typer.Option("--config", help="ecomrl TOML config (its [steps] table)."),
        ] = None,
        overrides: Overrides = None,
    ) -> None:
        """Write step-level logs (episode, step, observation, action, reward, terminal, ...) as
        a transition dataset that `ecomrl train` and `ecomrl evaluate` read unchanged. Episodes
        with a bad row are quarantined whole, with the reason and column of each bad row."""
        cfg = load_config(config, overrides or ()).steps
        steps = _read(input_path)
        result = import_steps(steps, out, cfg, source=str(input_path))
        typer.echo(_summary(result))


def _read(path: Path) -> pl.DataFrame:
    if path.suffix.lower() in D3RLPY_SUFFIXES:
        from offline_rl.steps import read_d3rlpy  # imports d3rlpy and torch: only when needed

        return read_d3rlpy(path)
    return read_steps(path)
