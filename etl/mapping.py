"""Applying a source's column mapping: CSV options, derived columns, renames, time formats.

:func:`etl.io.scan_table` reads one file through these steps, in the order of
:class:`etl.config.TableMapping`: :func:`scan_source` (Parquet, CSV with the mapping's separator,
header and column names, or whitespace-separated text), :func:`apply_mapping` (``derive``,
``event_id_from``, ``rename``, ``constant``), then per timestamp column :func:`time_expr`
(``parse_time`` formats, epoch units, ISO strings) and :func:`check_times`. Every mistake in
the mapping is an :class:`EtlError` naming the file, the mapping key and the expression
(:class:`Where`), never a polars traceback.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from etl.config import CsvOptions, TableMapping
from etl.errors import EtlError
from etl.schema import ROW_NR, UTC

# what reading a file may raise when its bytes are bad (polars panics are BaseExceptions)
READ_ERRORS: tuple[type[BaseException], ...] = (
    pl.exceptions.PolarsError,
    pl.exceptions.PanicException,
    pa.ArrowException,
    OSError,
    UnicodeDecodeError,
)
# what planning or evaluating a mapping expression may raise
_EXPR_ERRORS: tuple[type[BaseException], ...] = (
    pl.exceptions.PolarsError,
    pl.exceptions.PanicException,
    ValueError,
    TypeError,
)
TIME_COLUMNS = {"events": ("event_ts", "ingest_ts"), "orders": ("order_ts", "ingest_ts")}
_EPOCH_UNITS = {"epoch_s": "s", "epoch_ms": "ms", "epoch_us": "us", "epoch_ns": "ns"}
_TS_FORMAT = "%Y-%m-%d %H:%M:%S%.f%:z"
_NAIVE_FORMAT = "%Y-%m-%d %H:%M:%S%.f"
_ZONE_CODES = ("%z", "%:z", "%::z", "%#z", "%Z")
_TIME_CODES = ("%H", "%I", "%k", "%l", "%M", "%S", "%T", "%R", "%X", "%r", "%c", "%s", "%f")
_SAMPLE_ROWS = 1000  # rows a derived expression is tried on before the run


@dataclass(frozen=True)
class Where:
    """Where a mapping applies: the file, its table and the mapping's name (for messages)."""

    relpath: str
    table: str
    mapping: str = "raw"

    def key(self, section: str, name: str) -> str:
        """``[etl.mapping.orders.derive] unit_price`` (and the shipped mapping's name)."""
        shipped = f" (mapping '{self.mapping}')" if self.mapping != "raw" else ""
        return f"[etl.mapping.{self.table}.{section}] {name}{shipped}"


def short(exc: BaseException) -> str:
    """An exception's first line (polars appends long hints), at most 300 characters."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first[:300]


# ----------------------------------------------------------------------------- reading
def scan_source(path: Path, csv: CsvOptions, relpath: str) -> pl.LazyFrame:
    """One file as a lazy frame of its source columns (Parquet, or text read as CSV with
    ``csv``)."""
    if path.suffix == ".parquet":
        return pl.scan_parquet(path)
    if csv.separator == "whitespace":
        return _scan_whitespace(path, csv, relpath)
    separator = "\t" if csv.separator == "tab" else csv.separator
    return pl.scan_csv(
        path,
        separator=separator,
        has_header=csv.has_header,
        new_columns=csv.columns,
        infer_schema_length=10_000,
    )


def _scan_whitespace(path: Path, csv: CsvOptions, relpath: str) -> pl.LazyFrame:
    """A text file whose fields are separated by runs of blanks (no quoting), blank lines
    skipped; each column typed Int64 when every value is an integer, else Float64 when every
    value is a number, else String (and numbers written with leading zeros, ids such as
    00001, stay strings)."""
    lines = (
        pl.scan_csv(
            path, has_header=False, separator="\x1f", quote_char=None, schema={"_line": pl.String}
        )
        .select(pl.col("_line").str.strip_chars())
        .filter(pl.col("_line").str.len_bytes() > 0)
    )
    names = csv.columns
    if csv.has_header:
        try:
            first = lines.head(1).collect()
        except READ_ERRORS as exc:
            raise EtlError(f"{relpath}: cannot read: {short(exc)}") from exc
        header = first["_line"][0].split() if first.height else []
        names = names or header
        lines = lines.slice(1)
    assert names is not None  # CsvOptions requires columns without a header
    fields = pl.col("_line").str.extract_all(r"\S+")
    raw = lines.select(
        *(fields.list.get(i, null_on_oob=True).alias(n) for i, n in enumerate(names)),
        fields.list.len().alias("_n_fields"),
    ).with_row_index("_i", offset=1)
    return raw.select(_typed(raw, names, relpath))


def _typed(raw: pl.LazyFrame, names: list[str], relpath: str) -> list[pl.Expr]:
    """The columns of a whitespace file cast to the narrowest type all their values fit;
    EtlError naming the first row whose number of fields differs from the columns."""

    def fails(name: str, dtype: pl.DataType) -> pl.Expr:
        c = pl.col(name)
        return (c.is_not_null() & c.cast(dtype, strict=False).is_null()).any()

    wrong = pl.col("_n_fields") != len(names)
    probe = raw.select(
        pl.col("_i").filter(wrong).first().alias("_row"),
        pl.col("_n_fields").filter(wrong).first().alias("_got"),
        *(pl.col(n).str.contains(r"^[-+]?0\d").any().alias(f"zero:{n}") for n in names),
        *(fails(n, pl.Int64()).alias(f"int:{n}") for n in names),
        *(fails(n, pl.Float64()).alias(f"float:{n}") for n in names),
    )
    try:
        found = probe.collect().row(0, named=True)
    except READ_ERRORS as exc:
        raise EtlError(f"{relpath}: cannot read: {short(exc)}") from exc
    if found["_row"] is not None:
        raise EtlError(
            f"{relpath}: row {found['_row']} has {found['_got']} fields, expected "
            f"{len(names)} ({', '.join(names)}; [etl.mapping] csv.separator = 'whitespace')"
        )
    out: list[pl.Expr] = []
    for n in names:
        dtype = (
            pl.String()
            if found[f"float:{n}"] or found[f"zero:{n}"]
            else (pl.Float64() if found[f"int:{n}"] else pl.Int64())
        )
        out.append(pl.col(n).cast(dtype, strict=False))
    return out


# ----------------------------------------------------------------------------- the mapping
def apply_mapping(lf: pl.LazyFrame, tmap: TableMapping, where: Where) -> pl.LazyFrame:
    """``derive``, ``event_id_from``, ``rename`` and ``constant`` applied to one file."""
    schema = _schema(lf, where)
    if tmap.derive:
        lf = lf.with_columns(_derived(lf, tmap.derive, where))
        schema = _schema(lf, where)
    if tmap.event_id_from:
        missing = [c for c in tmap.event_id_from if c not in schema]
        if missing:
            raise EtlError(f"{where.relpath}: missing column '{missing[0]}' (event_id_from)")
        lf = lf.with_columns(
            pl.concat_str(
                [pl.col(c).cast(pl.String).fill_null("") for c in tmap.event_id_from], separator="|"
            ).alias("__event_id")
        )
    renames = _renames(tmap, schema, where)
    if renames:
        lf = lf.rename(renames)
    if tmap.event_id_from:
        lf = lf.rename({"__event_id": "event_id"})
    if tmap.constant:
        lf = lf.with_columns(pl.lit(v).alias(k) for k, v in tmap.constant.items())
    return lf


def _schema(lf: pl.LazyFrame, where: Where) -> pl.Schema:
    try:
        return lf.collect_schema()
    except READ_ERRORS as exc:  # unreadable file: polars raises its own error types
        raise EtlError(f"{where.relpath}: cannot read: {short(exc)}") from exc


def _derived(lf: pl.LazyFrame, derive: dict[str, str], where: Where) -> list[pl.Expr]:
    """The ``derive`` expressions, each parsed, planned on the file's columns and tried on its
    first rows, so that a mistake names its key and expression before the run."""
    out: list[pl.Expr] = []
    for name, sql in derive.items():
        key = f'{where.key("derive", name)} = "{sql}"'
        try:
            expr = pl.sql_expr(sql).alias(name)
        except _EXPR_ERRORS as exc:
            raise EtlError(
                f"{where.relpath}: {key}: not a valid SQL expression: {short(exc)}"
            ) from exc
        try:
            lf.select(expr).collect_schema()
        except _EXPR_ERRORS as exc:
            raise EtlError(f"{where.relpath}: {key}: {short(exc)}") from exc
        try:
            lf.head(_SAMPLE_ROWS).select(expr).collect()
        except _EXPR_ERRORS as exc:
            raise EtlError(
                f"{where.relpath}: {key}: fails on the file's first rows: {short(exc)}"
            ) from exc
        out.append(expr)
    return out


def _renames(tmap: TableMapping, schema: pl.Schema, where: Where) -> dict[str, str]:
    """The renames that apply to this file (sources it has); EtlError when two land on the
    same name or one lands on a column the file keeps."""
    renames = {src: dst for src, dst in tmap.rename.items() if src in schema and src != dst}
    kept = set(schema.names()) - set(renames)
    if tmap.event_id_from:
        kept.add("event_id")
    seen: dict[str, str] = {}
    for src, dst in renames.items():
        key = f"{where.key('rename', src)} = '{dst}'"
        if dst in seen:
            raise EtlError(f"{where.relpath}: {key}: '{seen[dst]}' is renamed to '{dst}' too")
        if dst in kept:
            what = (
                "event_id_from builds"
                if dst == "event_id" and tmap.event_id_from
                else "the file (or derive) already has"
            )
            raise EtlError(
                f"{where.relpath}: {key}: {what} a column '{dst}'; rename that one away or map "
                "only one of them"
            )
        seen[dst] = src
    return renames


def cast_expr(
    lf: pl.LazyFrame, col: str, dtype_name: str, table_ts: tuple[str, ...], where: Where
) -> pl.Expr:
    """``cast`` of one column (our name) to a polars type by name (not of timestamps: their
    formats are ``parse_time``'s)."""
    key = f"{where.key('cast', col)} = '{dtype_name}'"
    if col in table_ts:
        raise EtlError(
            f"{where.relpath}: {key}: timestamps are not cast; give their format "
            f"with [etl.mapping.{where.table}.parse_time] {col} = 'yyyymmdd' "
            "(or 'epoch_s', 'epoch_ms', 'iso', a strftime pattern such as "
            "'%d/%m/%Y')"
        )
    dtype = getattr(pl, dtype_name, None)
    out = dtype() if isinstance(dtype, type) else dtype
    if not isinstance(out, pl.DataType) or dtype_name.startswith("_"):
        raise EtlError(
            f"{where.relpath}: {key}: unknown type (polars type names: String, "
            "Int64, Int32, Float64, Boolean)"
        )
    expr = pl.col(col).cast(out, strict=False)
    try:
        lf.select(expr).collect_schema()
    except _EXPR_ERRORS as exc:
        raise EtlError(f"{where.relpath}: {key}: {short(exc)}") from exc
    return expr


# ----------------------------------------------------------------------------- times
@dataclass(frozen=True)
class TimeCheck:
    """A timestamp column read through a format: its source values and the parsed ones."""

    col: str
    parsed: pl.Expr
    naive: pl.Expr
    what: str


def time_expr(
    col: str, dtype: pl.DataType, tmap: TableMapping, where: Where
) -> tuple[pl.Expr, pl.Expr, TimeCheck | None]:
    """(timestamp in UTC microseconds, "had no time zone" flag, the check it needs) for one
    timestamp column: its ``parse_time`` format, else its type (native datetimes and dates,
    epoch numbers in ``time_unit``, ISO strings)."""
    fmt = tmap.parse_time.get(col)
    if fmt is None and isinstance(dtype, pl.Datetime | pl.Date):
        parsed, naive = _native(pl.col(col), dtype, tmap)
        return parsed, naive, None
    if fmt is None and (dtype.is_integer() or dtype.is_float()):
        if tmap.time_unit is None:
            raise EtlError(
                f"{where.relpath}: column '{col}' holds numbers, which are not read as times "
                f"without a format (a date such as 19970101 is not epoch microseconds): set "
                f"[etl.mapping.{where.table}.parse_time] {col} = 'yyyymmdd' (or 'epoch_s', "
                "'epoch_ms', 'epoch_us', 'epoch_ns'), see docs/mapping.md"
            )
        fmt = f"epoch_{tmap.time_unit}"
    fmt = fmt or "iso"
    what = "a timestamp" if fmt == "iso" else f"{fmt!r} ({where.key('parse_time', col)})"
    parsed, naive = _formatted(pl.col(col), dtype, fmt, tmap)
    return parsed, naive, TimeCheck(col, parsed, naive, what)


def _utc(naive: pl.Expr, tmap: TableMapping) -> pl.Expr:
    """A naive datetime taken in ``naive_timezone`` (UTC when unset), as UTC microseconds."""
    zone = tmap.naive_timezone or UTC
    return naive.dt.cast_time_unit("us").dt.replace_time_zone(zone).dt.convert_time_zone(UTC)


def _native(c: pl.Expr, dtype: pl.DataType, tmap: TableMapping) -> tuple[pl.Expr, pl.Expr]:
    false = pl.lit(False)
    if isinstance(dtype, pl.Date):
        return c.cast(pl.Datetime("us")).dt.replace_time_zone(UTC), false
    assert isinstance(dtype, pl.Datetime)
    if dtype.time_zone is not None:
        return c.dt.convert_time_zone(UTC).dt.cast_time_unit("us"), false
    if tmap.naive_timezone is not None:
        return _utc(c, tmap), false
    return c.dt.cast_time_unit("us").dt.replace_time_zone(UTC), c.is_not_null()


def _formatted(
    c: pl.Expr, dtype: pl.DataType, fmt: str, tmap: TableMapping
) -> tuple[pl.Expr, pl.Expr]:
    false = pl.lit(False)
    if fmt in _EPOCH_UNITS:
        unit = _EPOCH_UNITS[fmt]
        num = (
            c
            if dtype.is_numeric()
            else c.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        )
        micros = (
            num // 1_000
            if unit == "ns"
            else (num.cast(pl.Float64) * {"s": 1_000_000, "ms": 1_000, "us": 1}[unit]).round(0)
        )
        return micros.cast(pl.Int64, strict=False).cast(pl.Datetime("us")).dt.replace_time_zone(
            UTC
        ), false
    text = c.cast(pl.String).str.strip_chars()
    if fmt == "yyyymmdd":
        return _utc(text.str.to_date("%Y%m%d", strict=False).cast(pl.Datetime("us")), tmap), false
    if fmt == "iso":
        return _iso(text, c, tmap)
    if any(code in fmt for code in _ZONE_CODES):
        return text.str.to_datetime(fmt, time_unit="us", time_zone=UTC, strict=False), false
    if not any(code in fmt for code in _TIME_CODES):  # a day: midnight, no zone to lose
        return _utc(text.str.to_date(fmt, strict=False).cast(pl.Datetime("us")), tmap), false
    naive = text.str.to_datetime(fmt, time_unit="us", strict=False)
    if tmap.naive_timezone is not None:
        return _utc(naive, tmap), false
    return naive.dt.replace_time_zone(UTC), naive.is_not_null()


def _iso(text: pl.Expr, c: pl.Expr, tmap: TableMapping) -> tuple[pl.Expr, pl.Expr]:
    """ISO 8601 strings: normalise "T", "Z" and "+0000", then parse with an explicit offset
    format; strings without an offset are naive."""
    text = (
        text.str.replace("T", " ", literal=True)
        .str.replace(r"(?i)\s*(Z|UTC)$", "+00:00")
        .str.replace(r"([+-]\d{2})(\d{2})$", "${1}:${2}")
    )
    has_tz = text.str.contains(r"[+-]\d{2}:\d{2}$")
    aware = text.str.to_datetime(_TS_FORMAT, time_zone=UTC, strict=False)
    naive = text.str.to_datetime(_NAIVE_FORMAT, strict=False)
    if tmap.naive_timezone is not None:
        return pl.when(has_tz).then(aware).otherwise(_utc(naive, tmap)), pl.lit(False)
    out = pl.when(has_tz).then(aware).otherwise(naive.dt.replace_time_zone(UTC))
    return out, c.is_not_null() & ~has_tz & naive.is_not_null()


def check_times(lf: pl.LazyFrame, checks: list[TimeCheck], where: Where, min_date: dt.date) -> None:
    """EtlError naming the column, row and value when a non-null source value does not parse
    through its format, or when a parsed time (of a row with a time zone) is before
    ``min_date`` (``[etl] min_date``): usually a wrong format or unit."""
    if not checks:
        return
    floor = dt.datetime.combine(min_date, dt.time(), tzinfo=dt.UTC)
    aggs: list[pl.Expr] = []
    for i, chk in enumerate(checks):
        src = pl.col(chk.col)
        bad = src.is_not_null() & chk.parsed.is_null()
        early = (chk.parsed < pl.lit(floor)) & ~chk.naive
        aggs += [
            pl.col(ROW_NR).filter(bad).first().alias(f"bad_row{i}"),
            src.cast(pl.String).filter(bad).first().alias(f"bad_val{i}"),
            pl.col(ROW_NR).filter(early).first().alias(f"early_row{i}"),
            src.cast(pl.String).filter(early).first().alias(f"early_val{i}"),
            chk.parsed.filter(early).first().alias(f"early_ts{i}"),
        ]
    try:
        found = lf.select(aggs).collect().row(0, named=True)
    except READ_ERRORS as exc:
        raise EtlError(f"{where.relpath}: cannot read: {short(exc)}") from exc
    for i, chk in enumerate(checks):
        if found[f"bad_row{i}"] is not None:
            raise EtlError(
                f"{where.relpath}: column '{chk.col}': cannot parse "
                f"{found[f'bad_val{i}']!r} (row {found[f'bad_row{i}']}) as {chk.what}"
            )
        if found[f"early_row{i}"] is not None:
            ts = found[f"early_ts{i}"]
            raise EtlError(
                f"{where.relpath}: column '{chk.col}': {found[f'early_val{i}']!r} (row "
                f"{found[f'early_row{i}']}) reads as {ts:%Y-%m-%d %H:%M:%S} UTC through "
                f"{chk.what}, before [etl] min_date = {min_date.isoformat()}: a wrong "
                f"format or unit? Set [etl.mapping.{where.table}.parse_time] {chk.col} "
                "(yyyymmdd, epoch_s, epoch_ms, ... or a strftime pattern), or lower min_date "
                "for older data"
            )
