"""Bucketed runs on files: spilled buckets, the streamed scaling fit, auto bucket counts, the
file-by-file global steps and the clean-up of temporary files."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from etl import EtlConfig, build_transitions, run_etl
from etl.buckets import MemoryPieces, fit_scaling
from etl.core import RAW_OBS, PartitionOutput, empty_counts, empty_quarantine, global_inputs
from etl.features import Scaling
from etl.io import action_is_continuous, discover, read_tables, scan_pieces
from etl.validate import ActionSpace
from tests.etl.synth import Logs, make_logs, write_raw


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = make_logs(30, 20, seed=11)
    # duplicates in later partitions (re-sent a day late), an invalid row
    late = logs.events.slice(60, 6).with_columns(
        pl.col("ingest_ts") + dt.timedelta(days=1)
    )
    events = pl.concat([logs.events, late]).with_columns(
        pl.when(pl.col("event_id") == "e0000200").then(pl.lit("teleport"))
        .otherwise(pl.col("event_type")).alias("event_type")
    )
    return write_raw(Logs(events, logs.orders), tmp_path_factory.mktemp("raw"))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*.parquet"))}


def test_auto_and_spilled_buckets_write_the_same_bytes(raw: Path, tmp_path: Path) -> None:
    one = run_etl(raw, tmp_path / "one", EtlConfig(n_buckets=1))
    rows = one.counts["events"]["rows_in"] + one.counts["orders"]["rows_in"]
    auto = EtlConfig(events_per_bucket=rows // 6)
    assert auto.n_buckets == "auto" and auto.bucket_count(rows) == 7
    many = run_etl(raw, tmp_path / "auto", auto, collect=False)
    assert _files(tmp_path / "auto") == _files(tmp_path / "one")
    # the whole manifest, the scaling fitted from the spilled buckets too, bit for bit
    assert many.manifest == one.manifest
    assert json.loads((tmp_path / "auto" / "_manifest.json").read_text()) == one.manifest
    assert "n_buckets" not in one.manifest["config"]
    # collect=False: the manifest only
    assert many.transitions.height == 0 and many.quarantine.height == 0
    assert many.n_transitions == one.n_transitions == one.transitions.height
    assert many.written == {"transitions": one.transitions.height, "quarantine": 1}
    assert one.transitions.height > 100 and one.quarantine.height == 1


def test_streamed_fit_equals_numpy_on_the_sorted_matrix() -> None:
    rng = np.random.default_rng(3)
    names = [f"f{i}" for i in range(5)]
    outputs = MemoryPieces()
    frames = []
    for b in range(6):  # buckets of disjoint users, each sorted by (episode_id, step)
        n = int(rng.integers(0, 400))
        users = rng.integers(0, 50, n)
        frame = pl.DataFrame({
            "episode_id": [f"u{b}-{u:03d}" for u in users],
            "step": rng.integers(0, 9, n).astype(np.int32),
            "decision_ts": [dt.datetime(2026, 1, 1 + int(d), tzinfo=dt.UTC)
                            for d in rng.integers(0, 5, n)],
            # magnitudes far apart: any other summation order changes the last bits
            RAW_OBS: rng.standard_normal((n, 5)) * 10.0 ** rng.integers(-6, 9, (n, 5)),
        }, schema_overrides={RAW_OBS: pl.Array(pl.Float64, 5)}).unique(
            ["episode_id", "step"]).sort("episode_id", "step")
        frames.append(frame)
        outputs.put(PartitionOutput(frame, empty_quarantine(), empty_counts()))
    everything = pl.concat(frames).sort("episode_id", "step")
    matrix = everything[RAW_OBS].to_numpy().reshape(everything.height, 5)
    want = Scaling.fit(names, matrix)
    # the pieces are per bucket and decision date: each sorted, their users interleaved
    assert len(outputs.transitions()) > 6
    for n_ranges in (1, 4, 50):
        got = fit_scaling(names, outputs.transitions(), n_ranges)
        assert np.array_equal(got.mean, want.mean) and np.array_equal(got.std, want.std)
        assert got.to_manifest() == want.to_manifest()


def test_global_steps_file_by_file_equal_one_pass(raw: Path) -> None:
    config = EtlConfig()
    files = discover(raw)
    continuous = action_is_continuous(files, config)
    space = ActionSpace.from_config(config, continuous)
    ev, od = read_tables(files, config, continuous=continuous)
    whole = global_inputs(ev.collect().lazy(), od.collect().lazy(), config, space)
    ev_p, od_p = scan_pieces(files, config, continuous=continuous)
    assert len(ev_p) > 10
    pieces = global_inputs(ev_p, od_p, config, space)
    assert pieces.links.equals(whole.links)
    assert whole.duplicates.height == 6  # the re-sent rows, found across partitions
    order = ["source_table", "_source_file", "_row_nr"]
    assert pieces.duplicates.sort(order).equals(whole.duplicates.sort(order))
    assert pieces.data_end_us == whole.data_end_us
    # a nightly run stitches over other files than it transforms
    linked = global_inputs(ev_p[:3], od_p[:3], config, space, link_events=ev_p,
                           link_orders=od_p)
    assert linked.links.equals(whole.links)
    # threads give the same answer; stitched_only keeps exactly the links that rows without a
    # user_id look up, as in the whole map
    threaded = global_inputs(ev_p, od_p, config, space, workers=3)
    assert threaded.links.equals(whole.links)
    assert threaded.duplicates.sort(order).equals(whole.duplicates.sort(order))
    small = global_inputs(ev_p, od_p, config, space, stitched_only=True, workers=2)
    rows = pl.concat([ev.select("anonymous_id", "user_id").collect(),
                      od.select("anonymous_id", "user_id").collect()])
    looked_up = rows.filter(pl.col("user_id").is_null())["anonymous_id"].drop_nulls().unique()
    want = whole.links.filter(pl.col("anonymous_id").is_in(looked_up.implode()))
    assert 0 < small.links.height == want.height < whole.links.height
    assert small.links.equals(want)


def test_worker_threads_write_the_same_bytes(raw: Path, tmp_path: Path) -> None:
    one = run_etl(raw, tmp_path / "one", EtlConfig(n_buckets=1, workers=1))
    for workers in (1, 3):
        got = run_etl(raw, tmp_path / f"w{workers}", EtlConfig(n_buckets=5, workers=workers),
                      collect=False)
        assert _files(tmp_path / f"w{workers}") == _files(tmp_path / "one")
        assert got.manifest == one.manifest
    assert "workers" not in one.manifest["config"]
    mem = build_transitions(*_frames(raw), EtlConfig(n_buckets=4, workers=2))
    assert mem.transitions.equals(one.transitions)


def _frames(raw: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    files = discover(raw)
    ev, od = read_tables(files, EtlConfig(), continuous=False)
    drop = ["_naive_ts", "_source_file", "_row_nr", "_part_date"]
    return ev.collect().drop(drop, strict=False), od.collect().drop(drop, strict=False)


def test_temporary_files_are_removed_when_a_run_fails(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import etl.buckets as buckets

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    real = buckets.transform_partition
    calls = {"n": 0}
    seen: list[int] = []

    def dies(*args: object, **kwargs: object) -> PartitionOutput:
        calls["n"] += 1
        seen.append(sum(1 for _ in scratch.rglob("*.arrow")))
        if calls["n"] > 2:
            raise RuntimeError("worker lost")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(buckets, "transform_partition", dies)
    with pytest.raises(RuntimeError, match="worker lost"):
        run_etl(raw, tmp_path / "out", EtlConfig(n_buckets=4))
    assert seen[0] > 0  # the buckets were spilled there
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "out").exists()


def test_bucketed_nightly_runs_equal_the_backfill(raw: Path, tmp_path: Path) -> None:
    full = run_etl(raw, tmp_path / "full", EtlConfig(n_buckets=1))
    days = sorted({d.isoformat() for d in full.transitions["decision_ts"].dt.date()})
    cfg = EtlConfig(n_buckets=3, scaling_from=str(tmp_path / "full"))
    want = _files(tmp_path / "full")
    for day in (days[0], days[len(days) // 2]):
        res = run_etl(raw, tmp_path / "nightly", cfg, date=day)
        part = f"transitions/date={day}/part-00000.parquet"
        assert _files(tmp_path / "nightly")[part] == want[part]
        assert res.n_transitions == res.transitions.height > 0
        assert res.manifest["counts_by_date"][day] == full.manifest["counts_by_date"][day]


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated log with every kind of dirt: anonymous rows stitched at login (they wait
    for the identity map before they are routed), duplicates, bots, late rows."""
    from simulator.config import DirtConfig, SimulatorConfig
    from simulator.logs import simulate, write_raw_logs

    root = tmp_path_factory.mktemp("dirty") / "raw"
    config = SimulatorConfig(n_users=60, days=10, seed=7, dirt=DirtConfig.all_on())
    write_raw_logs(simulate(config), root, truth=False)
    return root


def test_split_routes_every_row_once_in_input_order(dirty: Path, tmp_path: Path) -> None:
    from etl.buckets import (
        BucketPlan,
        bucket_keys,
        global_steps,
        load_bucket,
        pending_keys,
        repeated_hashes,
        route_pending,
        split_files,
    )
    from etl.clean import LINK_USER, user_key_expr

    config = EtlConfig()
    files = discover(dirty)
    space = ActionSpace.from_config(config, False)
    order = tuple(f.relpath for t in ("events", "orders") for f in files if f.table == t)
    plan = BucketPlan(config, space, 5, 2**62, str(tmp_path), order)
    # two groups, as Spark tasks would split them
    parts = [split_files(plan, files[:9], 0), split_files(plan, files[9:], 1, workers=2)]
    split = type(parts[0]).merge(parts)
    assert split.pending_ids.len() > 0  # anonymous rows that wait for the identity map
    repeated = repeated_hashes(split.hashes)
    assert repeated["events"].size > 0
    keys = [pending_keys(plan, 0, repeated), pending_keys(plan, 1, repeated),
            *[bucket_keys(plan, b, split.pending_ids, repeated) for b in range(5)]]
    g = global_steps(plan, split, keys)
    # the same identity map and duplicates as the global steps of the whole input
    ev, od = read_tables(files, config, continuous=False)
    whole = global_inputs(ev.collect().lazy(), od.collect().lazy(), config, space,
                          stitched_only=True, as_of_end_us=2**62)
    assert g.links.sort("anonymous_id").equals(whole.links.sort("anonymous_id"))
    by = ["source_table", "_source_file", "_row_nr"]
    assert g.duplicates.sort(by).equals(whole.duplicates.sort(by))
    assert g.data_end_us == whole.data_end_us
    route_pending(plan, g.links, 0)
    route_pending(plan, g.links, 1)
    schema = ev.collect_schema()
    buckets = [load_bucket(plan, "events", b, schema) for b in range(5)]
    assert sum(b.height for b in buckets) == ev.collect().height
    rank = {name: i for i, name in enumerate(order)}
    users = []
    for b, rows in enumerate(buckets):
        pos = [(rank[f], r) for f, r in zip(rows["_source_file"], rows["_row_nr"], strict=True)]
        assert pos == sorted(pos), b  # input order, pending rows merged back in place
        keyed = rows.join(g.links.select("anonymous_id", LINK_USER), on="anonymous_id",
                          how="left")
        users.append(set(keyed.select(user_key_expr().fill_null(""))[:, 0].to_list()))
    assert all(not (users[i] & users[j]) for i in range(5) for j in range(i + 1, 5))


def test_dirty_logs_in_buckets_write_the_same_bytes(dirty: Path, tmp_path: Path) -> None:
    one = run_etl(dirty, tmp_path / "one", EtlConfig(n_buckets=1))
    assert one.counts["events"]["dropped"].get("duplicate_event_id", 0) > 0
    for buckets, workers in ((4, 1), (9, 2)):
        got = run_etl(dirty, tmp_path / f"b{buckets}", EtlConfig(n_buckets=buckets,
                                                                 workers=workers))
        assert _files(tmp_path / f"b{buckets}") == _files(tmp_path / "one")
        assert got.manifest == one.manifest
        assert got.transitions.equals(one.transitions)  # collected from memory, not read back
        assert got.quarantine.equals(one.quarantine)
