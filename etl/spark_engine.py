"""The Spark engine: Spark schedules the local engine's steps over files on shared storage.

:func:`run_etl_spark` runs the steps of :mod:`etl.buckets` (the very functions of the local
engine's bucketed run) as Spark jobs over Python objects, instead of carrying rows through
Spark's row format:

1. **actions**: one task per group of events files counts the decision events per action label
   (the action vocabulary, :func:`etl.pipeline.scan_actions` per group);
2. **split**: one task per group of input files reads them once with polars
   (:func:`etl.io.scan_table`: column mapping, types, ``_source_file`` / ``_row_nr``), appends
   each row to its user-hash bucket's Arrow file under the run's work folder, and returns the
   group's global pieces (rows in per date, duplicate-key hashes, latest valid time, anonymous
   ids looked up, file SHA-256);
3. **global steps**: one task per bucket reads back, memory-mapped, the rows the identity map and
   duplicate detection need; the driver reduces them (:func:`etl.buckets.global_steps`); one
   task per group then routes the rows that waited for the identity map to their bucket;
4. **transform**: one task per bucket runs :func:`etl.core.transform_partition` on the bucket's
   rows in input order and writes its outputs per output date (Arrow files); the driver
   accounts for every row and fits the scaling from the raw features in (episode_id, step)
   order, as the local engine does (bit-identical floats);
5. **publish**: one task per output date sorts, scales and writes ``date=D/part-00000.parquet``
   into a staging folder (the local engine's writer: same bytes), and the driver adds
   ``_manifest.json`` and renames the folder into place. A nightly run (``date=D``) writes its
   one day on the driver with the local writer.

The work folder (``work_dir``, default: a hidden folder beside the output) must be storage every
executor and the driver see at the same path (the output's file system). For the same input the
two engines write identical files and manifests (``tests/etl/test_spark_engine.py``).

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
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl
import pyarrow as pa
import structlog

from etl.buckets import (
    BucketKeys,
    BucketPlan,
    SplitResult,
    bucket_keys,
    date_frame,
    estimate_rows,
    file_links,
    fit_scaling,
    global_steps,
    pending_keys,
    publish_date,
    repeated_hashes,
    route_pending,
    split_files,
    stored_dates,
    stored_pieces,
    transform_bucket,
    write_pieces,
)
from etl.config import EtlConfig, SparkConfig
from etl.core import RAW_OBS, GlobalInputs, action_counts, empty_counts
from etl.errors import EtlError
from etl.features import FeatureSpec, Scaling
from etl.io import (
    InputFile,
    action_is_continuous,
    discover,
    folders_after,
    input_errors,
    run_date,
    run_date_end_us,
    scan_pieces,
)
from etl.output import (
    MANIFEST,
    build_manifest,
    check_quarantine,
    load_scaling,
    refuse_without_decisions,
    stored_action_space,
    stored_manifest,
    swap_dir,
    tally,
    totals,
    write_day,
    write_json,
)
from etl.pipeline import EtlResult, FilePlan, file_plan
from etl.schema import QUARANTINE_SCHEMA, transition_schema
from etl.source import resolve_source_features
from etl.validate import ActionSpace, action_hint, resolve_action_space

if TYPE_CHECKING:
    from polars._typing import PolarsDataType
    from pyspark import SparkContext
    from pyspark.sql import DataFrame, SparkSession


log = structlog.get_logger(__name__)
T = TypeVar("T")
R = TypeVar("R")

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
# Defaults for a session the engine builds (settings.conf overrides them): Python workers are
# reused across tasks, so polars and the ETL are imported once per worker.
DEFAULT_CONF: dict[str, str] = {
    "spark.python.worker.reuse": "true",
}
# Settings the engine relies on for exact results, always set.
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.useLargeVarTypes": "false",
}
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




# ----------------------------------------------------------------------------- jobs
def _job(sc: SparkContext, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``fn`` over ``items`` in Spark tasks (one item per task), results in the items' order."""
    if not items:
        return []
    return sc.parallelize(list(items), len(items)).map(fn).collect()


def _groups(files: Sequence[InputFile], n: int) -> list[list[InputFile]]:
    """Contiguous runs of ``files`` (input order kept within and across the groups), at most
    ``n``, of about equal size on disk."""
    if not files:
        return []
    sizes = [max(1, f.path.stat().st_size) for f in files]
    target = sum(sizes) / max(1, min(n, len(files)))
    groups: list[list[InputFile]] = [[]]
    filled = 0.0
    for f, size in zip(files, sizes, strict=True):
        if groups[-1] and filled + size / 2 > target * len(groups) and len(groups) < n:
            groups.append([])
        groups[-1].append(f)
        filled += size
    return groups


def _action_job(sc: SparkContext, files: list[InputFile], config: EtlConfig, continuous: bool,
                tasks: int) -> tuple[dict[str, int], int]:
    """:func:`etl.pipeline.scan_decisions` in Spark tasks (one per group of events files):
    (label -> decisions, decision events)."""
    from etl.core import decision_actions

    def count(group: list[InputFile]) -> tuple[pl.DataFrame, int]:
        with input_errors(group, config, continuous=continuous):
            ev, _ = scan_pieces(group, config, continuous=continuous)
            frames = pl.collect_all([
                *[decision_actions(lf, continuous) for lf in ev],
                *[lf.select(pl.len()) for lf in ev],
            ])
        k = len(ev)
        actions = pl.concat([pl.DataFrame(schema={"action": pl.String, "n": pl.Int64}),
                             *frames[:k]])
        return actions, sum(int(f.item()) for f in frames[k:])

    got = _job(sc, count, _groups([f for f in files if f.table == "events"], tasks))
    return action_counts([a for a, _ in got])


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
    work_dir: Path | str | None = None,
) -> EtlResult:
    """:func:`etl.pipeline.run_etl` on Spark: same inputs, same outputs, same result.

    ``settings``: the Spark settings (default: ``config.spark``, the ``[etl.spark]`` table;
    ``local[1]`` when absent); ``master``: overrides its master URL (both are ignored when
    ``spark`` is given or a session is already active, as under spark-submit or on
    Databricks); ``settings.partitions``: the user-hash buckets (one transform task each;
    default: the local engine's bucket count for the input, at least twice Spark's default
    parallelism); ``date``: the nightly run of one decision date (that day's rows are written
    on the driver by the local writer). ``collect``: read the written transitions and
    quarantine back into the result (as ``run_etl`` returns them); False returns empty frames.
    ``timings``: filled with the wall seconds of each step (``session``, ``split``,
    ``transform``, ...). ``as_of``: the run date (default today, UTC), as in ``run_etl``.
    ``work_dir``: where the run's temporary bucket files go (a fresh subfolder of it, removed
    at the end, also on errors), on storage that the driver and every executor see at the same
    path (default: a hidden folder beside ``out_root``).
    """
    config = config or EtlConfig()
    if settings is None:
        settings = config.spark
    if master is not None:
        settings = settings.model_copy(update={"master": master})
    input_root, out_root = Path(input_root), Path(out_root).resolve()
    day = dt.date.fromisoformat(date) if isinstance(date, str) else date
    laps = _Laps(timings)
    session = spark or spark_session(settings)
    laps.lap("session")
    work = (Path(work_dir) / f"ecomrl-etl-{uuid.uuid4().hex}" if work_dir is not None
            else out_root.with_name(f".{out_root.name}.work-{uuid.uuid4().hex}"))
    work.mkdir(parents=True)
    with _spark_errors():
        try:
            return _run(session, input_root, out_root, config, day, settings, collect, laps,
                        run_date(as_of), work)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _run(
    spark: SparkSession, input_root: Path, out_root: Path, config: EtlConfig,
    day: dt.date | None, settings: SparkConfig, collect: bool, laps: _Laps, today: dt.date,
    work: Path,
) -> EtlResult:
    sc = spark.sparkContext
    tasks = max(1, 2 * sc.defaultParallelism)
    files = discover(input_root)
    continuous = action_is_continuous(files, config)
    if later := folders_after(files, today):
        log.warning("partition folders after the run date (rows judged by their own times)",
                    run_date=str(today), folders=later[:5], n=len(later))
    found, n_decisions = _action_job(sc, files, config, continuous, tasks)  # none: refused
    space = resolve_action_space(config, continuous, found, stored_action_space(  # below
        config, out_root, prefer_existing=day is not None))
    if config.features.declared:  # the source features' vocabulary and constants (etl.source)
        with input_errors(files, config, continuous=continuous):
            ev_files, _ = scan_pieces([f for f in files if f.table == "events"], config,
                                      continuous=continuous)
            config = resolve_source_features(config, ev_files, stored_manifest(
                config, out_root, prefer_existing=day is not None))
    spec = FeatureSpec.from_config(config, space)
    laps.lap("actions")
    chosen = file_plan(files, config, day)
    n = settings.partitions or max(tasks, config.bucket_count(estimate_rows(chosen.used)))
    hashed = frozenset(f.relpath for f in chosen.used if day is None or f.part_date == day)
    plan = BucketPlan(config, space, n, run_date_end_us(today), str(work), chosen.order,
                      chosen.decisions_only, hashed)
    log.info("etl start", engine="spark", files=len(chosen.used),
             date=str(day) if day else "all", buckets=n, master=sc.master)
    scaling = load_scaling(config, out_root, spec, prefer_existing=day is not None)
    g, split, n_groups = _global_jobs(sc, plan, chosen, files, tasks, laps)
    g.scaling = scaling
    if day is not None:
        g.output_dates = (day, day)
        g.count_dates = (day, day)

    # --- the transform, one task per bucket; outputs per date on the shared storage
    shared = sc.broadcast(g)
    schemas = _schemas(plan, chosen.used)
    _job(sc, lambda group: route_pending(plan, shared.value.links, group), list(range(n_groups)))
    counts = _job(sc, lambda b: write_pieces(plan, b, transform_bucket(
        plan, b, shared.value, schemas)), list(range(n)))
    shared.destroy()
    laps.lap("transform")
    rows_in = split.rows_in if day is None else split.rows_in.filter(pl.col("date") == day)
    by_date = tally(pl.concat([empty_counts(), *counts]), rows_in)
    refuse_without_decisions(totals(by_date), n_decisions, config)
    check_quarantine(totals(by_date), config, action_hint(space, found))
    laps.lap("accounting")
    if scaling is None:
        pieces = [p for d in stored_dates(plan, "transitions")
                  for p in stored_pieces(plan, "transitions", d,
                                         columns=["episode_id", "step", RAW_OBS])]
        scaling = fit_scaling(spec.names, pieces, n, config.worker_count())
        del pieces
    laps.lap("scaling")
    inputs = [
        {"path": f.relpath, "table": f.table, "sha256": split.digests[f.relpath]}
        for f in sorted(chosen.used, key=lambda f: f.relpath) if f.relpath in hashed
    ]
    fitted = scaling
    result = _publish(sc, plan, out_root, day, space, spec, fitted, by_date, inputs, collect,
                      lambda dates: build_manifest(config, space, spec, fitted, by_date, inputs,
                                                   dates))
    laps.lap("write")
    return result


def _global_jobs(
    sc: SparkContext, plan: BucketPlan, chosen: FilePlan, files: list[InputFile], tasks: int,
    laps: _Laps,
) -> tuple[GlobalInputs, SplitResult, int]:
    """The split job (rows to bucket files, global pieces), then the keys jobs and the global
    steps on the driver; returns the global inputs, the merged split and the group count."""
    config, continuous = plan.config, plan.space.continuous
    groups = _groups(chosen.used, tasks)

    def split(item: tuple[int, list[InputFile]]) -> SplitResult:
        with input_errors(item[1], config, continuous=continuous):
            return split_files(plan, item[1], item[0])

    split_all = SplitResult.merge(_job(sc, split, list(enumerate(groups))))
    laps.lap("split")
    repeated = repeated_hashes(split_all.hashes)
    wanted = split_all.pending_ids
    nightly = chosen.link_files is not None
    keys: list[BucketKeys] = [
        *_job(sc, lambda g: pending_keys(plan, g, repeated), list(range(len(groups)))),
        *_job(sc, lambda b: bucket_keys(plan, b, wanted, repeated, links=not nightly),
              list(range(plan.n_buckets))),
    ]
    links = None
    if chosen.link_files is not None:
        def linked(f: InputFile) -> tuple[pl.DataFrame, dt.datetime | None]:
            with input_errors([f], config, continuous=continuous):
                return file_links(plan, f, wanted)

        links = _job(sc, linked, chosen.link_files)
    g = global_steps(plan, split_all, keys, links)
    laps.lap("global_steps")
    return g, split_all, len(groups)


def _schemas(plan: BucketPlan, used: list[InputFile]) -> dict[str, pl.Schema]:
    from etl.io import empty_table

    config, continuous = plan.config, plan.space.continuous
    ev, od = scan_pieces(used, config, continuous=continuous)
    return {"events": pl.concat(ev or [empty_table("events", config, continuous=continuous)])
            .collect_schema(),
            "orders": pl.concat(od or [empty_table("orders", config, continuous=continuous)])
            .collect_schema()}


def _publish(
    sc: SparkContext, plan: BucketPlan, out_root: Path, day: dt.date | None,
    space: ActionSpace, spec: FeatureSpec, scaling: Scaling, by_date: dict[str, Any],
    inputs: list[dict[str, str]], collect: bool,
    manifest: Callable[[list[str]], dict[str, Any]],
) -> EtlResult:
    """A backfill: one task per output date writes into a staging folder, the driver adds the
    manifest and renames it into place. Nightly: the day's file on the driver."""
    n_feat = len(spec.names)
    t_schema = transition_schema(n_feat, space.continuous)
    if day is not None:
        got = {kind: [p for d in stored_dates(plan, kind) for p in stored_pieces(plan, kind, d)]
               for kind in ("transitions", "quarantine")}
        trans = date_frame("transitions", got["transitions"], scaling, n_feat) \
            if got["transitions"] else pl.DataFrame(schema=t_schema)
        quar = date_frame("quarantine", got["quarantine"], None, n_feat) \
            if got["quarantine"] else pl.DataFrame(schema=QUARANTINE_SCHEMA)
        data = write_day(out_root, day, trans, quar, plan.config, space, spec, scaling,
                         by_date, inputs)
        written = {"transitions": trans.height, "quarantine": quar.height}
        log.info("etl done", engine="spark", out=str(out_root), counts=totals(by_date),
                 **written)
        if not collect:
            trans, quar = pl.DataFrame(schema=t_schema), pl.DataFrame(schema=QUARANTINE_SCHEMA)
        return EtlResult(trans, quar, data, written)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_root.with_name(f".{out_root.name}.tmp-{uuid.uuid4().hex}")
    jobs = [(kind, d) for kind in ("transitions", "quarantine") for d in stored_dates(plan, kind)]

    def write(job: tuple[str, str]) -> int:
        kind, d = job
        return publish_date(tmp, kind, d, stored_pieces(plan, kind, d), scaling, n_feat).height

    try:
        tmp.mkdir(parents=True)
        rows = _job(sc, write, jobs)
        data = manifest([d for k, d in jobs if k == "transitions"])
        write_json(data, tmp / MANIFEST)
        swap_dir(tmp, out_root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    written = {kind: sum(r for (k, _), r in zip(jobs, rows, strict=True) if k == kind)
               for kind in ("transitions", "quarantine")}
    log.info("etl done", engine="spark", out=str(out_root), counts=data["counts"], **written)
    if not collect:
        return EtlResult(pl.DataFrame(schema=t_schema), pl.DataFrame(schema=QUARANTINE_SCHEMA),
                         data, written)
    return EtlResult(_read_back(out_root / "transitions", t_schema, ["episode_id", "step"]),
                     _read_back(out_root / "quarantine", QUARANTINE_SCHEMA,
                                ["source_table", "source_file", "row_number"]), data, written)


def _read_back(root: Path, schema: dict[str, pl.DataType], sort: list[str]) -> pl.DataFrame:
    files = sorted(root.glob("date=*/*.parquet"))
    if not files:
        return pl.DataFrame(schema=schema)
    return pl.read_parquet(files, hive_partitioning=False).sort(sort)


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
