"""``ecomrl etl``: raw event and order logs -> the transition dataset (Parquet + manifest)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

from ecomrl.commands._options import Overrides


def _summary(counts: dict[str, Any], n_transitions: int, out: Path) -> str:
    lines = [f"wrote {n_transitions} transitions to {out}"]
    for table, c in counts.items():
        if table == "decisions":
            for reason, n in c.get("excluded", {}).items():
                lines.append(f"  decisions excluded from transitions ({reason}): {n}")
            for column, n in c.get("unknown_context", {}).items():
                lines.append(f"  decisions with an unknown {column} (all-zero one-hot): {n}")
            continue
        q = sum(c["quarantined"].values())
        d = sum(c["dropped"].values())
        lines.append(
            f"  {table:<7} {c['rows_in']:>10} in = {c['used']:>10} used "
            f"+ {q:>7} quarantined + {d:>7} dropped"
        )
        for kind in ("quarantined", "dropped"):
            for reason, n in c[kind].items():
                share = n / c["rows_in"] if c["rows_in"] else 0.0
                lines.append(f"            {kind} {reason}: {n} ({share:.2%} of {table})")
    return "\n".join(lines)


def _parse_date(flag: str, value: str | None) -> dt.date | None:
    from etl.errors import EtlError

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise EtlError(f"{flag} must be YYYY-MM-DD, got {value!r}") from exc


def register(app: typer.Typer) -> None:
    """Add the ``etl`` command to the CLI."""

    @app.command("etl")
    def etl_command(
        input_dir: Annotated[
            Path,
            typer.Option(
                "--input",
                help="Raw logs: a folder with events/date=YYYY-MM-DD/ and orders/date=.../ "
                "(Parquet or CSV).",
            ),
        ],
        out: Annotated[
            Path,
            typer.Option("--out", help="Where to write transitions/, quarantine/ and "
                         "_manifest.json."),
        ],
        date: Annotated[
            str | None,
            typer.Option(
                "--date",
                help="Nightly mode: rebuild only decision date YYYY-MM-DD (reads the lookback "
                "and settlement window around it; replaces that day's partition atomically). "
                "Omit to backfill everything.",
            ),
        ] = None,
        as_of: Annotated[
            str | None,
            typer.Option(
                "--as-of",
                help="The run date YYYY-MM-DD (default: today, UTC): rows whose time or "
                "arrival lies after its end are quarantined as future_event, and the data "
                "ends no later. Set it when replaying history.",
            ),
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option("--config", help="ecomrl TOML config (its etl table: windows, "
                         "reward, mapping, buckets)."),
        ] = None,
        buckets: Annotated[
            str | None,
            typer.Option("--buckets", help="Process users in this many hash buckets, or 'auto' "
                         "(one per etl.events_per_bucket input rows, the default): more buckets, "
                         "less memory, same output. Overrides etl.n_buckets in the config."),
        ] = None,
        workers: Annotated[
            str | None,
            typer.Option("--workers", help="Threads of the local engine, or 'auto' (the cores, "
                         "at most 4; the default): files read and buckets transformed at the "
                         "same time, about one bucket of memory each, same output. Overrides "
                         "etl.workers."),
        ] = None,
        engine: Annotated[
            str | None,
            typer.Option("--engine", help="local (polars over user-hash buckets) or spark (the "
                         "same transform in Spark workers; needs ecomrl[spark] and Java); "
                         "overrides etl.engine."),
        ] = None,
        master: Annotated[
            str | None,
            typer.Option("--master", help="Spark master URL for --engine spark (local[N], "
                         "spark://host:7077, yarn, ...); overrides etl.spark.master."),
        ] = None,
        overrides: Overrides = None,
    ) -> None:
        """Validate, clean and attribute raw logs, build states as of each decision, and write
        the transition dataset with its manifest. Prints how every input row was accounted for
        (used, quarantined or dropped, with reasons)."""
        from ecomrl.config import load_config
        from etl.errors import EtlError
        from etl.pipeline import run_etl

        cfg = load_config(config, overrides or ()).etl
        for flag, field, value in (("--buckets", "n_buckets", buckets),
                                   ("--workers", "workers", workers)):
            if value is None:
                continue
            if value != "auto" and (not value.isdigit() or int(value) < 1):
                raise EtlError(f"{flag} must be 'auto' or a whole number >= 1, got {value!r}")
            cfg = cfg.model_copy(update={field: value if value == "auto" else int(value)})
        day = _parse_date("--date", date)
        run_day = _parse_date("--as-of", as_of)
        if engine is not None:
            if engine not in ("local", "spark"):
                raise EtlError(f"--engine must be local or spark, got {engine!r}")
            cfg = cfg.model_copy(update={"engine": engine})
        if master is not None:
            cfg = cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"master": master})})
        if cfg.engine == "spark":
            from etl.spark_engine import run_etl_spark

            result = run_etl_spark(input_dir, out, cfg, date=day, as_of=run_day, collect=False)
        else:
            result = run_etl(input_dir, out, cfg, date=day, collect=False, as_of=run_day)
        counts = result.manifest["counts_by_date"].get(day.isoformat(), {}) if day else \
            result.counts
        typer.echo(_summary(counts, result.n_transitions, out))
