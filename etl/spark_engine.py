"""The Spark engine: the same ETL transform, run inside Spark workers.

:func:`run_etl_spark` reads the raw logs with Spark, computes the global steps once (identity
map, duplicate rows, end of the data, feature scaling), repartitions the rows by the stitched
user, and runs :func:`etl.core.transform_partition` (the very polars function of the local
engine) once per whole Spark partition through ``mapInArrow``. Transitions and quarantine are
written by the workers with an explicit Arrow schema (``timestamp[us, tz=UTC]``, fixed-size
float32 observations); the driver writes ``_manifest.json`` and publishes the dataset atomically,
exactly like :func:`etl.pipeline.run_etl`. For the same input the two engines produce identical
transitions, quarantine rows and manifest (``tests/etl/test_spark_engine.py``).

The stages, each a Spark job over Arrow batches:

1. **read**: one task per group of input files runs :func:`etl.io.scan_table` (column mapping,
   types, ``_source_file`` / ``_row_nr`` / ``_part_date``), so Parquet, CSV and the shipped
   mappings load exactly as on one machine; the same task runs :func:`etl.core.global_inputs`
   on its files for the identity-link partials and the data end;
2. **global steps**: the link partials are reduced once more per anonymous id with
   :func:`etl.clean.identity_links` (its "first by time" is associative); for duplicates, Spark
   counts the event ids (order id and line) and sends only the rows of repeated ids, partitioned
   by id, to ``global_inputs``: all copies of an id meet there, so its answer is the global one;
3. **transform**: rows carry their identity link and duplicate flag (Spark joins), are
   ``repartition(n, stitched user)`` and each partition's batches are concatenated and handed to
   ``transform_partition`` once, with the partition's slice of the global inputs;
4. **scaling**: fitted on the driver from the raw feature matrix in (episode_id, step) order, as
   the local engine does (bit-identical floats); nightly runs reuse the stored scaling instead;
5. **write**: rows are repartitioned by output date and sorted; each task writes
   ``date=D/part-00000.parquet`` into a staging folder that the driver renames into place. A
   nightly run (``date=D``) collects its one day of rows and writes them with the local
   engine's writer (same bytes, same manifest merge).

pyspark is imported lazily inside functions, so ``import etl`` works without it (the optional
``[spark]`` extra).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from etl.clean import LINK_TS, LINK_USER, identity_links
from etl.config import EtlConfig, SparkConfig
from etl.core import COUNT_SCHEMA, RAW_OBS, GlobalInputs, global_inputs, transform_partition
from etl.errors import EtlError
from etl.features import FeatureSpec, Scaling
from etl.io import (
    InputFile,
    action_is_continuous,
    discover,
    folders_after,
    input_errors,
    resolve_mapping,
    run_date,
    run_date_end_us,
    scan_table,
    sha256,
)
from etl.output import (
    MANIFEST,
    apply_scaling,
    build_manifest,
    check_quarantine,
    load_scaling,
    stored_action_space,
    swap_dir,
    tally,
    totals,
    write_day,
    write_json,
)
from etl.pipeline import EtlResult, lookahead_days, lookback_days, scan_actions
from etl.schema import (
    EVENT_COLUMNS,
    NAIVE_TS,
    ORDER_COLUMNS,
    PART_DATE,
    QUARANTINE_SCHEMA,
    ROW_NR,
    SOURCE_FILE,
    TS,
    transition_schema,
)
from etl.validate import ActionSpace, action_hint, resolve_action_space

if TYPE_CHECKING:
    from polars._typing import PolarsDataType
    from pyspark.sql import DataFrame, SparkSession

log = structlog.get_logger(__name__)

INSTALL_HINT = (
    "the Spark engine needs pyspark 4 and a Java 17+ runtime: "
    "`pip install 'ecomrl[spark]'` (or `pip install 'pyspark>=4.0,<5'`) and "
    "`apt-get install -y openjdk-17-jre-headless` (in this repository: `make system-deps`)"
)

# Settings that make a local Spark start in seconds; harmless on a cluster but meant for tests.
FAST_START_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "1g",
    "spark.driver.extraJavaOptions": "-XX:+UseSerialGC -XX:TieredStopAtLevel=1",
    "spark.executor.extraJavaOptions": "-XX:+UseSerialGC -XX:TieredStopAtLevel=1",
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.codegen.wholeStage": "false",
}
# Defaults for a session the engine builds (settings.conf overrides them): the read rows are
# cached once and read by four jobs; compressing that cache cost more than it saved here.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
}
# Settings the engine relies on for exact results, always set.
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.useLargeVarTypes": "false",
}

_KIND = "_kind"
_TABLE = "_table"
_DUP = "_dup"
_DATE = "_date"
_TRANS, _QUAR, _COUNT = "transition", "quarantine", "count"
_ETL_ERROR = re.compile(r"EtlError: (.+)")


# ----------------------------------------------------------------------------- session
def check_spark_available() -> None:
    """Raise :class:`EtlError` with install instructions when pyspark or Java is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise EtlError(f"pyspark is not installed; {INSTALL_HINT}") from exc
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home) / "bin" / "java" if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        raise EtlError(f"no Java runtime found (java on PATH or JAVA_HOME); {INSTALL_HINT}")


def spark_session(settings: SparkConfig | None = None) -> SparkSession:
    """A Spark session for the ETL (the active one when there is one, e.g. under spark-submit).

    A new session gets :data:`DEFAULT_CONF`, then for local masters :data:`FAST_START_CONF`
    (when ``fast_start``) and Python workers running this interpreter, then ``settings.conf``;
    every session, the active one too, gets :data:`REQUIRED_CONF` (UTC session time zone, plain
    Arrow string and list types).
    """
    settings = settings or SparkConfig()
    check_spark_available()
    from pyspark.sql import SparkSession

    # py4j logs every connection at INFO, also from __del__ at interpreter exit
    logging.getLogger("py4j").setLevel(logging.WARNING)

    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in REQUIRED_CONF.items():
            active.conf.set(key, value)
        return active
    local = settings.master.startswith("local")
    if local:
        # workers must import etl and pyarrow: run them with the driver's interpreter
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf: dict[str, str] = dict(DEFAULT_CONF)
    if local and settings.fast_start:
        conf.update(FAST_START_CONF)
    conf.update(settings.conf)
    conf.update(REQUIRED_CONF)
    builder = SparkSession.builder.master(settings.master).appName(settings.app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    for key, value in REQUIRED_CONF.items():
        session.conf.set(key, value)
    return session


@contextmanager
def _spark_errors() -> Iterator[None]:
    """Turn an :class:`EtlError` raised inside a Spark task back into one on the driver."""
    try:
        yield
    except EtlError:
        raise
    except Exception as exc:
        match = _ETL_ERROR.search(str(exc))
        if match is None:
            raise
        raise EtlError(match.group(1).strip()) from exc


# ----------------------------------------------------------------------------- Arrow schemas
def arrow_type(dtype: PolarsDataType, *, transport: bool = False) -> pa.DataType:
    """The Arrow type of a polars type the ETL uses.

    ``transport``: the type as Spark carries it (a variable-size list for ``pl.Array``, which
    Spark has no type for); else the type written to files (``fixed_size_list``).
    """
    simple: dict[type[pl.DataType], pa.DataType] = {
        pl.String: pa.string(),
        pl.Boolean: pa.bool_(),
        pl.Int32: pa.int32(),
        pl.Int64: pa.int64(),
        pl.Float32: pa.float32(),
        pl.Float64: pa.float64(),
        pl.Date: pa.date32(),
    }
    if isinstance(dtype, type):  # a bare class such as pl.Float32 inside pl.Array
        return arrow_type(dtype(), transport=transport)
    if isinstance(dtype, pl.Datetime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(dtype, pl.Array):
        inner = arrow_type(dtype.inner, transport=transport)
        return pa.list_(inner) if transport else pa.list_(inner, dtype.size)
    if isinstance(dtype, pl.List):
        return pa.list_(arrow_type(dtype.inner, transport=transport))
    for kind, pa_type in simple.items():
        if isinstance(dtype, kind):
            return pa_type
    raise TypeError(f"no Arrow type for polars {dtype}")


def arrow_schema(schema: Mapping[str, pl.DataType], *, transport: bool = False) -> pa.Schema:
    """An explicit Arrow schema from a polars schema (see :func:`arrow_type`)."""
    return pa.schema([pa.field(n, arrow_type(t, transport=transport)) for n, t in schema.items()])


def transitions_arrow_schema(n_features: int, continuous: bool) -> pa.Schema:
    """The transition files' Arrow schema: ``timestamp[us, UTC]``, float32 observation arrays."""
    return arrow_schema(transition_schema(n_features, continuous))


def quarantine_arrow_schema() -> pa.Schema:
    """The quarantine files' Arrow schema."""
    return arrow_schema(QUARANTINE_SCHEMA)


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema, prefer_timestamp_ntz=False)


def _to_arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame`` as an Arrow table of exactly ``schema`` (missing columns become nulls)."""
    exprs = []
    for name in schema.names:
        if name in frame.columns:
            col = pl.col(name)
            if isinstance(frame.schema[name], pl.Array):
                col = col.arr.to_list()
            exprs.append(col)
        else:
            exprs.append(pl.lit(None).alias(name))
    table = frame.select(exprs).to_arrow(compat_level=pl.CompatLevel.oldest())
    return table.cast(schema)


def _from_arrow(table: pa.Table, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """An Arrow table from Spark as a polars frame with exactly ``schema``'s columns and types."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.select(
        pl.col(n).list.to_array(t.size) if isinstance(t, pl.Array) else pl.col(n).cast(t)
        for n, t in schema.items()
    )


def map_partitions(
    df: DataFrame, fn: Callable[[pa.Table], pa.Table | None], schema: pa.Schema
) -> DataFrame:
    """``df.mapInArrow`` that calls ``fn`` ONCE per Spark partition, on all its rows.

    The partition's Arrow batches are concatenated into one table first (a transform per batch,
    or worse per user, would pay polars' fixed costs thousands of times); an empty partition is
    skipped. ``fn`` returns a table of ``schema`` (or None for no rows).
    """

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        collected = list(batches)
        if not collected or sum(b.num_rows for b in collected) == 0:
            return
        out = fn(pa.Table.from_batches(collected))
        if out is not None and out.num_rows:
            yield from out.cast(schema).to_batches(max_chunksize=64_000)

    return df.mapInArrow(run, _spark_schema(schema))


# ----------------------------------------------------------------------------- helpers
class _Laps:
    """Wall seconds per named step (Spark is lazy: a step is timed where its job runs)."""

    def __init__(self, into: dict[str, float] | None) -> None:
        self.into = into if into is not None else {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.into[name] = self.into.get(name, 0.0) + now - self.last
        self.last = now


def _canonical_schema(table: str, continuous: bool, config: EtlConfig) -> dict[str, pl.DataType]:
    """The columns :func:`etl.io.scan_table` yields for ``table``, in order."""
    columns: dict[str, pl.DataType] = dict(EVENT_COLUMNS if table == "events" else ORDER_COLUMNS)
    if table == "events":
        columns["action"] = pl.Float64() if continuous else pl.String()
        columns.update({c: pl.String() for c in config.context_columns})
    columns.update({NAIVE_TS: pl.Boolean(), SOURCE_FILE: pl.String(), ROW_NR: pl.Int64(),
                    PART_DATE: pl.Date()})
    return columns


def _empty(schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict(schema))


_LINKS_SCHEMA: dict[str, pl.DataType] = {
    "anonymous_id": pl.String(), LINK_USER: pl.String(), LINK_TS: TS,
}
_PARTIAL_SCHEMA: dict[str, pl.DataType] = {
    _KIND: pl.String(),
    "anonymous_id": pl.String(),
    "user_id": pl.String(),
    "ts": TS,
    "source_table": pl.String(),
    SOURCE_FILE: pl.String(),
    ROW_NR: pl.Int64(),
    "end_us": pl.Int64(),
}


def _files_df(spark: SparkSession, files: Sequence[InputFile], tasks: int) -> DataFrame:
    """A Spark frame of input files (one row each), spread over at most ``tasks`` partitions."""
    rows = [(str(f.path.resolve()), f.relpath, f.table, f.part_date) for f in files]
    df = spark.createDataFrame(rows, "path string, relpath string, table string, part_date date")
    return df.repartition(max(1, min(len(files), tasks)))


def _read(
    spark: SparkSession, files: Sequence[InputFile], table: str, config: EtlConfig,
    space: ActionSpace, tasks: int, as_of_end_us: int,
) -> DataFrame:
    """Read one table's files in Spark tasks with the ETL's own reader (:func:`scan_table`).

    Besides the rows (``_kind`` = ``row``), each task adds its files' identity-link partials
    (``link``: anonymous_id, user_id, ts) and data end (``end``: end_us) from
    :func:`global_inputs`, so the global steps need no second pass over all rows.
    """
    schema = _canonical_schema(table, space.continuous, config)
    out_schema = {**schema, **{k: v for k, v in _PARTIAL_SCHEMA.items() if k not in schema}}
    out = arrow_schema(out_schema, transport=True)
    mapping = resolve_mapping(config)
    chosen = [f for f in files if f.table == table]
    if not chosen:
        return spark.createDataFrame([], _spark_schema(out))
    other = _empty(_canonical_schema("orders" if table == "events" else "events",
                                     space.continuous, config))

    def load(r: dict[str, Any]) -> pl.DataFrame:
        file = InputFile(Path(r["path"]), r["relpath"], r["table"], r["part_date"])
        with input_errors([file], config, continuous=space.continuous):
            return scan_table(file, config, continuous=space.continuous, mapping=mapping).collect()

    def read(batch: pa.Table) -> pa.Table:
        todo = pl.from_arrow(batch)
        assert isinstance(todo, pl.DataFrame)
        rows = pl.concat([load(r) for r in todo.iter_rows(named=True)]).select(list(schema))
        ev, od = (rows, other) if table == "events" else (other, rows)
        g = global_inputs(ev.lazy(), od.lazy(), config, space, as_of_end_us=as_of_end_us)
        links = g.links.select(pl.lit("link").alias(_KIND), "anonymous_id",
                               pl.col(LINK_USER).alias("user_id"), pl.col(LINK_TS).alias("ts"))
        end = pl.DataFrame({_KIND: ["end"], "end_us": [g.data_end_us]})
        tagged = rows.with_columns(pl.lit("row").alias(_KIND))
        return _to_arrow(pl.concat([tagged, links, end], how="diagonal_relaxed"), out)

    return map_partitions(_files_df(spark, chosen, tasks), read, out)


def _rows(read: DataFrame, schema: Mapping[str, pl.DataType]) -> DataFrame:
    """The data rows of a :func:`_read` frame."""
    from pyspark.sql import functions as F

    return read.filter(F.col(_KIND) == "row").select(*schema)


def _hashes(spark: SparkSession, files: Sequence[InputFile], tasks: int) -> dict[str, str]:
    """SHA-256 of each input file, computed in Spark tasks (relpath -> hex digest)."""
    if not files:
        return {}
    out = pa.schema([pa.field("relpath", pa.string()), pa.field("sha256", pa.string())])

    def digest(batch: pa.Table) -> pa.Table:
        paths = batch.column("path").to_pylist()
        return pa.table({"relpath": batch.column("relpath"),
                         "sha256": [sha256(Path(p)) for p in paths]}, schema=out)

    got = map_partitions(_files_df(spark, files, tasks), digest, out).toArrow()
    return dict(zip(got.column("relpath").to_pylist(), got.column("sha256").to_pylist(),
                    strict=True))


# ----------------------------------------------------------------------------- global steps
def _global_partials(
    events: DataFrame, orders: DataFrame, *, ev_schema: dict[str, pl.DataType],
    od_schema: dict[str, pl.DataType], config: EtlConfig, space: ActionSpace, parts: int,
    as_of_end_us: int,
) -> DataFrame:
    """Per-partition identity links, duplicate rows and data end (:func:`global_inputs`) of
    rows hash-partitioned by event id (order id and line): every copy of an id meets in one
    partition, so each partition's duplicates are the global answer for its ids."""
    out = arrow_schema(_PARTIAL_SCHEMA, transport=True)

    def partial(table: str) -> Callable[[pa.Table], pa.Table]:
        def run(batch: pa.Table) -> pa.Table:
            own = _from_arrow(batch, ev_schema if table == "events" else od_schema)
            ev = own if table == "events" else _empty(ev_schema)
            od = own if table == "orders" else _empty(od_schema)
            g = global_inputs(ev.lazy(), od.lazy(), config, space, as_of_end_us=as_of_end_us)
            links = g.links.select(
                pl.lit("link").alias(_KIND), "anonymous_id",
                pl.col(LINK_USER).alias("user_id"), pl.col(LINK_TS).alias("ts"),
            )
            dups = g.duplicates.select(pl.lit("dup").alias(_KIND), "source_table", SOURCE_FILE,
                                       ROW_NR)
            end = pl.DataFrame({_KIND: ["end"], "end_us": [g.data_end_us]})
            return _to_arrow(pl.concat([links, dups, end], how="diagonal_relaxed"), out)

        return run

    ev = map_partitions(events.repartition(parts, "event_id"), partial("events"), out)
    od = map_partitions(orders.repartition(parts, "order_id", "line_no"), partial("orders"), out)
    return ev.unionByName(od)


def _duplicates(
    events: DataFrame, orders: DataFrame, *, ev_schema: dict[str, pl.DataType],
    od_schema: dict[str, pl.DataType], config: EtlConfig, space: ActionSpace, parts: int,
    as_of_end_us: int,
) -> DataFrame:
    """The duplicate rows to drop (source_table, _source_file, _row_nr).

    Only ids seen more than once can have duplicates: Spark counts the ids and sends just
    those rows (every copy of them) to :func:`_global_partials`, whose answer for them is exact.
    """
    from pyspark.sql import functions as F

    def candidates(df: DataFrame, keys: list[str]) -> DataFrame:
        # repeated ids are few: broadcast them rather than shuffle every row for the semi-join
        repeated = df.groupBy(*keys).count().filter(F.col("count") > 1).select(*keys)
        return df.join(F.broadcast(repeated), on=keys, how="left_semi")

    partials = _global_partials(
        candidates(events, ["event_id"]), candidates(orders, ["order_id", "line_no"]),
        ev_schema=ev_schema, od_schema=od_schema, config=config, space=space, parts=parts,
        as_of_end_us=as_of_end_us,
    )
    return partials.filter(F.col(_KIND) == "dup").select("source_table", SOURCE_FILE, ROW_NR)


def _links(partials: DataFrame, parts: int) -> DataFrame:
    """The identity map: the partitions' links reduced per anonymous id (first by time)."""

    out = arrow_schema(_LINKS_SCHEMA, transport=True)
    pair_schema = {"anonymous_id": pl.String(), "user_id": pl.String(), "ts": TS}

    def reduce(batch: pa.Table) -> pa.Table:
        pairs = _from_arrow(batch, pair_schema)
        none = pl.LazyFrame(schema={"anonymous_id": pl.String, "user_id": pl.String,
                                    "order_ts": TS})
        links = identity_links(pairs.rename({"ts": "event_ts"}).lazy(), none).collect()
        return _to_arrow(links, out)

    pairs = partials.select("anonymous_id", "user_id", "ts")
    return map_partitions(pairs.repartition(parts, "anonymous_id"), reduce, out)


def _user_key() -> Any:
    """The stitched user as a Spark column: :func:`etl.clean.user_key_expr`, null -> ''.

    Only decides which partition a row lands in; every row of a stitched user must meet in
    one partition, which the equality test checks.
    """
    from pyspark.sql import functions as F

    return F.coalesce(
        F.col("user_id"),
        F.col(LINK_USER),
        F.concat(F.lit("anon:"), F.col("anonymous_id")),
        F.concat(F.lit("session:"), F.col("session_id")),
        F.lit(""),
    )


# ----------------------------------------------------------------------------- transform
def _transform(
    events: DataFrame, orders: DataFrame, links: DataFrame, dups: DataFrame, g: GlobalInputs,
    config: EtlConfig, *, ev_schema: dict[str, pl.DataType], od_schema: dict[str, pl.DataType],
    parts: int, n_features: int,
) -> DataFrame:
    """Repartition by stitched user and run :func:`transform_partition` once per partition."""
    from pyspark.sql import functions as F

    def keyed(df: DataFrame, table: str) -> DataFrame:
        flags = dups.filter(F.col("source_table") == table).select(
            SOURCE_FILE, ROW_NR, F.lit(True).alias(_DUP)
        )
        return (
            df.join(links, on="anonymous_id", how="left")
            .join(F.broadcast(flags), on=[SOURCE_FILE, ROW_NR], how="left")
            .withColumn(_TABLE, F.lit(table))
        )

    both = keyed(events, "events").unionByName(keyed(orders, "orders"), allowMissingColumns=True)
    both = both.repartition(parts, _user_key())

    obs_dtype = pl.Float32() if g.scaling is not None else pl.Float64()
    trans_cols = transition_schema(n_features, g.space.continuous)
    obs_col = "observation" if g.scaling is not None else RAW_OBS
    trans_cols = {
        (obs_col if k == "observation" else k): (pl.Array(obs_dtype, n_features)
                                                   if k == "observation" else v)
        for k, v in trans_cols.items()
    }
    out_schema: dict[str, pl.DataType] = {_KIND: pl.String(), **trans_cols}
    for part in (QUARANTINE_SCHEMA, COUNT_SCHEMA):
        out_schema.update({k: v for k, v in part.items() if k not in out_schema})
    out = arrow_schema(out_schema, transport=True)
    in_schema: dict[str, pl.DataType] = {
        **ev_schema, **{k: v for k, v in od_schema.items() if k not in ev_schema},
        **_LINKS_SCHEMA, _DUP: pl.Boolean(), _TABLE: pl.String(),
    }

    def run(batch: pa.Table) -> pa.Table | None:
        rows = _from_arrow(batch, in_schema)
        # the local engine's row order (input files in order, rows in file order)
        rows = rows.sort(SOURCE_FILE, ROW_NR)
        links_p = (
            rows.filter(pl.col(LINK_USER).is_not_null())
            .select(list(_LINKS_SCHEMA)).unique("anonymous_id").sort("anonymous_id")
        )
        dups_p = rows.filter(pl.col(_DUP).fill_null(False)).select(
            pl.col(_TABLE).alias("source_table"), SOURCE_FILE, ROW_NR
        )
        ev = rows.filter(pl.col(_TABLE) == "events").select(list(ev_schema))
        od = rows.filter(pl.col(_TABLE) == "orders").select(list(od_schema))
        part_g = GlobalInputs(g.space, links_p, dups_p, g.data_end_us, g.scaling,
                              g.output_dates, g.count_dates, as_of_end_us=g.as_of_end_us)
        res = transform_partition(ev, od, part_g, config)
        frames = [
            res.transitions.with_columns(pl.lit(_TRANS).alias(_KIND)),
            res.quarantine.with_columns(pl.lit(_QUAR).alias(_KIND)),
            res.counts.with_columns(pl.lit(_COUNT).alias(_KIND)),
        ]
        tables = [_to_arrow(f, out) for f in frames if f.height]
        return pa.concat_tables(tables) if tables else None

    return map_partitions(both, run, out)


# ----------------------------------------------------------------------------- writing
def _write_dated(
    df: DataFrame, *, root: str, date_col: str, sort: list[str], schema: dict[str, pl.DataType],
    file_schema: pa.Schema, in_schema: dict[str, pl.DataType], parts: int,
    prepare: Callable[[pl.DataFrame], pl.DataFrame],
) -> list[str]:
    """Write ``df`` as ``root/date=D/part-00000.parquet`` (one file per date, sorted) from the
    workers, with ``file_schema``; returns the dates written."""
    from pyspark.sql import functions as F

    out = pa.schema([pa.field("date", pa.string()), pa.field("rows", pa.int64())])
    dated_schema = {**in_schema, _DATE: pl.Date()}

    def write(batch: pa.Table) -> pa.Table:
        frame = prepare(_from_arrow(batch, dated_schema)).sort(_DATE, *sort)
        days, counts = [], []
        for (day,), part in frame.group_by(_DATE, maintain_order=True):
            assert isinstance(day, dt.date)
            target = Path(root) / f"date={day.isoformat()}" / "part-00000.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            table = part.select(list(schema)).to_arrow(compat_level=pl.CompatLevel.oldest())
            # a retried or speculative task may write the same file: write aside, then rename
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            pq.write_table(table.cast(file_schema), tmp, compression="zstd")
            os.replace(tmp, target)
            days.append(day.isoformat())
            counts.append(part.height)
        return pa.table({"date": days, "rows": counts}, schema=out)

    dated = df.withColumn(_DATE, F.to_date(F.col(date_col)))
    written = map_partitions(dated.repartition(parts, _DATE), write, out).toArrow()
    return sorted(written.column("date").to_pylist())


def _read_back(root: Path, schema: dict[str, pl.DataType], sort: list[str]) -> pl.DataFrame:
    files = sorted(root.glob("date=*/*.parquet"))
    if not files:
        return _empty(schema)
    return pl.read_parquet(files, hive_partitioning=False).sort(sort)


# ----------------------------------------------------------------------------- entry point
def run_etl_spark(
    input_root: Path | str,
    out_root: Path | str,
    config: EtlConfig | None = None,
    *,
    master: str | None = None,
    date: dt.date | str | None = None,
    spark: SparkSession | None = None,
    settings: SparkConfig | None = None,
    collect: bool = True,
    timings: dict[str, float] | None = None,
    as_of: dt.date | str | None = None,
) -> EtlResult:
    """:func:`etl.pipeline.run_etl` on Spark: same inputs, same outputs, same result.

    ``settings``: the Spark settings (default: ``config.spark``, the ``[etl.spark]`` table;
    ``local[1]`` when absent); ``master``: overrides its
    master URL (both are ignored when ``spark`` is given or a session is already active, as
    under spark-submit or on Databricks); ``date``: the
    nightly run of one decision date (that day's rows are collected to the driver and written
    by the local writer, so the files are the local engine's, byte for byte). ``collect``: read
    the written transitions and quarantine back into the result (as ``run_etl`` returns them);
    False returns empty frames, for runs too big for the driver. ``timings``: filled with the
    wall seconds of each step (``session``, ``global_steps``, ``transform``, ...). ``as_of``:
    the run date (default today, UTC), as in ``run_etl``.
    """
    config = config or EtlConfig()
    if settings is None:
        settings = config.spark
    if master is not None:
        settings = settings.model_copy(update={"master": master})
    input_root, out_root = Path(input_root), Path(out_root)
    day = dt.date.fromisoformat(date) if isinstance(date, str) else date
    laps = _Laps(timings)
    session = spark or spark_session(settings)
    laps.lap("session")
    parts = settings.partitions or max(1, 2 * session.sparkContext.defaultParallelism)
    with _spark_errors():
        cached: list[DataFrame] = []
        try:
            return _run(session, input_root, out_root, config, day, parts, collect, laps, cached,
                        run_date(as_of))
        finally:
            for df in cached:
                df.unpersist()


def _run(
    spark: SparkSession, input_root: Path, out_root: Path, config: EtlConfig,
    day: dt.date | None, parts: int, collect: bool, laps: _Laps, cached: list[DataFrame],
    today: dt.date,
) -> EtlResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    def keep(df: DataFrame) -> DataFrame:
        """Cache a frame that several jobs read (dropped when the run ends)."""
        cached.append(df.persist(StorageLevel.MEMORY_AND_DISK))
        return cached[-1]

    files = discover(input_root)
    continuous = action_is_continuous(files, config)
    as_of_end_us = run_date_end_us(today)
    if later := folders_after(files, today):
        log.warning("partition folders after the run date (rows judged by their own times)",
                    run_date=str(today), folders=later[:5], n=len(later))
    with input_errors(files, config, continuous=continuous):  # on the driver: labels, decisions
        found = scan_actions(files, config, continuous)
    space = resolve_action_space(config, continuous, found, stored_action_space(
        config, out_root, prefer_existing=day is not None))
    spec = FeatureSpec.from_config(config, space)
    n_feat = len(spec.names)
    ev_schema = _canonical_schema("events", continuous, config)
    od_schema = _canonical_schema("orders", continuous, config)
    log.info("etl start", engine="spark", files=len(files), date=str(day) if day else "all",
             partitions=parts, master=spark.sparkContext.master)

    ev_read = _read(spark, files, "events", config, space, parts, as_of_end_us)
    od_read = _read(spark, files, "orders", config, space, parts, as_of_end_us)
    ev_read, od_read = keep(ev_read), keep(od_read)
    all_ev, all_od = _rows(ev_read, ev_schema), _rows(od_read, od_schema)
    if day is None:
        used_files = files
        events, orders = all_ev, all_od
    else:
        lo = day - dt.timedelta(days=lookback_days(config))
        hi = day + dt.timedelta(days=lookahead_days(config))
        window = [f for f in files if f.part_date is None or lo <= f.part_date <= hi]
        older = [f for f in files if f.part_date is not None and f.part_date < lo
                 and f.table == "events"]
        used_files = window + older
        in_window = F.col(SOURCE_FILE).isin([f.relpath for f in window])
        in_older = F.col(SOURCE_FILE).isin([f.relpath for f in older])
        events = all_ev.filter(in_window | (in_older & (F.col("event_type") == "decision")))
        orders = all_od.filter(in_window)

    # --- global steps, once: identity links and the data end of every file (both modes, as
    # run_etl), the duplicates of the rows this run transforms
    partial_cols = ["anonymous_id", "user_id", "ts", _KIND, "end_us"]
    read_partials = ev_read.select(*partial_cols).unionByName(od_read.select(*partial_cols))
    link_pairs = read_partials.filter(F.col(_KIND) == "link")
    links = keep(_links(link_pairs, parts))
    dups = keep(_duplicates(events, orders, ev_schema=ev_schema, od_schema=od_schema,
                            config=config, space=space, parts=parts, as_of_end_us=as_of_end_us))
    end_row = read_partials.filter(F.col(_KIND) == "end").agg(F.max("end_us")).collect()[0][0]
    end_us = int(end_row or 0)
    dups.count()
    links.count()
    laps.lap("read_and_global_steps")
    g = GlobalInputs(space, _empty(_LINKS_SCHEMA), _empty({}), end_us,
                     as_of_end_us=as_of_end_us)
    if day is not None:
        g.output_dates = (day, day)
        g.count_dates = (day, day)
    g.scaling = load_scaling(config, out_root, spec, prefer_existing=day is not None)

    # --- the transform, once per user partition
    out = _transform(events, orders, links, dups, g, config, ev_schema=ev_schema,
                     od_schema=od_schema, parts=parts, n_features=n_feat)
    out = keep(out)

    # --- accounting (before anything is written, as in the local engine)
    counts = _collect(out.filter(F.col(_KIND) == _COUNT), COUNT_SCHEMA)
    laps.lap("transform")
    rows_in = _rows_in_spark(events, orders)
    if day is not None:
        rows_in = rows_in.filter(pl.col("date") == day)
    by_date = tally(counts, rows_in)
    check_quarantine(totals(by_date), config, action_hint(space, found))
    laps.lap("accounting")

    # --- scaling: fitted on the raw features in (episode_id, step) order, like _finish
    scaling = g.scaling
    trans_df = out.filter(F.col(_KIND) == _TRANS)
    obs_col = "observation" if g.scaling is not None else RAW_OBS
    if scaling is None:
        raw = _collect(trans_df.select("episode_id", "step", obs_col),
                       {"episode_id": pl.String(), "step": pl.Int32(),
                        RAW_OBS: pl.Array(pl.Float64, n_feat)}).sort("episode_id", "step")
        matrix = raw[RAW_OBS].to_numpy().reshape(raw.height, n_feat).astype(np.float64)
        scaling = Scaling.fit(spec.names, matrix)
    assert scaling is not None
    laps.lap("scaling")

    t_schema = transition_schema(n_feat, continuous)
    t_in = {(obs_col if k == "observation" else k):
            (pl.Array(pl.Float32 if obs_col == "observation" else pl.Float64, n_feat)
             if k == "observation" else v) for k, v in t_schema.items()}
    fitted = scaling

    def prepare_trans(frame: pl.DataFrame) -> pl.DataFrame:
        return apply_scaling(frame, fitted, n_feat)

    hashes = _hashes(spark, [f for f in used_files if day is None or f.part_date == day], parts)
    inputs = [
        {"path": f.relpath, "table": f.table, "sha256": hashes[f.relpath]}
        for f in sorted(used_files, key=lambda f: f.relpath)
        if day is None or f.part_date == day
    ]
    laps.lap("hashes")
    quar_df = out.filter(F.col(_KIND) == _QUAR)
    if day is None:
        manifest, trans, quar = _publish_backfill(
            out_root, trans_df, quar_df, t_schema=t_schema, t_in=t_in, n_feat=n_feat,
            continuous=continuous, parts=parts, prepare_trans=prepare_trans, collect=collect,
            manifest=lambda dates: build_manifest(config, space, spec, fitted, by_date, inputs,
                                                  dates),
        )
    else:
        trans = prepare_trans(_collect(trans_df, t_in)).sort("episode_id", "step")
        quar = _collect(quar_df, QUARANTINE_SCHEMA).sort("source_table", "source_file",
                                                         "row_number")
        manifest = write_day(out_root, day, trans, quar, config, space, spec, fitted,
                             by_date, inputs)
    laps.lap("write")
    done = manifest["counts"] if day is None else totals(by_date)
    log.info("etl done", engine="spark", transitions=trans.height, quarantined=quar.height,
             out=str(out_root), counts=done)
    return EtlResult(trans, quar, manifest)


def _publish_backfill(
    out_root: Path, trans_df: DataFrame, quar_df: DataFrame, *, t_schema: dict[str, pl.DataType],
    t_in: dict[str, pl.DataType], n_feat: int, continuous: bool, parts: int,
    prepare_trans: Callable[[pl.DataFrame], pl.DataFrame], collect: bool,
    manifest: Callable[[list[str]], dict[str, Any]],
) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame]:
    """Workers write into a staging folder; the driver adds the manifest and renames it."""
    out_root = out_root.resolve()
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_root.with_name(f".{out_root.name}.tmp-{uuid.uuid4().hex}")
    try:
        tmp.mkdir(parents=True)
        dates = _write_dated(
            trans_df, root=str(tmp / "transitions"), date_col="decision_ts",
            sort=["episode_id", "step"], schema=t_schema,
            file_schema=transitions_arrow_schema(n_feat, continuous), in_schema=t_in,
            parts=parts, prepare=prepare_trans,
        )
        _write_dated(
            quar_df, root=str(tmp / "quarantine"), date_col="partition_date",
            sort=["source_table", "source_file", "row_number"], schema=QUARANTINE_SCHEMA,
            file_schema=quarantine_arrow_schema(), in_schema=QUARANTINE_SCHEMA, parts=parts,
            prepare=lambda f: f,
        )
        data = manifest(dates)
        write_json(data, tmp / MANIFEST)
        swap_dir(tmp, out_root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if collect:
        trans = _read_back(out_root / "transitions", t_schema, ["episode_id", "step"])
        quar = _read_back(out_root / "quarantine", QUARANTINE_SCHEMA,
                          ["source_table", "source_file", "row_number"])
    else:
        trans, quar = _empty(t_schema), _empty(QUARANTINE_SCHEMA)
    return data, trans, quar


def _collect(df: DataFrame, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """A (small) Spark frame on the driver as polars, with ``schema``."""
    table = df.select(*schema).toArrow()
    if table.num_rows == 0:
        return _empty(schema)
    return _from_arrow(table, schema)


def _rows_in_spark(events: DataFrame, orders: DataFrame) -> pl.DataFrame:
    """Input rows per table and partition date (``etl.pipeline._rows_in`` in Spark)."""
    from pyspark.sql import functions as F

    parts = [
        df.groupBy(F.col(PART_DATE).alias("date")).agg(F.count(F.lit(1)).alias("n"))
        .select(F.lit(table).alias("table"), "date", "n")
        for table, df in (("events", events), ("orders", orders))
    ]
    schema = {"table": pl.String(), "date": pl.Date(), "n": pl.Int64()}
    return _collect(parts[0].unionByName(parts[1]), schema).sort("table", "date")


__all__ = [
    "DEFAULT_CONF",
    "FAST_START_CONF",
    "INSTALL_HINT",
    "SparkConfig",
    "arrow_schema",
    "check_spark_available",
    "map_partitions",
    "quarantine_arrow_schema",
    "run_etl_spark",
    "spark_session",
    "transitions_arrow_schema",
]
