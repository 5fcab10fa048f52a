"""Reading raw logs: discover date partitions, apply the column mapping, check and cast types.

Every reader here is lazy (``scan_parquet`` / ``scan_csv``); the frames it returns carry three
extra columns that the rest of the ETL uses for accounting: ``_source_file`` (path relative to the
input root), ``_row_nr`` (1-based data row within that file) and ``_part_date`` (the date of the
partition folder, the UTC date of arrival). Column-level problems (a missing required column, a
column whose values do not parse as its type) raise :class:`EtlError` naming the file and column;
row-level problems are left for :mod:`etl.validate` to quarantine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import polars as pl

from etl.config import ColumnMapping, EtlConfig, TableMapping
from etl.errors import EtlError
from etl.mapping import (
    READ_ERRORS,
    TIME_COLUMNS,
    TimeCheck,
    Where,
    apply_mapping,
    cast_expr,
    check_times,
    scan_source,
    short,
    time_expr,
)
from etl.schema import (
    EVENT_COLUMNS,
    EVENT_REQUIRED,
    IDENTITY_COLUMNS,
    NAIVE_TS,
    ORDER_COLUMNS,
    ORDER_REQUIRED,
    PART_DATE,
    ROW_NR,
    SOURCE_FILE,
    TS,
)
from etl.source import source_columns, with_decision_events

Table = Literal["events", "orders"]
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_SUFFIXES = (".parquet", ".csv", ".tsv", ".txt")  # all but Parquet: text, read as CSV


@dataclass(frozen=True)
class InputFile:
    """One raw input file and the partition it belongs to."""

    path: Path
    relpath: str
    table: Table
    part_date: dt.date | None


def shipped_mapping(name: str) -> ColumnMapping:
    """Load one of the column mappings shipped in ``etl/mappings`` (ga4, snowplow, retailrocket)."""
    try:
        text = resources.files("etl.mappings").joinpath(f"{name}.toml").read_text("utf-8")
    except FileNotFoundError as exc:
        raise EtlError(
            f"unknown mapping '{name}': shipped ones are ga4, snowplow, retailrocket"
        ) from exc
    return ColumnMapping.model_validate(tomllib.loads(text))


def resolve_mapping(config: EtlConfig) -> ColumnMapping:
    """The column mapping a config asks for (inline, shipped by name, or the identity), with
    ``[etl.decisions]`` applied (:func:`etl.source.with_decision_events`)."""
    if config.mapping is not None:
        return with_decision_events(config.mapping, config)
    if config.mapping_name is not None:
        return with_decision_events(shipped_mapping(config.mapping_name), config)
    return with_decision_events(ColumnMapping(), config)


def discover(input_root: Path | str) -> list[InputFile]:
    """List the input files under ``<root>/{events,orders}/[date=YYYY-MM-DD/]*.{parquet,csv,tsv,
    txt}`` (one of the two folders may be absent)."""
    root = Path(input_root)
    if not root.is_dir():
        raise EtlError(f"input folder not found: {root}")
    found: list[InputFile] = []
    tables: tuple[Table, Table] = ("events", "orders")
    if not any((root / table).is_dir() for table in tables):
        raise EtlError(f"{root}: no 'events' or 'orders' folder (expected "
                       "events/date=YYYY-MM-DD/... and orders/date=YYYY-MM-DD/...)")
    for table in tables:
        base = root / table
        if not base.is_dir():  # clickstream-only (RetailRocket events.csv) or orders-only
            continue
        for path in sorted(base.rglob("*")):
            if path.suffix not in _SUFFIXES or not path.is_file() or path.name.startswith("."):
                continue
            relpath = path.relative_to(root).as_posix()
            part: dt.date | None = None
            for parent in path.relative_to(base).parents:
                if parent.name.startswith("date="):
                    part = _part_date(parent.name, relpath)
            found.append(InputFile(path, relpath, table, part))
        if base.is_dir() and not any(f.table == table for f in found):
            raise EtlError(f"{base}: no Parquet or CSV files (.parquet, .csv, .tsv, .txt)")
    return found


def _part_date(folder: str, relpath: str) -> dt.date:
    """The date of a ``date=YYYY-MM-DD`` partition folder (EtlError naming it when invalid)."""
    match = _DATE_DIR.match(folder)
    try:
        if match is None:
            raise ValueError(folder)
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        raise EtlError(
            f"{relpath}: partition folder '{folder}' is not a valid date=YYYY-MM-DD"
        ) from None


def sha256(path: Path) -> str:
    """The file's SHA-256 (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_ts(col: str, dtype: pl.DataType, mapping: TableMapping) -> tuple[pl.Expr, pl.Expr]:
    """(timestamp in UTC microseconds, "had no time zone" flag) for one column of an in-memory
    frame in the raw-log schema (:func:`etl.core.normalize_frame`): native datetimes, ISO
    strings, integers as epoch values in ``time_unit`` (microseconds when unset)."""
    if dtype.is_integer() or dtype.is_float():
        mapping = mapping.model_copy(update={"time_unit": mapping.time_unit or "us"})
    parsed, naive, _ = time_expr(col, dtype, mapping, Where("", "events"))
    return parsed, naive


def _check_castable(lf: pl.LazyFrame, col: str, expr: pl.Expr, relpath: str, what: str) -> None:
    """Raise EtlError when non-null values of ``col`` do not parse through ``expr``."""
    query = (
        lf.select(pl.col(col).alias("_orig"), expr.alias("_parsed"), pl.col(ROW_NR))
        .filter(pl.col("_orig").is_not_null() & pl.col("_parsed").is_null())
        .head(1)
    )
    try:
        bad = query.collect()
    except READ_ERRORS as exc:
        raise EtlError(f"{relpath}: column '{col}': cannot read: {_short(exc)}") from exc
    if bad.height:
        sample = bad["_orig"][0]
        raise EtlError(f"{relpath}: column '{col}': cannot parse {sample!r} (row "
                       f"{bad[ROW_NR][0]}) as {what}")


def _mapped(file: InputFile, tmap: TableMapping, where: Where) -> pl.LazyFrame:
    """One file read with the mapping's CSV options, row-numbered, ``derive`` / ``rename`` /
    ``constant`` applied (:func:`etl.mapping.apply_mapping`)."""
    lf = scan_source(file.path, tmap.csv, file.relpath).with_row_index(ROW_NR, offset=1)
    lf = lf.with_columns(pl.col(ROW_NR).cast(pl.Int64))
    return apply_mapping(lf, tmap, where)


def scan_table(
    file: InputFile,
    config: EtlConfig,
    *,
    continuous: bool,
    mapping: ColumnMapping | None = None,
) -> pl.LazyFrame:
    """One raw file as a lazy frame in the canonical raw-log schema plus the source columns."""
    mapping = mapping if mapping is not None else resolve_mapping(config)
    tmap = mapping.events if file.table == "events" else mapping.orders
    where = Where(file.relpath, file.table, mapping.name)
    lf = _mapped(file, tmap, where)
    schema = lf.collect_schema()
    _check_columns(schema, file, tmap)
    lf, exprs, naive_flags = _canonical(lf, schema, file, tmap, config, where)
    if file.table == "events":
        exprs.append(_action_expr(schema, continuous, lf, file.relpath))
        for ctx, dtype in source_columns(config).items():  # context and source features
            exprs.append(
                pl.col(ctx).cast(dtype).alias(ctx)
                if ctx in schema
                else pl.lit(None, dtype=dtype).alias(ctx)
            )
        if tmap.event_type_map or tmap.event_type_default:
            exprs = [_remap(e, "event_type", tmap.event_type_map, tmap.event_type_default)
                     for e in exprs]
    elif tmap.status_map:
        exprs = [_remap(e, "status", tmap.status_map) for e in exprs]
    naive_any = pl.any_horizontal(naive_flags) if naive_flags else pl.lit(False)
    return lf.select(
        *exprs,
        naive_any.fill_null(False).alias(NAIVE_TS),
        pl.lit(file.relpath).alias(SOURCE_FILE),
        pl.col(ROW_NR),
        pl.lit(file.part_date, dtype=pl.Date).alias(PART_DATE),
    ).with_columns(
        pl.coalesce(
            PART_DATE,
            pl.col("ingest_ts").dt.date(),
            pl.col("event_ts" if file.table == "events" else "order_ts").dt.date(),
        ).alias(PART_DATE)
    )


def _check_columns(schema: pl.Schema, file: InputFile, tmap: TableMapping) -> None:
    """The contract's required and identity columns are there, and every ``parse_time`` key is
    a timestamp column the file has (after the mapping)."""
    required = EVENT_REQUIRED if file.table == "events" else ORDER_REQUIRED
    for col in required:
        if col not in schema:
            raise EtlError(f"{file.relpath}: missing required column '{col}'")
    if not any(col in schema for col in IDENTITY_COLUMNS):
        raise EtlError(
            f"{file.relpath}: no identity column: needs one of user_id, anonymous_id, session_id"
        )
    times = TIME_COLUMNS[file.table]
    for col, fmt in tmap.parse_time.items():
        key = f"[etl.mapping.{file.table}.parse_time] {col} = '{fmt}'"
        if col not in times:
            raise EtlError(f"{file.relpath}: {key}: not a timestamp column of {file.table} "
                           f"({', '.join(times)}; other columns: derive)")
        if col not in schema:
            raise EtlError(f"{file.relpath}: {key}: the file has no column '{col}' (after "
                           "rename and derive)")


def _canonical(
    lf: pl.LazyFrame, schema: pl.Schema, file: InputFile, tmap: TableMapping,
    config: EtlConfig, where: Where,
) -> tuple[pl.LazyFrame, list[pl.Expr], list[pl.Expr]]:
    """The contract's columns in their types (``cast`` first, timestamps through their
    formats, checked), the frame they read from and the "had no time zone" flags."""
    columns = EVENT_COLUMNS if file.table == "events" else ORDER_COLUMNS
    times = TIME_COLUMNS[file.table]
    casts = {col: cast_expr(lf, col, name, times, where) for col, name in tmap.cast.items()
             if col in schema}
    for col, expr in casts.items():
        if tmap.cast[col] != "String":  # anything casts to a string
            _check_castable(lf, col, expr, file.relpath,
                            f"{tmap.cast[col]} ([etl.mapping.{file.table}.cast] {col})")
    if casts:
        lf = lf.with_columns(expr.alias(col) for col, expr in casts.items())
        schema = lf.collect_schema()
    exprs: list[pl.Expr] = []
    naive_flags: list[pl.Expr] = []
    checks: list[TimeCheck] = []
    for col, target in columns.items():
        if col not in schema:
            exprs.append(pl.lit(None, dtype=target).alias(col))
            continue
        src = schema[col]
        if target == TS:
            parsed, naive, check = time_expr(col, src, tmap, where)
            checks += [check] if check is not None else []
            exprs.append(parsed.alias(col))
            naive_flags.append(naive)
        elif src != target:
            cast = pl.col(col).cast(target, strict=False)
            if src == pl.String or (target.is_integer() and src.is_float()):
                _check_castable(lf, col, cast, file.relpath, str(target))
            exprs.append(cast.alias(col))
        else:
            exprs.append(pl.col(col))
    check_times(lf, checks, where, config.min_date)
    return lf, exprs, naive_flags


def _remap(expr: pl.Expr, name: str, table: dict[str, str], default: str | None = None
           ) -> pl.Expr:
    if expr.meta.output_name() != name:
        return expr
    if default is None:
        return expr.replace(table).alias(name)
    return expr.replace_strict(table, default=default, return_dtype=pl.String).alias(name)


def _action_expr(
    schema: pl.Schema, continuous: bool, lf: pl.LazyFrame, relpath: str
) -> pl.Expr:
    if "action" not in schema:
        return pl.lit(None, dtype=pl.Float64 if continuous else pl.String).alias("action")
    src = schema["action"]
    if continuous:
        if src == pl.String:
            _check_castable(lf, "action", pl.col("action").cast(pl.Float64, strict=False),
                            relpath, "a continuous action (float)")
        return pl.col("action").cast(pl.Float64, strict=False).alias("action")
    return pl.col("action").cast(pl.String).alias("action")


def action_is_continuous(files: list[InputFile], config: EtlConfig) -> bool:
    """The action space: from the config, or (``auto``) from the type of the action column
    (after the mapping's CSV options, ``derive`` and ``rename``)."""
    if config.action_space != "auto":
        return config.action_space == "continuous"
    mapping = resolve_mapping(config)
    for file in files:
        if file.table != "events":
            continue
        where = Where(file.relpath, file.table, mapping.name)
        schema = _mapped(file, mapping.events, where).collect_schema()
        if "action" in schema:
            return bool(schema["action"].is_float())
    return False


_short = short


def unreadable_file(files: Sequence[InputFile], config: EtlConfig, *, continuous: bool
                    ) -> EtlError | None:
    """After a read of many files failed: the first file that fails to load
    alone (every column, every row), as an :class:`EtlError` naming it and the column when one
    column alone fails; None when each file loads (the error was not the input's)."""
    mapping = resolve_mapping(config)
    for file in files:
        try:
            lf = scan_table(file, config, continuous=continuous, mapping=mapping)
        except EtlError as exc:
            return exc
        except READ_ERRORS as exc:
            return EtlError(f"{file.relpath}: cannot read: {_short(exc)}")
        try:
            lf.collect()
        except READ_ERRORS as exc:
            return EtlError(f"{file.relpath}: cannot read{_bad_column(lf)}: {_short(exc)}")
    return None


def _bad_column(lf: pl.LazyFrame) -> str:
    """`` (column 'x')`` for the first column that fails to load alone, else ''."""
    try:
        names = lf.collect_schema().names()
        for col in names:
            try:
                lf.select(col).collect()
            except READ_ERRORS:
                return f" (column '{col}')"
    except READ_ERRORS:
        pass
    return ""


def read_tables(
    files: list[InputFile], config: EtlConfig, *, continuous: bool
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """All events and all orders as two lazy frames (canonical schema plus source columns)."""
    events, orders = scan_pieces(files, config, continuous=continuous)
    return _concat(events, "events", continuous, config), _concat(orders, "orders", continuous,
                                                                   config)


def scan_pieces(
    files: list[InputFile], config: EtlConfig, *, continuous: bool
) -> tuple[list[pl.LazyFrame], list[pl.LazyFrame]]:
    """One lazy frame per events file and per orders file (as :func:`scan_table`), in order.

    For passes that read one file at a time, so that memory follows the largest file rather than
    the input (polars' multi-file streaming scans read many files at once).
    """
    mapping = resolve_mapping(config)
    events = [scan_table(f, config, continuous=continuous, mapping=mapping)
              for f in files if f.table == "events"]
    orders = [scan_table(f, config, continuous=continuous, mapping=mapping)
              for f in files if f.table == "orders"]
    return events, orders


def empty_table(table: Table, config: EtlConfig, *, continuous: bool) -> pl.LazyFrame:
    """A table without rows, in the schema :func:`scan_table` yields."""
    return _concat([], table, continuous, config)


def _concat(frames: list[pl.LazyFrame], table: Table, continuous: bool,
            config: EtlConfig) -> pl.LazyFrame:
    if frames:
        return pl.concat(frames, how="vertical")
    columns = dict(EVENT_COLUMNS if table == "events" else ORDER_COLUMNS)
    if table == "events":
        columns["action"] = pl.Float64() if continuous else pl.String()
        columns.update(source_columns(config))
    columns.update({NAIVE_TS: pl.Boolean(), SOURCE_FILE: pl.String(), ROW_NR: pl.Int64(),
                    PART_DATE: pl.Date()})
    return pl.LazyFrame(schema=columns)


@contextmanager
def input_errors(files: Sequence[InputFile], config: EtlConfig, *, continuous: bool
                 ) -> Iterator[None]:
    """Turn a read error of a multi-file query into an :class:`EtlError` naming the file (and
    the column where one column alone fails) that causes it."""
    try:
        yield
    except EtlError:
        raise
    except READ_ERRORS as exc:
        named = unreadable_file(files, config, continuous=continuous)
        if named is None:
            raise
        raise named from exc


def run_date_end_us(as_of: dt.date) -> int:
    """The end of a run date (midnight after it, UTC) in epoch microseconds."""
    end = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return (end - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def run_date(as_of: dt.date | str | None) -> dt.date:
    """The run date: ``as_of``, else today (UTC): nothing can have happened after it."""
    if as_of is None:
        return dt.datetime.now(dt.UTC).date()
    return dt.date.fromisoformat(as_of) if isinstance(as_of, str) else as_of


def folders_after(files: Sequence[InputFile], as_of: dt.date) -> list[str]:
    """Partition folders dated after the run date (their rows are judged by their own times;
    the folder name never moves the end of the data)."""
    return sorted({f.relpath.rsplit("/", 1)[0] for f in files
                   if f.part_date is not None and f.part_date > as_of})
