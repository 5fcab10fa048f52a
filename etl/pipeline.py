"""The ETL's entry points: in memory (:func:`build_transitions`) and on files (:func:`run_etl`).

Both run :func:`etl.core.transform_partition` once per user-hash bucket (``EtlConfig.n_buckets``,
``auto``: one bucket per ``events_per_bucket`` input rows); the output never depends on the
number of buckets, nor on the number of worker threads (``EtlConfig.workers``). On files, with
several buckets, peak memory follows the bucket size rather than the input:

1. one pass over the input, batch by batch, appends each row to its bucket's temporary Arrow
   file and gives the global pieces in the same pass (rows in per date, duplicate-key hashes,
   data end, the anonymous ids looked up, file hashes); rows without a user_id but with an
   anonymous_id wait aside until the identity map is known (:mod:`etl.buckets`);
2. the global steps read back, memory-mapped, only the rows they need from the bucket files
   (identity-link pairs of the ids looked up, rows of repeated duplicate-key hashes); the
   waiting rows are then routed to their stitched user's bucket;
3. each bucket is loaded in input order and transformed; its outputs stay in memory, cut per
   output date (transitions, quarantine rows), with its counts;
4. the feature scaling is fitted from the raw features range by range of episode ids in
   (episode_id, step) order, summed in numpy's own order, so it is bit for bit the scaling of
   the whole matrix;
5. each output date's pieces are concatenated, sorted, scaled and written (no temporary output
   files); the folder is swapped into place atomically.

Steps 1 to 5 run ``workers`` pieces (batches, buckets, ranges, dates) at the same time in
threads (polars and numpy release the GIL), and consume the results in order, so that files,
spills and counts come out as with one worker. Peak memory is then about ``workers`` buckets'
transforms plus the outputs (about the size of the written dataset with float64 features).
With one bucket the input is read once into memory (fastest when it fits). The Spark engine
(:mod:`etl.spark_engine`) runs the same steps as Spark tasks.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import structlog
from tqdm import tqdm

from etl.buckets import (
    BucketPlan,
    MemoryPieces,
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
    transform_bucket,
)
from etl.clean import LINK_TS, LINK_USER, user_key_expr
from etl.config import EtlConfig
from etl.core import (
    RAW_OBS,
    GlobalInputs,
    PartitionOutput,
    action_counts,
    decision_actions,
    empty_counts,
    empty_quarantine,
    global_inputs,
    normalize_frame,
    require_decisions,
    transform_partition,
)
from etl.features import FeatureSpec, Scaling
from etl.io import (
    InputFile,
    action_is_continuous,
    discover,
    empty_table,
    folders_after,
    input_errors,
    run_date,
    run_date_end_us,
    scan_pieces,
    sha256,
)
from etl.output import (
    EPOCH,
    MANIFEST,
    apply_scaling,
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
    write_parquet,
)
from etl.schema import PART_DATE, transition_schema
from etl.source import resolve_source_features
from etl.validate import ActionSpace, action_hint, resolve_action_space
from etl.workers import in_order

log = structlog.get_logger(__name__)
_BUCKET = "_bucket"
_DATE = "_date"
_TRANS_SORT = ("episode_id", "step")
_QUAR_SORT = ("source_table", "source_file", "row_number")
_BATCH = 131_072  # input rows read at a time when spilling the buckets


@dataclass
class EtlResult:
    """Transitions, quarantine rows and the manifest (as written to ``_manifest.json``)."""

    transitions: pl.DataFrame
    quarantine: pl.DataFrame
    manifest: dict[str, Any]
    written: dict[str, int] = field(default_factory=dict)

    @property
    def n_transitions(self) -> int:
        """Transitions this run wrote (also with ``run_etl(..., collect=False)``)."""
        return self.written.get("transitions", self.transitions.height)

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


# ----------------------------------------------------------------------------- in memory
def run_local(
    events: pl.LazyFrame, orders: pl.LazyFrame, g: GlobalInputs, config: EtlConfig,
    *, n_buckets: int | None = None,
) -> PartitionOutput:
    """Run the core transform per user-hash bucket over in-memory rows and concatenate the
    sorted results (``n_buckets``: default ``config.bucket_count`` of the rows)."""
    if n_buckets is None:
        rows = pl.collect_all([events.select(pl.len()), orders.select(pl.len())])
        n_buckets = config.bucket_count(sum(int(r.item()) for r in rows))
    n = n_buckets
    if n == 1:
        ev, od = pl.collect_all([events, orders])
        out = transform_partition(ev, od, g, config)
        return PartitionOutput(
            out.transitions, out.quarantine.sort(*_QUAR_SORT), out.counts,
        )
    ev_b, od_b = _bucketed(events, g.links, n), _bucketed(orders, g.links, n)

    def bucket(b: int) -> PartitionOutput:
        ev = ev_b.filter(pl.col(_BUCKET) == b).drop(_BUCKET).collect()
        od = od_b.filter(pl.col(_BUCKET) == b).drop(_BUCKET).collect()
        return transform_partition(ev, od, g, config)

    outs = list(tqdm(in_order(bucket, range(n), config.worker_count()), total=n,
                     desc="etl buckets", leave=False, disable=None))
    return PartitionOutput(
        pl.concat([o.transitions for o in outs]).sort(*_TRANS_SORT),
        pl.concat([empty_quarantine(), *[o.quarantine for o in outs]]).sort(*_QUAR_SORT),
        pl.concat([empty_counts(), *[o.counts for o in outs]]),
    )


def _bucketed(lf: pl.LazyFrame, links: pl.DataFrame, n: int) -> pl.LazyFrame:
    """Rows with their user-hash bucket (``_bucket``); row order is not meaningful."""
    key = user_key_expr().fill_null("")
    return (
        lf.join(links.lazy(), on="anonymous_id", how="left")
        .with_columns((key.hash(seed=0) % n).cast(pl.UInt32).alias(_BUCKET))
        .drop(LINK_USER, LINK_TS)
    )


def _finish(
    out: PartitionOutput, spec: FeatureSpec, scaling: Scaling | None
) -> tuple[pl.DataFrame, Scaling]:
    """Fit the scaling on the (sorted) raw features when none is given, and apply it."""
    trans = out.transitions
    if RAW_OBS not in trans.columns:
        assert scaling is not None
        return trans, scaling
    if scaling is None:
        raw = trans[RAW_OBS].to_numpy().reshape(trans.height, len(spec.names))
        scaling = Scaling.fit(spec.names, raw.astype(np.float64))
    return apply_scaling(trans, scaling, len(spec.names)), scaling


def _rows_in(frames: Sequence[tuple[str, Sequence[pl.LazyFrame]]]) -> pl.DataFrame:
    """Input rows per table and partition date, read one piece (file) at a time."""
    parts = [pl.DataFrame(schema={"table": pl.String, "date": pl.Date, "n": pl.Int64})]
    for table, pieces in frames:
        for lf in pieces:
            parts.append(
                lf.group_by(pl.col(PART_DATE).alias("date"))
                .agg(pl.len().cast(pl.Int64).alias("n"))
                .select(pl.lit(table).alias("table"), "date", "n")
                .collect()
            )
    return (
        pl.concat(parts).group_by("table", "date").agg(pl.col("n").sum()).sort("table", "date")
    )


def build_transitions(
    events: pl.DataFrame,
    orders: pl.DataFrame,
    config: EtlConfig | None = None,
    *,
    scaling: Scaling | None = None,
    data_end: dt.datetime | None = None,
    as_of: dt.date | None = None,
) -> EtlResult:
    """The whole ETL in memory: raw events and orders (raw-log schema) -> transitions.

    Pure: no file is read or written. ``scaling`` reuses a fitted scaling (else it is fitted on
    these decisions); ``data_end`` is the end of the data for churn and timeouts (default:
    midnight after the latest valid row, at most the end of the run date); ``as_of``: the run
    date (default today, UTC): rows after its end are quarantined as ``future_event``.
    """
    config = config or EtlConfig()
    continuous = (
        config.action_space == "continuous"
        if config.action_space != "auto"
        else "action" in events.columns and events.schema["action"].is_float()
    )
    found, n_decisions = action_counts([
        decision_actions(normalize_frame(events, "events", config,
                                         ActionSpace.from_config(config, continuous)).lazy(),
                         continuous).collect()
    ])
    require_decisions(n_decisions, events.height, config)
    space = resolve_action_space(config, continuous, found, None)
    ev = normalize_frame(events, "events", config, space)
    config = resolve_source_features(config, [ev.lazy()])
    spec = FeatureSpec.from_config(config, space)
    od = normalize_frame(orders, "orders", config, space)
    end_us = None if data_end is None else (data_end - EPOCH) // dt.timedelta(microseconds=1)
    g = global_inputs(ev.lazy(), od.lazy(), config, space, data_end_us=end_us,
                      stitched_only=True, as_of_end_us=run_date_end_us(run_date(as_of)))
    g.scaling = scaling
    out = run_local(ev.lazy(), od.lazy(), g, config,
                    n_buckets=config.bucket_count(ev.height + od.height))
    by_date = tally(out.counts, _rows_in([("events", [ev.lazy()]), ("orders", [od.lazy()])]))
    check_quarantine(totals(by_date), config, action_hint(space, found))
    trans, fitted = _finish(out, spec, scaling)
    dates = _decision_dates(trans)
    manifest = build_manifest(config, space, spec, fitted, by_date, [], dates)
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


@dataclass
class FilePlan:
    """Which input files a run reads, and how (both engines)."""

    used: list[InputFile]  # transformed, in input order (events, then orders)
    decisions_only: frozenset[str]  # read for their decision events only (nightly history)
    link_files: list[InputFile] | None  # nightly: every file, for the identity map and data end

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(f.relpath for t in ("events", "orders") for f in self.used if f.table == t)


def file_plan(files: list[InputFile], config: EtlConfig, day: dt.date | None) -> FilePlan:
    """A backfill transforms every file; a nightly run for D transforms the partitions from D -
    lookback to D + lookahead, the decision events of earlier ones, and stitches over all."""
    if day is None:
        return FilePlan(files, frozenset(), None)
    lo = day - dt.timedelta(days=lookback_days(config))
    hi = day + dt.timedelta(days=lookahead_days(config))
    window = [f for f in files if f.part_date is None or lo <= f.part_date <= hi]
    older = [f for f in files if f.part_date is not None and f.part_date < lo
             and f.table == "events"]
    return FilePlan(older + window, frozenset(f.relpath for f in older), files)


def run_etl(
    input_root: Path | str,
    out_root: Path | str,
    config: EtlConfig | None = None,
    date: dt.date | str | None = None,
    *,
    collect: bool = True,
    as_of: dt.date | str | None = None,
) -> EtlResult:
    """Read raw logs under ``input_root`` and write the transition dataset under ``out_root``.

    Without ``date``: a backfill of every decision, written atomically (a temporary folder
    renamed into place). With ``date``: the nightly run for decision date D, reading the
    partitions it needs around D (``lookback_days`` before, ``lookahead_days`` after, decision
    events of all earlier partitions for episode boundaries, identity links of all partitions),
    replacing ``transitions/date=D`` and ``quarantine/date=D`` atomically and updating the
    manifest. Returned frames hold this run's rows only; ``collect=False`` returns empty frames
    (the manifest only), so that a large backfill never holds its output in memory. Temporary
    files go under the system temporary folder (``TMPDIR``) and are removed, also on errors.
    ``as_of``: the run date (default today, UTC): rows whose time or arrival lies after its
    end are quarantined as ``future_event``, and the end of the data (churn, timeouts) is the
    latest valid row's day, at most the run date.
    """
    config = config or EtlConfig()
    input_root, out_root = Path(input_root), Path(out_root)
    day = dt.date.fromisoformat(date) if isinstance(date, str) else date
    files = discover(input_root)
    continuous = action_is_continuous(files, config)
    today = run_date(as_of)
    if later := folders_after(files, today):
        log.warning("partition folders after the run date (rows judged by their own times)",
                    run_date=str(today), folders=later[:5], n=len(later))
    with input_errors(files, config, continuous=continuous):  # no decisions: refused below,
        found, n_decisions, _ = scan_decisions(files, config, continuous)  # with the counts
    space = resolve_action_space(config, continuous, found, stored_action_space(
        config, out_root, prefer_existing=day is not None))
    if space.discovered:
        log.info("action vocabulary discovered from the decision events", labels=space.labels)
    if config.features.declared:  # the source features' vocabulary and constants (etl.source)
        with input_errors(files, config, continuous=continuous):
            ev_files, _ = scan_pieces([f for f in files if f.table == "events"], config,
                                      continuous=continuous)
            config = resolve_source_features(config, ev_files, stored_manifest(
                config, out_root, prefer_existing=day is not None))
    spec = FeatureSpec.from_config(config, space)
    plan_files = file_plan(files, config, day)
    n = config.bucket_count(estimate_rows(plan_files.used))
    log.info("etl start", files=len(plan_files.used), date=str(day) if day else "all",
             buckets=n, run_date=str(today))
    scaling = load_scaling(config, out_root, spec, prefer_existing=day is not None)
    with tempfile.TemporaryDirectory(prefix="ecomrl-etl-") as tmp:
        hashed = frozenset(f.relpath for f in plan_files.used
                           if day is None or f.part_date == day)
        plan = BucketPlan(config, space, n, run_date_end_us(today), tmp, plan_files.order,
                          plan_files.decisions_only, hashed)
        with input_errors(files, config, continuous=continuous):
            run = _in_memory(plan, plan_files, day, scaling) if n == 1 else \
                _bucketed_run(plan, plan_files, day, scaling)
    rows_in = run.rows_in if day is None else run.rows_in.filter(pl.col("date") == day)
    by_date = tally(pl.concat([empty_counts(), *run.outputs.counts]), rows_in)
    refuse_without_decisions(totals(by_date), n_decisions, config)
    check_quarantine(totals(by_date), config, action_hint(space, found))
    if scaling is None:
        scaling = fit_scaling(spec.names, run.outputs.transitions(), n, config.worker_count())
    inputs = [
        {"path": f.relpath, "table": f.table, "sha256": run.digests[f.relpath]}
        for f in sorted(plan_files.used, key=lambda f: f.relpath)
        if day is None or f.part_date == day
    ]
    fitted = scaling
    return _publish(out_root, day, run.outputs, config, space, spec, fitted, by_date, inputs,
                    collect)


@dataclass
class _Run:
    """What the transform step gives the finish: outputs, rows in per date, file digests."""

    outputs: MemoryPieces
    rows_in: pl.DataFrame
    digests: dict[str, str]


def _scans(plan: BucketPlan, files: Sequence[InputFile]
           ) -> tuple[list[pl.LazyFrame], list[pl.LazyFrame]]:
    """One lazy frame per file (decision events only where the plan says so), never none."""
    config, continuous = plan.config, plan.space.continuous
    ev, od = scan_pieces(list(files), config, continuous=continuous)
    ev_files = [f for f in files if f.table == "events"]
    ev = [lf.filter(pl.col("event_type") == "decision") if f.relpath in plan.decisions_only
          else lf for f, lf in zip(ev_files, ev, strict=True)]
    return (ev or [empty_table("events", config, continuous=continuous)],
            od or [empty_table("orders", config, continuous=continuous)])


def _dated_globals(g: GlobalInputs, day: dt.date | None, scaling: Scaling | None
                   ) -> GlobalInputs:
    if day is not None:
        g.output_dates = (day, day)
        g.count_dates = (day, day)
    g.scaling = scaling
    return g


def _in_memory(plan: BucketPlan, files: FilePlan, day: dt.date | None,
               scaling: Scaling | None) -> _Run:
    """One bucket: every file read once into memory, the global steps and the transform on it."""
    config = plan.config
    workers = config.worker_count()
    events, orders = _scans(plan, files.used)
    ev_df, od_df = pl.collect_all([pl.concat(events), pl.concat(orders)])
    link_ev = link_od = None
    if files.link_files is not None:
        link_ev, link_od = _scans(replace(plan, decisions_only=frozenset()), files.link_files)
    g = global_inputs([ev_df.lazy()], [od_df.lazy()], config, plan.space, link_events=link_ev,
                      link_orders=link_od, stitched_only=True, workers=workers,
                      as_of_end_us=plan.as_of_end_us)
    outputs = MemoryPieces()
    outputs.put(transform_partition(ev_df, od_df, _dated_globals(g, day, scaling), config))
    rows_in = _rows_in([("events", [ev_df.lazy()]), ("orders", [od_df.lazy()])])
    del ev_df, od_df
    hashed = [f for f in files.used if f.relpath in plan.hashed]
    digests = dict(zip([f.relpath for f in hashed],
                       in_order(lambda f: sha256(f.path), hashed, workers), strict=True))
    return _Run(outputs, rows_in, digests)


def _bucketed_run(plan: BucketPlan, files: FilePlan, day: dt.date | None,
                  scaling: Scaling | None) -> _Run:
    """Several buckets (:mod:`etl.buckets`): one pass over the input splits it into bucket
    files and gives the global pieces; the global steps read back only the rows they need;
    buckets are transformed ``workers`` at a time and their outputs kept in memory."""
    workers = plan.config.worker_count()
    split = split_files(plan, files.used, 0, workers)
    repeated = repeated_hashes(split.hashes)
    nightly = files.link_files is not None
    keys = [pending_keys(plan, 0, repeated), *in_order(
        lambda b: bucket_keys(plan, b, split.pending_ids, repeated, links=not nightly),
        range(plan.n_buckets), workers)]
    file_links_ = None
    if files.link_files is not None:
        file_links_ = list(in_order(lambda f: file_links(plan, f, split.pending_ids),
                                    files.link_files, workers))
    g = _dated_globals(global_steps(plan, split, keys, file_links_), day, scaling)
    route_pending(plan, g.links, 0)
    events, orders = _scans(plan, files.used)
    schemas = {"events": pl.concat(events).collect_schema(),
               "orders": pl.concat(orders).collect_schema()}
    outputs = MemoryPieces()
    done = in_order(lambda b: transform_bucket(plan, b, g, schemas), range(plan.n_buckets),
                    workers)
    for b, out in enumerate(tqdm(done, total=plan.n_buckets, desc="etl buckets", leave=False,
                                 disable=None)):
        outputs.put(out)
        log.debug("bucket done", bucket=b, decisions=out.transitions.height)
    return _Run(outputs, split.rows_in, split.digests)


def scan_actions(files: Sequence[InputFile], config: EtlConfig, continuous: bool
                 ) -> dict[str, int]:
    """The labels the decision events of every events file use (label -> decisions); raises
    when there is no decision event (unless ``require_decisions`` is off)."""
    found, n_decisions, rows = scan_decisions(files, config, continuous)
    require_decisions(n_decisions, rows, config)
    return found


def scan_decisions(files: Sequence[InputFile], config: EtlConfig, continuous: bool
                   ) -> tuple[dict[str, int], int, int]:
    """(label -> decisions, decision events, event rows) of every events file."""
    ev, _ = scan_pieces([f for f in files if f.table == "events"], config,
                        continuous=continuous)

    def count(lf: pl.LazyFrame) -> list[pl.DataFrame]:
        return pl.collect_all([decision_actions(lf, continuous), lf.select(pl.len())])

    frames, rows = [], 0
    for actions, length in in_order(count, ev, config.worker_count()):
        frames.append(actions)
        rows += int(length.item())
    found, n_decisions = action_counts(frames)
    return found, n_decisions, rows


# ----------------------------------------------------------------------------- writing
def _publish(
    out_root: Path, day: dt.date | None, outputs: MemoryPieces, config: EtlConfig,
    space: ActionSpace, spec: FeatureSpec, scaling: Scaling, by_date: dict[str, Any],
    inputs: list[dict[str, str]], collect: bool,
) -> EtlResult:
    """Write the outputs (a backfill: every date, atomically; nightly: day D and the manifest)."""
    n_feat = len(spec.names)
    empty_trans = pl.DataFrame(schema=transition_schema(n_feat, space.continuous))
    if day is None:
        manifest, written, frames = _write_backfill(
            out_root, outputs, n_feat, scaling,
            lambda dates: build_manifest(config, space, spec, scaling, by_date, inputs, dates),
            config.worker_count(), collect,
        )
        trans = pl.concat([empty_trans, *frames["transitions"]]).sort(*_TRANS_SORT)
        quar = pl.concat([empty_quarantine(), *frames["quarantine"]]).sort(*_QUAR_SORT)
    else:
        got = {kind: [p for d in outputs.dates(kind) for p in outputs.pop(kind, d)]
               for kind in ("transitions", "quarantine")}
        trans = date_frame("transitions", got["transitions"], scaling, n_feat) \
            if got["transitions"] else empty_trans
        quar = date_frame("quarantine", got["quarantine"], None, n_feat) \
            if got["quarantine"] else empty_quarantine()
        manifest = write_day(out_root, day, trans, quar, config, space, spec, scaling,
                             by_date, inputs)
        written = {"transitions": trans.height, "quarantine": quar.height}
        if not collect:
            trans, quar = empty_trans, empty_quarantine()
    done = manifest["counts"] if day is None else totals(by_date)
    log.info("etl done", out=str(out_root), counts=done, **written)
    return EtlResult(trans, quar, manifest, written)


def _write_backfill(
    out_root: Path, outputs: MemoryPieces, n_features: int, scaling: Scaling,
    manifest: Callable[[list[str]], dict[str, Any]], workers: int = 1, collect: bool = False,
) -> tuple[dict[str, Any], dict[str, int], dict[str, list[pl.DataFrame]]]:
    """Write every date's file from the outputs held in memory (``workers`` dates at a time,
    each date's pieces freed once written) into a temporary folder, add the manifest and rename
    it into place; returns the manifest, the rows written per table and (``collect``) the
    frames written."""
    out_root = out_root.resolve()
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_root.with_name(f".{out_root.name}.tmp-{uuid.uuid4().hex}")
    written = {"transitions": 0, "quarantine": 0}
    frames: dict[str, list[pl.DataFrame]] = {"transitions": [], "quarantine": []}
    try:
        tmp.mkdir(parents=True)
        dates = outputs.dates("transitions")
        jobs = [("transitions", d) for d in dates] + [
            ("quarantine", d) for d in outputs.dates("quarantine")]

        def write(job: tuple[str, str]) -> pl.DataFrame:
            kind, day = job
            return publish_date(tmp, kind, day, outputs.pop(kind, day), scaling, n_features,
                                lambda frame, path: write_parquet(frame, path))

        for (kind, _), frame in zip(jobs, in_order(write, jobs, workers), strict=True):
            written[kind] += frame.height
            if collect:
                frames[kind].append(frame)
        data = manifest(dates)
        write_json(data, tmp / MANIFEST)
        swap_dir(tmp, out_root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data, written, frames


__all__ = ["EtlResult", "build_transitions", "lookahead_days", "lookback_days", "run_etl",
           "run_local"]
