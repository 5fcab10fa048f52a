"""The ETL's entry points: in memory (:func:`build_transitions`) and on files (:func:`run_etl`).

Both run :func:`etl.core.transform_partition` once per user-hash bucket (``EtlConfig.n_buckets``,
``auto``: one bucket per ``events_per_bucket`` input rows); the output never depends on the
number of buckets, nor on the number of worker threads (``EtlConfig.workers``). On files, with
several buckets, peak memory follows the bucket size rather than the input:

1. the global steps (identity map, duplicate keys, data end) and the row counts read the input
   one file at a time, projected to the columns they need (:func:`etl.core.global_inputs`);
   the identity map keeps only the anonymous ids that rows without a user_id carry;
2. one more pass, batch by batch, spills each bucket's rows to a temporary Arrow file;
3. each bucket is loaded and transformed, and its outputs are spilled too: transitions and
   quarantine rows per output date, the raw features per range of episode ids, the counts
   (small) kept in memory;
4. the feature scaling is fitted from the raw features read range by range of episode ids in
   (episode_id, step) order, summed in numpy's own order, so it is bit for bit the scaling of
   the whole matrix;
5. each output date is read from its spilled rows, sorted, scaled and written; the folder is
   swapped into place atomically.

Steps 1, 2, 3 and 5 run ``workers`` pieces (files, batches, buckets, dates) at the same time in
threads (polars and numpy release the GIL), and consume the results in order, so that files,
spills and counts come out as with one worker. Peak memory is then about ``workers`` buckets'
transforms, or dates' outputs, whichever is larger. With one bucket the input is read once
into memory (fastest when it fits).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import structlog
from tqdm import tqdm

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
    stored_action_space,
    swap_dir,
    tally,
    totals,
    write_day,
    write_json,
    write_parquet,
)
from etl.schema import PART_DATE, transition_schema
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
    spec = FeatureSpec.from_config(config, space)
    ev = normalize_frame(events, "events", config, space)
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


def _spill_write(frame: pl.DataFrame, path: Path) -> None:
    """A temporary file (uncompressed Arrow IPC: cheaper to write and read back than Parquet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_ipc(path, compression="uncompressed")


def _spill_read(files: Sequence[Path]) -> pl.DataFrame:
    """Temporary files as one frame, in one chunk (the transform is faster on those)."""
    return pl.scan_ipc(list(files)).collect().rechunk()


class _Spill:
    """A run's rows and outputs in a temporary folder, bucket by bucket.

    ``in/<table>/<bucket>.arrow``: the input rows of each bucket;
    ``transitions/date=D/<bucket>.arrow`` and ``quarantine/date=D/<bucket>.arrow``: each
    bucket's outputs per output date; ``fit/<range>/<bucket>.arrow``: its raw features by range
    of episode ids, for the scaling. Counts are small and stay in memory. All temporary files
    are uncompressed Arrow IPC.
    """

    def __init__(self, root: Path, *, fit: bool, n_ranges: int = 1) -> None:
        self.root = root
        self.fit = fit
        self.n_ranges = n_ranges
        self.bounds: pl.Series | None = None
        self.counts: list[pl.DataFrame] = [empty_counts()]

    # --- inputs
    def put_inputs(self, table: str, pieces: Sequence[pl.LazyFrame], links: pl.DataFrame,
                   n: int, workers: int = 1) -> None:
        """Split the rows into their buckets: ``in/<table>/<bucket>.arrow``, one Arrow IPC file
        per bucket appended batch by batch, in input order. The pieces are read in batches of
        ``_BATCH`` rows, ``workers`` batches split at the same time, so memory follows neither the
        input nor its largest file."""
        key = user_key_expr().fill_null("")

        def split(frame: pl.DataFrame) -> list[tuple[int, pa.Table]]:
            ids = frame.select("anonymous_id", "user_id", "session_id")
            if links.height:  # the identity-map join on the id columns only, in row order
                ids = ids.join(links, on="anonymous_id", how="left", maintain_order="left")
            else:
                ids = ids.with_columns(pl.lit(None, pl.String()).alias(LINK_USER))
            bucket = ids.select((key.hash(seed=0) % n).cast(pl.UInt32).alias(_BUCKET))[_BUCKET]
            # one stable sort by bucket and one Arrow conversion; each bucket is then a
            # zero-copy slice (cheaper than a frame and a conversion per bucket)
            codes = bucket.to_numpy()
            table = frame[np.argsort(codes, kind="stable")].to_arrow()
            counts = np.bincount(codes, minlength=n)
            starts = np.concatenate([[0], np.cumsum(counts)])
            return [(b, table.slice(int(starts[b]), int(counts[b])))
                    for b in np.flatnonzero(counts).tolist()]

        batches_in = (frame for lf in pieces for frame in lf.collect_batches(chunk_size=_BATCH)
                      if frame.height)
        writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        schema: pa.Schema | None = None
        try:
            for batches in in_order(split, batches_in, workers):
                for b, batch in batches:
                    schema = batch.schema if schema is None else schema
                    writer = writers.get(b)
                    if writer is None:
                        path = self.root / "in" / table / f"{b:05d}.arrow"
                        path.parent.mkdir(parents=True, exist_ok=True)
                        writer = writers[b] = pa.ipc.new_file(str(path), schema)
                    writer.write_table(batch if batch.schema.equals(schema)
                                       else batch.cast(schema))
        finally:
            for writer in writers.values():
                writer.close()

    def inputs(self, table: str, b: int, schema: pl.Schema) -> pl.DataFrame:
        """Bucket ``b``'s rows of ``table``."""
        path = self.root / "in" / table / f"{b:05d}.arrow"
        if not path.is_file():
            return pl.DataFrame(schema=schema)
        return _spill_read([path]).cast(dict(schema))  # type: ignore[arg-type]

    def drop_inputs(self, b: int) -> None:
        """Free the disk of a bucket that is done."""
        for table in ("events", "orders"):
            (self.root / "in" / table / f"{b:05d}.arrow").unlink(missing_ok=True)

    # --- outputs
    def put_outputs(self, b: int, out: PartitionOutput) -> None:
        """Spill a bucket's transitions and quarantine rows per date; keep its counts."""
        self.counts.append(out.counts)
        self._dated(out.transitions, "transitions", pl.col("decision_ts").dt.date(), b)
        self._dated(out.quarantine, "quarantine", pl.col("partition_date"), b)
        trans = out.transitions
        if self.fit and RAW_OBS in trans.columns and trans.height:
            if self.bounds is None:  # users are hashed: any bucket's episode ids are a sample
                ids = trans["episode_id"].sort()
                self.bounds = ids.gather(
                    [ids.len() * i // self.n_ranges for i in range(1, self.n_ranges)]
                ).unique(maintain_order=True)
            ranged = trans.select(*_TRANS_SORT, RAW_OBS).with_columns(
                self.bounds.search_sorted(trans["episode_id"], side="right").alias("_range")
            )
            for (r,), part in ranged.group_by("_range"):
                _spill_write(part.drop("_range"),
                             self.root / "fit" / f"{r:05d}" / f"{b:05d}.arrow")

    def _dated(self, frame: pl.DataFrame, kind: str, date: pl.Expr, b: int) -> None:
        if frame.height == 0:
            return
        for (day,), part in frame.with_columns(date.alias(_DATE)).group_by(_DATE):
            assert isinstance(day, dt.date)
            _spill_write(part.drop(_DATE),
                         self.root / kind / f"date={day.isoformat()}" / f"{b:05d}.arrow")

    def dates(self, kind: str) -> list[str]:
        """The output dates of ``kind`` (transitions or quarantine) that have rows."""
        folder = self.root / kind
        if not folder.is_dir():
            return []
        return sorted(p.name.removeprefix("date=") for p in folder.glob("date=*"))

    def read(self, kind: str, days: Sequence[str]) -> pl.DataFrame | None:
        """The spilled rows of ``kind`` on ``days`` (None when there are none)."""
        files = [f for d in days
                 for f in sorted((self.root / kind / f"date={d}").glob("*.arrow"))]
        return _spill_read(files) if files else None

    def fit_scaling(self, names: list[str]) -> Scaling:
        """:meth:`Scaling.fit` of every raw feature row in (episode_id, step) order, streamed.

        The raw features were spilled by ranges of episode ids (bounds from the first bucket,
        about one bucket's rows per range); range after range is sorted and summed row after
        row, which is how numpy reduces a C-ordered matrix along its first axis (with two or
        more features), so the mean and standard deviation equal ``Scaling.fit`` of the whole
        matrix to the bit.
        """
        k = len(names)
        ranges = sorted(p for p in (self.root / "fit").glob("*") if p.is_dir()) \
            if (self.root / "fit").is_dir() else []
        if not ranges:
            return Scaling.fit(names, np.zeros((0, k)))

        def in_order() -> Iterator[np.ndarray]:
            for folder in ranges:
                frame = _spill_read(sorted(folder.glob("*.arrow"))).sort(*_TRANS_SORT)
                yield frame[RAW_OBS].to_numpy().reshape(frame.height, k).astype(np.float64)

        if k < 2:  # numpy sums a single column pairwise: fit on the (small) column itself
            return Scaling.fit(names, np.concatenate(list(in_order())))
        # pass 1: the rows are summed and kept, in order, in a flat float64 file
        ordered = self.root / "fit" / "ordered.f64"
        total: np.ndarray | None = None
        n = 0
        with ordered.open("wb") as handle:
            for raw in in_order():
                raw.tofile(handle)
                total = _row_sum(total, raw)
                n += raw.shape[0]
        assert total is not None
        mean = total / n
        # pass 2: the squared deviations, read back in order
        squares: np.ndarray | None = None
        chunk = 65_536
        for start in range(0, n, chunk):
            rows = min(chunk, n - start)
            raw = np.fromfile(ordered, dtype=np.float64, count=rows * k,
                              offset=start * k * 8).reshape(rows, k)
            dev = raw - mean
            squares = _row_sum(squares, dev * dev)
        ordered.unlink()
        assert squares is not None
        std = np.sqrt(squares / n)
        std = np.where(std > 1e-12, std, 1.0)
        return Scaling(tuple(names), mean, std)


def _row_sum(acc: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """``acc`` plus the rows, added one after another (numpy's order along a C-ordered first
    axis: chunked sums equal the sum of the whole matrix to the bit)."""
    block = rows if acc is None else np.concatenate([acc[None, :], rows])
    return np.add.reduce(block, axis=0)


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
    end_us = run_date_end_us(today)
    if later := folders_after(files, today):
        log.warning("partition folders after the run date (rows judged by their own times)",
                    run_date=str(today), folders=later[:5], n=len(later))
    with input_errors(files, config, continuous=continuous):
        found = scan_actions(files, config, continuous)
    space = resolve_action_space(config, continuous, found, stored_action_space(
        config, out_root, prefer_existing=day is not None))
    if space.discovered:
        log.info("action vocabulary discovered from the decision events", labels=space.labels)
    spec = FeatureSpec.from_config(config, space)
    n_feat = len(spec.names)

    def pieces(chosen: list[Any]) -> tuple[list[pl.LazyFrame], list[pl.LazyFrame]]:
        ev, od = scan_pieces(chosen, config, continuous=continuous)
        return (ev or [empty_table("events", config, continuous=continuous)],
                od or [empty_table("orders", config, continuous=continuous)])

    link_ev: list[pl.LazyFrame] | None = None
    link_od: list[pl.LazyFrame] | None = None
    if day is None:
        used_files = files
        events, orders = pieces(files)
    else:
        lo = day - dt.timedelta(days=lookback_days(config))
        hi = day + dt.timedelta(days=lookahead_days(config))
        window = [f for f in files if f.part_date is None or lo <= f.part_date <= hi]
        older = [f for f in files if f.part_date is not None and f.part_date < lo
                 and f.table == "events"]
        used_files = window + older
        events, orders = pieces(window)
        if older:
            old_ev, _ = pieces(older)
            events = [lf.filter(pl.col("event_type") == "decision") for lf in old_ev] + events
        link_ev, link_od = pieces(files)

    with input_errors(used_files, config, continuous=continuous):
        rows_in = _rows_in([("events", events), ("orders", orders)])
    n = config.bucket_count(int(rows_in["n"].sum()))
    log.info("etl start", files=len(used_files), date=str(day) if day else "all", buckets=n,
             run_date=str(today))
    scaling = load_scaling(config, out_root, spec, prefer_existing=day is not None)
    with tempfile.TemporaryDirectory(prefix="ecomrl-etl-") as tmp:
        spill = _Spill(Path(tmp), fit=scaling is None, n_ranges=n)
        with input_errors(files, config, continuous=continuous):
            _transform(events, orders, link_ev, link_od, config, space, end_us, scaling, n,
                       spill, day)
        if day is not None:
            rows_in = rows_in.filter(pl.col("date") == day)
        by_date = tally(pl.concat(spill.counts), rows_in)
        check_quarantine(totals(by_date), config, action_hint(space, found))
        if scaling is None:
            scaling = spill.fit_scaling(spec.names)
        inputs = [
            {"path": f.relpath, "table": f.table, "sha256": sha256(f.path)}
            for f in sorted(used_files, key=lambda f: f.relpath)
            if day is None or f.part_date == day
        ]
        fitted = scaling
        empty_trans = pl.DataFrame(schema=transition_schema(n_feat, continuous))
        if day is None:
            manifest, written = _write_backfill(
                out_root, spill, n_feat, fitted,
                lambda dates: build_manifest(config, space, spec, fitted, by_date, inputs, dates),
                config.worker_count(),
            )
            trans, quar = empty_trans, empty_quarantine()
            if collect:
                back_t = _read_back(out_root / "transitions", _TRANS_SORT)
                back_q = _read_back(out_root / "quarantine", _QUAR_SORT)
                trans = trans if back_t is None else back_t
                quar = quar if back_q is None else back_q
        else:
            got_t = spill.read("transitions", spill.dates("transitions"))
            got_q = spill.read("quarantine", spill.dates("quarantine"))
            trans = empty_trans if got_t is None else apply_scaling(
                got_t.sort(*_TRANS_SORT), fitted, n_feat)
            quar = empty_quarantine() if got_q is None else got_q.sort(*_QUAR_SORT)
            manifest = write_day(out_root, day, trans, quar, config, space, spec, fitted,
                                 by_date, inputs)
            written = {"transitions": trans.height, "quarantine": quar.height}
            if not collect:
                trans, quar = empty_trans, empty_quarantine()
    done = manifest["counts"] if day is None else totals(by_date)
    log.info("etl done", out=str(out_root), buckets=n, counts=done, **written)
    return EtlResult(trans, quar, manifest, written)


def _transform(
    events: list[pl.LazyFrame], orders: list[pl.LazyFrame],
    link_ev: list[pl.LazyFrame] | None, link_od: list[pl.LazyFrame] | None,
    config: EtlConfig, space: ActionSpace, as_of_end_us: int, scaling: Scaling | None,
    n: int, spill: _Spill, day: dt.date | None,
) -> None:
    """Global steps, then the transform per bucket (``config.worker_count()`` at the same
    time); every output goes to ``spill``, bucket after bucket in order."""
    workers = config.worker_count()

    def globals_of(ev: Sequence[pl.LazyFrame], od: Sequence[pl.LazyFrame]) -> GlobalInputs:
        g = global_inputs(ev, od, config, space, link_events=link_ev, link_orders=link_od,
                          stitched_only=True, workers=workers, as_of_end_us=as_of_end_us)
        if day is not None:
            g.output_dates = (day, day)
            g.count_dates = (day, day)
        g.scaling = scaling
        return g

    if n == 1:  # one bucket: read the files once, keep the rows in memory
        ev_df, od_df = pl.collect_all([pl.concat(events), pl.concat(orders)])
        g = globals_of([ev_df.lazy()], [od_df.lazy()])
        spill.put_outputs(0, transform_partition(ev_df, od_df, g, config))
        return
    g = globals_of(events, orders)
    schemas = {"events": pl.concat(events).collect_schema(),
               "orders": pl.concat(orders).collect_schema()}
    spill.put_inputs("events", events, g.links, n, workers)
    spill.put_inputs("orders", orders, g.links, n, workers)

    def bucket(b: int) -> PartitionOutput:
        ev = spill.inputs("events", b, schemas["events"])
        od = spill.inputs("orders", b, schemas["orders"])
        out = transform_partition(ev, od, g, config)
        del ev, od
        spill.drop_inputs(b)
        return out

    done = in_order(bucket, range(n), workers)
    for b, out in enumerate(tqdm(done, total=n, desc="etl buckets", leave=False, disable=None)):
        spill.put_outputs(b, out)
        log.debug("bucket done", bucket=b, decisions=out.transitions.height)


def scan_actions(files: Sequence[InputFile], config: EtlConfig, continuous: bool
                 ) -> dict[str, int]:
    """The labels the decision events of every events file use (label -> decisions); raises
    when there is no decision event (unless ``require_decisions`` is off)."""
    ev, _ = scan_pieces([f for f in files if f.table == "events"], config,
                        continuous=continuous)

    def count(lf: pl.LazyFrame) -> list[pl.DataFrame]:
        return pl.collect_all([decision_actions(lf, continuous), lf.select(pl.len())])

    frames, rows = [], 0
    for actions, length in in_order(count, ev, config.worker_count()):
        frames.append(actions)
        rows += int(length.item())
    found, n_decisions = action_counts(frames)
    require_decisions(n_decisions, rows, config)
    return found


# ----------------------------------------------------------------------------- writing
def _write_backfill(
    out_root: Path, spill: _Spill, n_features: int, scaling: Scaling,
    manifest: Callable[[list[str]], dict[str, Any]], workers: int = 1,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Write every date's files from the spilled rows (``workers`` dates in memory at a time)
    into a temporary folder, add the manifest and rename it into place; returns the manifest and
    the rows written per table."""
    out_root = out_root.resolve()
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_root.with_name(f".{out_root.name}.tmp-{uuid.uuid4().hex}")
    written = {"transitions": 0, "quarantine": 0}
    try:
        tmp.mkdir(parents=True)
        dates = spill.dates("transitions")

        def write(job: tuple[str, str]) -> int:
            kind, day = job
            frame = spill.read(kind, [day])
            assert frame is not None
            if kind == "transitions":
                frame = apply_scaling(frame.sort(*_TRANS_SORT), scaling, n_features)
            else:
                frame = frame.sort(*_QUAR_SORT)
            write_parquet(frame, tmp / kind / f"date={day}" / "part-00000.parquet")
            return frame.height

        jobs = [("transitions", d) for d in dates] + [
            ("quarantine", d) for d in spill.dates("quarantine")]
        for (kind, _), rows in zip(jobs, in_order(write, jobs, workers), strict=True):
            written[kind] += rows
        data = manifest(dates)
        write_json(data, tmp / MANIFEST)
        swap_dir(tmp, out_root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data, written


def _read_back(root: Path, sort: Sequence[str]) -> pl.DataFrame | None:
    files = sorted(root.glob("date=*/*.parquet"))
    if not files:
        return None
    return pl.read_parquet(files, hive_partitioning=False).sort(*sort)


__all__ = ["EtlResult", "build_transitions", "lookahead_days", "lookback_days", "run_etl",
           "run_local"]
