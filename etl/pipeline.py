"""The ETL's entry points: in memory (:func:`build_transitions`) and on files (:func:`run_etl`).

The local engine hashes stitched users into ``n_buckets`` buckets and runs
:func:`etl.core.transform_partition` on each in turn, then concatenates and sorts the results, so
the output does not depend on the number of buckets and peak memory follows the bucket size.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import structlog
from tqdm import tqdm

from etl.attribute import reward_kind
from etl.clean import LINK_TS, LINK_USER, user_key_expr
from etl.config import EtlConfig
from etl.core import (
    RAW_OBS,
    GlobalInputs,
    PartitionOutput,
    empty_counts,
    empty_quarantine,
    global_inputs,
    normalize_frame,
    transform_partition,
)
from etl.episodes import episode_mode
from etl.errors import EtlError
from etl.features import FeatureSpec, Scaling
from etl.io import InputFile, action_is_continuous, discover, read_tables, sha256
from etl.schema import PART_DATE, SCHEMA_VERSION
from etl.validate import ActionSpace

log = structlog.get_logger(__name__)
MANIFEST = "_manifest.json"
_BUCKET = "_bucket"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass
class EtlResult:
    """Transitions, quarantine rows and the manifest (as written to ``_manifest.json``)."""

    transitions: pl.DataFrame
    quarantine: pl.DataFrame
    manifest: dict[str, Any]

    @property
    def counts(self) -> dict[str, Any]:
        """Row accounting per table: rows_in, used, quarantined and dropped by reason."""
        counts: dict[str, Any] = self.manifest["counts"]
        return counts

    def accounting(self) -> pl.DataFrame:
        """The row accounting as a tidy frame: ``table, outcome, reason, rows``.

        Per table, ``rows in`` equals ``used`` plus every ``quarantined`` and ``dropped`` row;
        ``decisions / excluded`` lists decision events that make no transition (bot sessions).
        """
        rows: list[tuple[str, str, str, int]] = []
        for table, entry in self.counts.items():
            if table == "decisions":
                rows += [(table, "excluded", r, n) for r, n in entry.get("excluded", {}).items()]
                continue
            rows.append((table, "rows in", "", entry["rows_in"]))
            rows.append((table, "used", "", entry["used"]))
            for outcome in ("quarantined", "dropped"):
                rows += [(table, outcome, r, n) for r, n in entry[outcome].items()]
        return pl.DataFrame(
            rows, schema={"table": pl.String, "outcome": pl.String, "reason": pl.String,
                          "rows": pl.Int64}, orient="row",
        )


# ----------------------------------------------------------------------------- local engine
def run_local(
    events: pl.LazyFrame, orders: pl.LazyFrame, g: GlobalInputs, config: EtlConfig,
    *, spill: bool = False,
) -> PartitionOutput:
    """Run the core transform per user-hash bucket and concatenate the sorted results.

    With ``spill`` (inputs scanned from files), one streaming pass first writes each bucket's
    rows to a temporary Parquet folder, so that the input is read once and only one bucket is
    ever in memory; otherwise each bucket is filtered from the (in-memory) frames.
    """
    n = config.n_buckets
    links = g.links.lazy()

    def bucketed(lf: pl.LazyFrame) -> pl.LazyFrame:
        key = user_key_expr().fill_null("")
        return (
            lf.join(links, on="anonymous_id", how="left")  # row order is not meaningful
            .with_columns((key.hash(seed=0) % n).cast(pl.UInt32).alias(_BUCKET))
            .drop(LINK_USER, LINK_TS)
        )

    if n == 1:
        ev, od = pl.collect_all([events, orders])
        out = transform_partition(ev, od, g, config)
        return PartitionOutput(
            out.transitions, out.quarantine.sort("source_table", "source_file", "row_number"),
            out.counts,
        )
    outs: list[PartitionOutput] = []
    with tempfile.TemporaryDirectory(prefix="ecomrl-etl-buckets-") as tmp:
        schemas = {"events": events.collect_schema(), "orders": orders.collect_schema()}
        if spill:
            for table, lf in (("events", events), ("orders", orders)):
                bucketed(lf).sink_parquet(
                    pl.PartitionBy(Path(tmp) / table, key=_BUCKET, include_key=False),
                    mkdir=True, maintain_order=False, compression="lz4",
                )
        else:
            ev_b, od_b = bucketed(events), bucketed(orders)

        def load(table: str, b: int) -> pl.DataFrame:
            if not spill:
                lf = ev_b if table == "events" else od_b
                return lf.filter(pl.col(_BUCKET) == b).drop(_BUCKET).collect()
            folder = Path(tmp) / table / f"{_BUCKET}={b}"
            if not folder.is_dir():
                return pl.DataFrame(schema=schemas[table])
            frame = pl.read_parquet(folder / "*.parquet", hive_partitioning=False)
            return frame.cast(dict(schemas[table]))  # type: ignore[arg-type]

        for b in tqdm(range(n), desc="etl buckets", leave=False, disable=None):
            ev, od = load("events", b), load("orders", b)
            outs.append(transform_partition(ev, od, g, config))
            log.debug("bucket done", bucket=b, events=ev.height,
                      decisions=outs[-1].transitions.height)
    return PartitionOutput(
        pl.concat([o.transitions for o in outs]).sort("episode_id", "step"),
        pl.concat([empty_quarantine(), *[o.quarantine for o in outs]]).sort(
            "source_table", "source_file", "row_number"
        ),
        pl.concat([empty_counts(), *[o.counts for o in outs]]),
    )


def _finish(
    out: PartitionOutput, spec: FeatureSpec, scaling: Scaling | None
) -> tuple[pl.DataFrame, Scaling]:
    """Fit the scaling on the (sorted) raw features when none is given, and apply it."""
    trans = out.transitions
    if RAW_OBS not in trans.columns:
        assert scaling is not None
        return trans, scaling
    raw = trans[RAW_OBS].to_numpy().reshape(trans.height, len(spec.names)).astype(np.float64)
    if scaling is None:
        scaling = Scaling.fit(spec.names, raw)
    obs = pl.Series("observation", scaling.apply(raw), dtype=pl.Array(pl.Float32, len(spec.names)))
    idx = trans.columns.index(RAW_OBS)
    return trans.drop(RAW_OBS).insert_column(idx, obs), scaling


# ----------------------------------------------------------------------------- accounting
def _tally(counts: pl.DataFrame, rows_in: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per-date accounting ``{date: {table: {rows_in, used, quarantined, dropped}}}``; checks it
    reconciles exactly."""
    by_date: dict[str, dict[str, Any]] = {}
    for row in rows_in.iter_rows(named=True):
        entry = by_date.setdefault(row["date"].isoformat(), {})
        entry[row["table"]] = {"rows_in": row["n"], "used": 0, "quarantined": {}, "dropped": {}}
    agg = counts.group_by("table", "date", "outcome", "reason").agg(pl.col("n").sum()).sort(
        "table", "date", "outcome", "reason"
    )
    for row in agg.iter_rows(named=True):
        day = row["date"].isoformat()
        if row["table"] == "decisions":  # decisions that make no transition (not input rows)
            ex = by_date.setdefault(day, {}).setdefault("decisions", {"excluded": {}})
            ex["excluded"][row["reason"]] = row["n"]
            continue
        entry = by_date.setdefault(day, {}).setdefault(
            row["table"], {"rows_in": 0, "used": 0, "quarantined": {}, "dropped": {}}
        )
        if row["outcome"] == "used":
            entry["used"] += row["n"]
        else:
            entry[row["outcome"]][row["reason"]] = row["n"]
    for day, tables in by_date.items():
        for table, c in tables.items():
            if table == "decisions":
                continue
            total = c["used"] + sum(c["quarantined"].values()) + sum(c["dropped"].values())
            if total != c["rows_in"]:
                raise RuntimeError(
                    f"row accounting does not reconcile for {table} on {day}: "
                    f"{c['rows_in']} in, {total} accounted for"
                )
    return dict(sorted(by_date.items()))


def _totals(by_date: dict[str, dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    for tables in by_date.values():
        for table, c in tables.items():
            if table == "decisions":
                ex = totals.setdefault("decisions", {"excluded": {}})["excluded"]
                for reason, n in c["excluded"].items():
                    ex[reason] = ex.get(reason, 0) + n
                continue
            t = totals.setdefault(
                table, {"rows_in": 0, "used": 0, "quarantined": {}, "dropped": {}}
            )
            t["rows_in"] += c["rows_in"]
            t["used"] += c["used"]
            for kind in ("quarantined", "dropped"):
                for reason, n in c[kind].items():
                    t[kind][reason] = t[kind].get(reason, 0) + n
    for name, t in totals.items():
        if name == "decisions":
            continue
        t["quarantined"] = dict(sorted(t["quarantined"].items()))
        t["dropped"] = dict(sorted(t["dropped"].items()))
    return dict(sorted(totals.items()))


def _check_quarantine(totals: dict[str, Any], config: EtlConfig) -> None:
    tables = [t for name, t in totals.items() if name != "decisions"]
    rows = sum(t["rows_in"] for t in tables)
    bad = sum(sum(t["quarantined"].values()) for t in tables)
    if rows and bad / rows > config.max_quarantine_share:
        reasons: dict[str, int] = {}
        for t in tables:
            for r, n in t["quarantined"].items():
                reasons[r] = reasons.get(r, 0) + n
        top = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:3])
        raise EtlError(
            f"{bad} of {rows} rows ({bad / rows:.1%}) failed validation, above "
            f"max_quarantine_share={config.max_quarantine_share:.1%} ({top}); nothing written"
        )


def _rows_in(frames: Iterable[tuple[str, pl.LazyFrame]]) -> pl.DataFrame:
    parts = [
        lf.group_by(pl.col(PART_DATE).alias("date")).agg(pl.len().cast(pl.Int64).alias("n"))
        .select(pl.lit(table).alias("table"), "date", "n")
        for table, lf in frames
    ]
    return pl.concat(pl.collect_all(parts)).sort("table", "date")


def _manifest(
    config: EtlConfig,
    space: ActionSpace,
    spec: FeatureSpec,
    scaling: Scaling,
    by_date: dict[str, dict[str, Any]],
    inputs: list[dict[str, str]],
    dates: list[str],
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "scenario": config.scenario,
        "episode_mode": episode_mode(config),
        "gamma": config.gamma,
        "feature_names": spec.names,
        "scaling": scaling.to_manifest(),
        "action_space": space.to_manifest(),
        "reward": {
            "kind": reward_kind(config),
            "weights": config.reward_weights.model_dump(),
            "settlement_days": config.settlement_days,
        },
        "inputs": inputs,
        "counts": _totals(by_date),
        "counts_by_date": by_date,
        "date_range": [dates[0], dates[-1]] if dates else None,
        # how it ran (engine, Spark settings) is not what it means: both engines write the
        # same manifest
        "config": config.model_dump(mode="json", exclude={"engine", "spark"}),
    }


# ----------------------------------------------------------------------------- in memory
def build_transitions(
    events: pl.DataFrame,
    orders: pl.DataFrame,
    config: EtlConfig | None = None,
    *,
    scaling: Scaling | None = None,
    data_end: dt.datetime | None = None,
) -> EtlResult:
    """The whole ETL in memory: raw events and orders (raw-log schema) -> transitions.

    Pure: no file is read or written. ``scaling`` reuses a fitted scaling (else it is fitted on
    these decisions); ``data_end`` is the end of the data for churn and timeouts (default: the
    latest timestamp in the input).
    """
    config = config or EtlConfig()
    continuous = (
        config.action_space == "continuous"
        if config.action_space != "auto"
        else "action" in events.columns and events.schema["action"].is_float()
    )
    space = ActionSpace.from_config(config, continuous)
    spec = FeatureSpec.from_config(config, space)
    ev = normalize_frame(events, "events", config, space)
    od = normalize_frame(orders, "orders", config, space)
    end_us = None if data_end is None else (data_end - _EPOCH) // dt.timedelta(microseconds=1)
    g = global_inputs(ev.lazy(), od.lazy(), config, space, data_end_us=end_us)
    g.scaling = scaling
    out = run_local(ev.lazy(), od.lazy(), g, config)
    by_date = _tally(out.counts, _rows_in([("events", ev.lazy()), ("orders", od.lazy())]))
    _check_quarantine(_totals(by_date), config)
    trans, fitted = _finish(out, spec, scaling)
    dates = _decision_dates(trans)
    manifest = _manifest(config, space, spec, fitted, by_date, [], dates)
    return EtlResult(trans, out.quarantine, manifest)


def _decision_dates(trans: pl.DataFrame) -> list[str]:
    if trans.height == 0:
        return []
    days = trans.select(pl.col("decision_ts").dt.date().unique().sort())["decision_ts"]
    return [d.isoformat() for d in days]


# ----------------------------------------------------------------------------- on files
def lookback_days(config: EtlConfig) -> int:
    """Partitions before day D a nightly run reads in full (features, sessions, lateness)."""
    return int(np.ceil(config.feature_window_days + config.max_lateness_days)) + 1


def lookahead_days(config: EtlConfig) -> int:
    """Partitions after day D a nightly run reads (settlement, churn, late arrivals)."""
    ahead = max(config.settlement_days, config.churn_days)
    return int(np.ceil(ahead + config.max_lateness_days)) + 1


def _data_end_us(files: list[InputFile]) -> int | None:
    dates = [f.part_date for f in files]
    if not dates or any(d is None for d in dates):
        return None
    last = max(d for d in dates if d is not None)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return (end - _EPOCH) // dt.timedelta(microseconds=1)


def _load_scaling(config: EtlConfig, out_root: Path, spec: FeatureSpec,
                  prefer_existing: bool) -> Scaling | None:
    path: Path | None = None
    if config.scaling_from is not None:
        path = Path(config.scaling_from)
        if path.is_dir():
            path = path / MANIFEST
        if not path.is_file():
            raise EtlError(f"scaling_from: manifest not found: {path}")
    elif prefer_existing and (out_root / MANIFEST).is_file():
        path = out_root / MANIFEST
    if path is None:
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("feature_names") != spec.names:
        raise EtlError(f"{path}: its features differ from this config's; cannot reuse its scaling")
    return Scaling.from_manifest(spec.names, manifest["scaling"])


def run_etl(
    input_root: Path | str,
    out_root: Path | str,
    config: EtlConfig | None = None,
    date: dt.date | str | None = None,
) -> EtlResult:
    """Read raw logs under ``input_root`` and write the transition dataset under ``out_root``.

    Without ``date``: a backfill of every decision, written atomically (a temporary folder
    renamed into place). With ``date``: the nightly run for decision date D, reading the
    partitions it needs around D (``lookback_days`` before, ``lookahead_days`` after, decision
    events of all earlier partitions for episode boundaries, identity links of all partitions),
    replacing ``transitions/date=D`` and ``quarantine/date=D`` atomically and updating the
    manifest. Returned frames hold this run's rows only.
    """
    config = config or EtlConfig()
    input_root, out_root = Path(input_root), Path(out_root)
    day = dt.date.fromisoformat(date) if isinstance(date, str) else date
    files = discover(input_root)
    continuous = action_is_continuous(files, config)
    space = ActionSpace.from_config(config, continuous)
    spec = FeatureSpec.from_config(config, space)
    data_end = _data_end_us(files)

    if day is None:
        used_files = files
        events, orders = read_tables(files, config, continuous=continuous)
        link_events, link_orders = events, orders
    else:
        lo = day - dt.timedelta(days=lookback_days(config))
        hi = day + dt.timedelta(days=lookahead_days(config))
        window = [f for f in files if f.part_date is None or lo <= f.part_date <= hi]
        older = [f for f in files if f.part_date is not None and f.part_date < lo
                 and f.table == "events"]
        used_files = window + older
        events, orders = read_tables(window, config, continuous=continuous)
        if older:
            old_ev, _ = read_tables(older, config, continuous=continuous)
            events = pl.concat([old_ev.filter(pl.col("event_type") == "decision"), events])
        link_events, link_orders = read_tables(files, config, continuous=continuous)

    log.info("etl start", files=len(used_files), date=str(day) if day else "all",
             buckets=config.n_buckets)
    if config.n_buckets == 1:  # one bucket: read the files once, keep the rows in memory
        ev_df, od_df = pl.collect_all([events, orders])
        events, orders = ev_df.lazy(), od_df.lazy()
        if day is None:
            link_events, link_orders = events, orders
    g = global_inputs(events, orders, config, space, data_end_us=data_end)
    if day is not None:
        full = global_inputs(link_events, link_orders, config, space, data_end_us=data_end)
        g.links = full.links
        g.output_dates = (day, day)
        g.count_dates = (day, day)
    g.scaling = _load_scaling(config, out_root, spec, prefer_existing=day is not None)
    out = run_local(events, orders, g, config, spill=config.n_buckets > 1)

    in_frames = [("events", events), ("orders", orders)]
    rows_in = _rows_in(in_frames)
    if day is not None:
        rows_in = rows_in.filter(pl.col("date") == day)
    by_date = _tally(out.counts, rows_in)
    _check_quarantine(_totals(by_date), config)
    trans, scaling = _finish(out, spec, g.scaling)
    inputs = [
        {"path": f.relpath, "table": f.table, "sha256": sha256(f.path)}
        for f in sorted(used_files, key=lambda f: f.relpath)
        if day is None or f.part_date == day
    ]
    if day is None:
        manifest = _manifest(config, space, spec, scaling, by_date, inputs,
                             _decision_dates(trans))
        _write_backfill(out_root, trans, out.quarantine, manifest)
    else:
        manifest = _write_day(out_root, day, trans, out.quarantine, config, space, spec,
                              scaling, by_date, inputs)
    totals = manifest["counts"] if day is None else _totals(by_date)
    log.info("etl done", transitions=trans.height, quarantined=out.quarantine.height,
             out=str(out_root), counts=totals)
    return EtlResult(trans, out.quarantine, manifest)


# ----------------------------------------------------------------------------- writing
def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path, compression="zstd", statistics=True)


def _write_partitions(frame: pl.DataFrame, root: Path, date_expr: pl.Expr) -> None:
    if frame.height == 0:
        return
    dated = frame.with_columns(date_expr.alias("_date"))
    for (day,), part in dated.group_by("_date", maintain_order=True):
        assert isinstance(day, dt.date)
        _write_parquet(part.drop("_date"), root / f"date={day.isoformat()}" / "part-00000.parquet")


def _write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _swap_dir(new: Path, target: Path) -> None:
    """Move ``new`` into place at ``target`` (the old one, if any, is removed afterwards)."""
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _write_backfill(out_root: Path, trans: pl.DataFrame, quarantine: pl.DataFrame,
                    manifest: dict[str, Any]) -> None:
    out_root = out_root.resolve()
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_root.with_name(f".{out_root.name}.tmp-{uuid.uuid4().hex}")
    try:
        tmp.mkdir(parents=True)
        _write_partitions(trans, tmp / "transitions", pl.col("decision_ts").dt.date())
        _write_partitions(quarantine, tmp / "quarantine", pl.col("partition_date"))
        _write_json(manifest, tmp / MANIFEST)
        _swap_dir(tmp, out_root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_partition(frame: pl.DataFrame, root: Path, day: dt.date) -> None:
    target = root / f"date={day.isoformat()}"
    if frame.height == 0:
        if target.exists():
            _swap_dir_remove(target)
        return
    tmp = root / f".date={day.isoformat()}.tmp-{uuid.uuid4().hex}"
    try:
        _write_parquet(frame, tmp / "part-00000.parquet")
        _swap_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_dir_remove(target: Path) -> None:
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
    os.replace(target, old)
    shutil.rmtree(old, ignore_errors=True)


def _write_day(
    out_root: Path,
    day: dt.date,
    trans: pl.DataFrame,
    quarantine: pl.DataFrame,
    config: EtlConfig,
    space: ActionSpace,
    spec: FeatureSpec,
    scaling: Scaling,
    by_date: dict[str, dict[str, Any]],
    inputs: list[dict[str, str]],
) -> dict[str, Any]:
    out_root.mkdir(parents=True, exist_ok=True)
    _replace_partition(trans, out_root / "transitions", day)
    _replace_partition(quarantine, out_root / "quarantine", day)
    path = out_root / MANIFEST
    old: dict[str, Any] = (
        json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    )
    merged_dates = {k: v for k, v in old.get("counts_by_date", {}).items()
                    if k != day.isoformat()}
    merged_dates.update(by_date)
    merged_dates = dict(sorted(merged_dates.items()))
    by_path = {i["path"]: i for i in old.get("inputs", [])}
    by_path.update({i["path"]: i for i in inputs})
    tdir = out_root / "transitions"
    dates = sorted(p.name.removeprefix("date=") for p in tdir.glob("date=*")) if tdir.is_dir() \
        else []
    manifest = _manifest(config, space, spec, scaling, merged_dates,
                         [by_path[k] for k in sorted(by_path)], dates)
    _write_json(manifest, path)
    return manifest


__all__ = ["EtlResult", "build_transitions", "lookahead_days", "lookback_days", "run_etl",
           "run_local"]
