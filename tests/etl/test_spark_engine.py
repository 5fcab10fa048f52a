"""The Spark engine against the local engine: identical transitions, quarantine and manifest.

The contract (issue 7): for the same input, ``run_etl_spark`` in local mode writes exactly what
``run_etl`` writes. The input is a small simulated log with every kind of dirt (duplicates, late
events, bots, anonymous sessions stitched by login, reversals, midnight sessions) plus a CSV file
of broken rows, so every stage (reader, dedup, identity map, quarantine, scaling) is exercised
across several Spark partitions. One Spark session (``local[1]``, fast-start JVM flags) serves
the module.

Without pyspark or Java these tests fail with the install instructions, unless
``ECOMRL_SKIP_SPARK=1``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl import EtlConfig, EtlError, run_etl
from etl.spark_engine import (
    SparkConfig,
    check_spark_available,
    map_partitions,
    quarantine_arrow_schema,
    run_etl_spark,
    spark_session,
    transitions_arrow_schema,
)
from simulator.config import DirtConfig, SimulatorConfig
from simulator.logs import simulate, write_raw_logs

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SETTINGS = SparkConfig(master="local[1]", partitions=2)
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support:FutureWarning")


def test_file_schemas_are_explicit() -> None:
    """Transition files: timestamp[us, UTC] and fixed-size float32 observations (no Spark)."""
    schema = transitions_arrow_schema(7, continuous=False)
    assert schema.field("decision_ts").type == pa.timestamp("us", tz="UTC")
    assert schema.field("observation").type == pa.list_(pa.float32(), 7)
    assert schema.field("action").type == pa.int32()
    assert schema.field("step").type == pa.int32()
    continuous = transitions_arrow_schema(7, continuous=True)
    assert continuous.field("action").type == pa.list_(pa.float32(), 1)
    assert quarantine_arrow_schema().field("partition_date").type == pa.date32()


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    if os.environ.get("ECOMRL_SKIP_SPARK") == "1":
        pytest.skip("ECOMRL_SKIP_SPARK=1")
    try:
        check_spark_available()
    except EtlError as exc:
        pytest.fail(f"{exc} (or set ECOMRL_SKIP_SPARK=1 to skip the Spark tests)")
    session = spark_session(SETTINGS)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dirty simulated log (parquet, hive date partitions) plus a CSV file of broken rows."""
    root = tmp_path_factory.mktemp("spark") / "raw"
    config = SimulatorConfig(n_users=60, days=10, seed=7, dirt=DirtConfig.all_on())
    write_raw_logs(simulate(config), root, truth=False)
    ts = dt.datetime(2026, 1, 7, 12, tzinfo=dt.UTC)
    broken = pl.DataFrame({
        "event_id": [None, "x-1", "x-2", "x-3"],
        "event_ts": [ts.isoformat()] * 3 + ["2026-01-07 12:00:00"],  # the last: no time zone
        "user_id": ["u-x", "u-x", None, "u-x"],
        "anonymous_id": [None, None, None, None],
        "session_id": ["s-x", "s-x", None, "s-x"],
        "event_type": ["page_view", "teleport", "page_view", "page_view"],
    })
    broken.write_csv(root / "events" / "date=2026-01-07" / "part-00001.csv")
    return root


def _narrow(schema: pa.Schema) -> pa.Schema:
    """The schema with 64-bit string offsets read as plain strings (polars writes large ones)."""
    return pa.schema([f.with_type(pa.string()) if f.type == pa.large_string() else f
                      for f in schema])


def _files(root: Path) -> dict[str, pa.Table]:
    return {p.relative_to(root).as_posix(): pq.read_table(p)
            for p in sorted(root.glob("*/date=*/*.parquet"))}


@pytest.mark.spark
@pytest.mark.slow
def test_backfill_and_nightly_equal_local(spark: SparkSession, raw: Path, tmp_path: Path) -> None:
    config = EtlConfig()
    local = run_etl(raw, tmp_path / "local", config)
    timings: dict[str, float] = {}
    remote = run_etl_spark(raw, tmp_path / "spark", config, spark=spark, settings=SETTINGS,
                           timings=timings)
    # the input is rich enough to mean something
    counts = local.manifest["counts"]
    assert local.transitions.height > 100
    assert local.quarantine.height == 4
    assert counts["events"]["dropped"].get("duplicate_event_id", 0) > 0
    assert counts["events"]["dropped"].get("bot", 0) > 0

    assert remote.transitions.equals(local.transitions)
    assert remote.quarantine.equals(local.quarantine)
    assert remote.manifest == local.manifest
    # the files: same layout, same bytes (both engines use the local writer), the Arrow types
    got, want = _files(tmp_path / "spark"), _files(tmp_path / "local")
    assert sorted(got) == sorted(want)
    for name, table in got.items():
        assert pl.DataFrame(table).equals(pl.DataFrame(want[name])), name
        assert (tmp_path / "spark" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    n_feat = len(local.manifest["feature_names"])
    for name, table in got.items():
        expected = (transitions_arrow_schema(n_feat, continuous=False)
                    if name.startswith("transitions") else quarantine_arrow_schema())
        assert _narrow(table.schema.remove_metadata()) == expected, name
    assert set(timings) >= {"session", "split", "global_steps", "transform", "write"}
    assert not list(tmp_path.glob(".*"))  # no work or staging folder left

    # nightly: one decision date, reusing the stored scaling, replaces that day only
    day = sorted(local.transitions["decision_ts"].dt.date().unique())[3]
    local_day = run_etl(raw, tmp_path / "local", config, date=day)
    remote_day = run_etl_spark(raw, tmp_path / "spark", config, date=day, spark=spark,
                               settings=SETTINGS)
    assert local_day.transitions.height > 0
    assert remote_day.transitions.equals(local_day.transitions)
    assert remote_day.quarantine.equals(local_day.quarantine)
    assert remote_day.manifest == local_day.manifest
    part = f"transitions/date={day.isoformat()}/part-00000.parquet"
    assert (tmp_path / "spark" / part).read_bytes() == (tmp_path / "local" / part).read_bytes()


@pytest.mark.spark
@pytest.mark.slow
def test_continuous_actions_equal_local(spark: SparkSession, tmp_path: Path) -> None:
    """Continuous discount rates: the action column is a fixed-size float32 list of 1."""
    raw = tmp_path / "raw"
    config = SimulatorConfig(action_space="continuous", n_users=25, days=6, seed=11)
    write_raw_logs(simulate(config), raw, truth=False)
    local = run_etl(raw, tmp_path / "local", EtlConfig())
    work = tmp_path / "work"  # a folder of the user's: only the run's own subfolder is removed
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    remote = run_etl_spark(raw, tmp_path / "spark", EtlConfig(), spark=spark, settings=SETTINGS,
                           work_dir=work)
    assert [p.name for p in work.iterdir()] == ["keep.txt"]
    assert local.transitions.height > 0
    assert local.transitions.schema["action"] == pl.Array(pl.Float32, 1)
    assert remote.transitions.equals(local.transitions)
    assert remote.manifest == local.manifest


@pytest.mark.spark
def test_map_partitions_calls_once_per_partition(spark: SparkSession) -> None:
    """The partition's batches are concatenated: one call sees all of its rows."""
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "50")
    try:
        df = spark.range(0, 1000).repartition(3)
        schema = pa.schema([pa.field("rows", pa.int64()), pa.field("calls", pa.int64())])

        def fn(table: pa.Table) -> pa.Table:
            return pa.table({"rows": [table.num_rows], "calls": [1]}, schema=schema)

        out = map_partitions(df, fn, schema).toArrow().to_pylist()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert len(out) == 3
    assert sum(r["rows"] for r in out) == 1000
    assert all(r["rows"] > 50 for r in out)  # more than one Arrow batch each


@pytest.mark.spark
def test_column_error_in_a_task_is_an_etl_error(spark: SparkSession, tmp_path: Path) -> None:
    """A file without a required column fails the run with the file and column named."""
    root = tmp_path / "raw"
    ts = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    for table, frame in {
        "events": pl.DataFrame({"event_id": ["e1"], "user_id": ["u1"], "event_type": ["other"]}),
        "orders": pl.DataFrame({"order_id": ["o1"], "order_ts": [ts], "quantity": [1],
                                "unit_price": [1.0], "user_id": ["u1"]}),
    }.items():
        path = root / table / "date=2026-01-05" / "part-00000.parquet"
        path.parent.mkdir(parents=True)
        frame.write_parquet(path)
    with pytest.raises(EtlError, match=r"events/date=2026-01-05/part-00000.parquet.*event_ts"):
        run_etl_spark(root, tmp_path / "out", spark=spark, settings=SETTINGS)
    assert not (tmp_path / "out").exists()


@pytest.mark.spark
def test_cli_engine_flag_runs_spark_and_writes_the_local_manifest(
    spark: SparkSession, raw: Path, tmp_path: Path
) -> None:
    """``ecomrl etl --engine spark`` (the module's session is reused) == the local engine."""
    import json

    from ecomrl.cli import main

    assert main(["etl", "--engine", "spark", "--master", "local[1]", "--input", str(raw),
                 "--out", str(tmp_path / "cli")]) == 0
    local = run_etl(raw, tmp_path / "local", EtlConfig())
    written = json.loads((tmp_path / "cli" / "_manifest.json").read_text())
    assert written["counts"] == local.manifest["counts"]
    assert written["config"] == local.manifest["config"]
    got, want = _files(tmp_path / "cli"), _files(tmp_path / "local")
    assert sorted(got) == sorted(want)
