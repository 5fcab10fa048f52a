"""The bucketed run's steps, shared by the local engine (threads) and the Spark engine (tasks).

A run on files with several user-hash buckets is four steps over a folder of temporary files
(``BucketPlan.root``: the system temporary folder locally, shared storage on a cluster):

1. :func:`split_files` reads a group of input files once, batch by batch, and appends each
   batch's rows to their bucket's Arrow file ``in/<table>/<bucket>/g<group>.arrow``. Rows
   without a user_id but with an anonymous_id cannot be routed before the identity map is known:
   they go to ``pending/<table>/g<group>.arrow``. The same pass gives the global pieces: rows in
   per partition date, 64-bit hashes of the valid rows' duplicate keys, the latest valid time,
   the anonymous ids the transform will look up, and the files' SHA-256;
2. :func:`bucket_keys` reads back, from the bucket files only (memory-mapped Arrow, projected),
   the few rows that the global steps need: the valid (anonymous id, user id) pairs of the ids
   looked up, and the rows of repeated duplicate-key hashes; :func:`global_steps` turns them
   into the identity map and the duplicate rows (exact: every copy of a key meets there);
   :func:`route_pending` then appends the pending rows to their stitched user's bucket;
3. :func:`transform_bucket` loads one bucket's rows in input order and runs
   :func:`etl.core.transform_partition`; :func:`dated_pieces` cuts its outputs per output date;
4. :func:`fit_scaling` fits the scaling from the raw features of every piece, in
   (episode_id, step) order (bit for bit ``Scaling.fit`` of the whole sorted matrix), and
   :func:`publish_date` sorts, scales and writes one date's file.

The local engine keeps the outputs of step 3 in memory (no temporary output files); the Spark
engine writes them to ``out/<kind>/date=D/<bucket>.arrow`` (:func:`write_pieces`) for the job
over dates. Either way the files written are the same bytes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from etl.clean import LINK_USER, duplicate_rows, identity_links, line_key, user_key_expr
from etl.config import EtlConfig
from etl.core import (
    RAW_OBS,
    GlobalInputs,
    PartitionOutput,
    end_of_data,
    transform_partition,
)
from etl.features import Scaling
from etl.io import InputFile, resolve_mapping, scan_table, sha256
from etl.output import apply_scaling, write_parquet
from etl.schema import PART_DATE, ROW_NR, SOURCE_FILE, TS
from etl.validate import ActionSpace, encode_action, event_reason, is_valid, order_reason
from etl.workers import Serial, in_order

BATCH = 131_072  # input rows read at a time
TRANS_SORT = ("episode_id", "step")
QUAR_SORT = ("source_table", "source_file", "row_number")
TABLES = ("events", "orders")
_DUP_COLUMNS = {
    "events": ["event_id", "ingest_ts", "event_ts", SOURCE_FILE, ROW_NR],
    "orders": ["order_id", "line_no", "item_id", "ingest_ts", "order_ts", SOURCE_FILE, ROW_NR],
}
_ROWS_IN = {"table": pl.String(), "date": pl.Date(), "n": pl.Int64()}
_KEY_TYPES: dict[str, pl.DataType] = {
    "event_id": pl.String(), "order_id": pl.String(), "line_no": pl.Int32(),
    "item_id": pl.String(), "ingest_ts": TS, "event_ts": TS, "order_ts": TS,
    SOURCE_FILE: pl.String(), ROW_NR: pl.Int64(),
}
_PAIRS = {"anonymous_id": pl.String(), "user_id": pl.String(), "event_ts": TS}


@dataclass(frozen=True)
class BucketPlan:
    """What every step of a bucketed run needs (picklable: Spark ships it to its tasks).

    ``order``: the input files' relpaths in input order (a bucket's rows are transformed in this
    order, as with one bucket); ``decisions_only``: files read for their decision events only
    (a nightly run's history before its lookback); ``hashed``: files whose SHA-256 the manifest
    lists."""

    config: EtlConfig
    space: ActionSpace
    n_buckets: int
    as_of_end_us: int
    root: str
    order: tuple[str, ...]
    decisions_only: frozenset[str] = frozenset()
    hashed: frozenset[str] = frozenset()

    def folder(self, *parts: str) -> Path:
        return Path(self.root).joinpath(*parts)


# ----------------------------------------------------------------------------- step 1: split
@dataclass
class SplitResult:
    """The global pieces one group of input files gives (merged with :meth:`merge`)."""

    rows_in: pl.DataFrame
    hashes: dict[str, np.ndarray]
    latest: dt.datetime | None
    pending_ids: pl.Series
    digests: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def merge(parts: Iterable[SplitResult]) -> SplitResult:
        got = list(parts)
        rows = pl.concat([pl.DataFrame(schema=_ROWS_IN), *[p.rows_in for p in got]])
        latest = [p.latest for p in got if p.latest is not None]
        return SplitResult(
            rows.group_by("table", "date").agg(pl.col("n").sum()).sort("table", "date"),
            {t: np.concatenate([np.zeros(0, np.uint64), *[p.hashes[t] for p in got]])
             for t in TABLES},
            max(latest) if latest else None,
            pl.concat([pl.Series("anonymous_id", [], pl.String),
                       *[p.pending_ids for p in got]]).unique().sort(),
            {k: v for p in got for k, v in p.digests.items()},
        )


def valid_rows(lf: pl.LazyFrame, table: str, plan: BucketPlan) -> pl.LazyFrame:
    """The rows the global steps see (not quarantined)."""
    if table == "events":
        return lf.with_columns(encode_action(plan.space)).filter(
            is_valid(event_reason(plan.config, plan.space, plan.as_of_end_us)))
    return lf.filter(is_valid(order_reason(plan.config, plan.as_of_end_us)))


def key_hash(table: str) -> pl.Expr:
    """64-bit hash of the duplicate key: event_id, or (order_id, line key) for order lines."""
    if table == "events":
        return pl.col("event_id").hash(seed=7).alias("_h")
    key = pl.concat_str([pl.col("order_id"), line_key()], separator="\x00")
    return key.hash(seed=7).alias("_h")


def _pending() -> pl.Expr:
    """Rows routed only once the identity map is known."""
    return pl.col("user_id").is_null() & pl.col("anonymous_id").is_not_null()


def _buckets(frame: pl.DataFrame, n: int, routed: bool) -> np.ndarray:
    """Each row's bucket (``n`` for pending rows unless ``routed``: the frame has the link)."""
    if routed:
        key = user_key_expr().fill_null("")
        return frame.select((key.hash(seed=0) % n).cast(pl.UInt32))[:, 0].to_numpy()
    # without a link: user_key_expr with a null _link_user, for every row that is not pending
    key = pl.coalesce(pl.col("user_id"), pl.lit("session:") + pl.col("session_id")).fill_null("")
    code = pl.when(_pending()).then(pl.lit(n, pl.UInt64)).otherwise(key.hash(seed=0) % n)
    return frame.select(code.cast(pl.UInt32))[:, 0].to_numpy()


def _cut(frame: pl.DataFrame, codes: np.ndarray, n: int) -> list[tuple[int, pa.Table]]:
    """One stable sort by bucket and one Arrow conversion; each bucket a zero-copy slice."""
    table = frame[np.argsort(codes, kind="stable")].to_arrow()
    counts = np.bincount(codes, minlength=n + 1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    return [(b, table.slice(int(starts[b]), int(counts[b])))
            for b in np.flatnonzero(counts).tolist()]


def _split_batch(frame: pl.DataFrame, table: str, plan: BucketPlan
                 ) -> tuple[list[tuple[int, pa.Table]], list[pl.DataFrame]]:
    ts_col = "event_ts" if table == "events" else "order_ts"
    lf = frame.lazy()
    stats = pl.collect_all([
        valid_rows(lf, table, plan).select(
            key_hash(table), pl.max_horizontal(ts_col, "ingest_ts").alias("_m")),
        lf.group_by(pl.col(PART_DATE).alias("date")).agg(pl.len().cast(pl.Int64).alias("n"))
        .select(pl.lit(table).alias("table"), "date", "n"),
        lf.filter(_pending()).select(pl.col("anonymous_id").unique()),
    ])
    return _cut(frame, _buckets(frame, plan.n_buckets, routed=False), plan.n_buckets), stats


class _Writers:
    """Arrow IPC files appended batch by batch: ``<folder>/<name>.arrow`` per bucket."""

    def __init__(self) -> None:
        self.open: dict[Path, pa.ipc.RecordBatchFileWriter] = {}
        self.schemas: dict[str, pa.Schema] = {}

    def write(self, path: Path, table: str, batch: pa.Table) -> None:
        schema = self.schemas.setdefault(table, batch.schema)
        writer = self.open.get(path)
        if writer is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = self.open[path] = pa.ipc.new_file(str(path), schema)
        writer.write_table(batch if batch.schema.equals(schema) else batch.cast(schema))

    def close(self) -> None:
        for writer in self.open.values():
            writer.close()
        self.open.clear()


def _bucket_file(plan: BucketPlan, table: str, b: int, name: str) -> Path:
    if b == plan.n_buckets:
        return plan.folder("pending", table, f"{name}.arrow")
    return plan.folder("in", table, f"{b:05d}", f"{name}.arrow")


def split_files(plan: BucketPlan, files: Sequence[InputFile], group: int, workers: int = 1
                ) -> SplitResult:
    """Step 1 for one group of input files (in input order): every row to its bucket's file,
    pending rows aside, and the group's global pieces. ``workers`` batches at the same time
    (written in order, so the files do not depend on it)."""
    mapping = resolve_mapping(plan.config)
    name = f"g{group:05d}"
    writers = _Writers()
    stats: dict[str, list[pl.DataFrame]] = {"rows": [], "ids": [], "latest": []}
    hashes: dict[str, list[np.ndarray]] = {t: [] for t in TABLES}
    latest: dt.datetime | None = None

    def write(table: str, cuts: list[tuple[int, pa.Table]]) -> None:
        for b, part in cuts:
            writers.write(_bucket_file(plan, table, b, name), table, part)

    # batches are read here, split in ``workers`` threads, and appended in a background
    # thread, in order
    try:
        with Serial(workers + 1) as background:
            _split_tables(plan, files, mapping, workers, background, write, hashes, stats)
            for got in stats.pop("latest"):
                m = got["_m"].max()
                if isinstance(m, dt.datetime) and (latest is None or m > latest):
                    latest = m
    finally:
        writers.close()
    digested = [f for f in files if f.relpath in plan.hashed]
    part = SplitResult(
        pl.concat([pl.DataFrame(schema=_ROWS_IN), *stats["rows"]]),
        {t: np.concatenate([np.zeros(0, np.uint64), *hashes[t]]) for t in TABLES},
        latest,
        pl.concat([pl.DataFrame(schema={"anonymous_id": pl.String()}), *stats["ids"]])
        ["anonymous_id"],
        dict(zip([f.relpath for f in digested],
                 in_order(lambda f: sha256(f.path), digested, workers), strict=True)),
    )
    return SplitResult.merge([part])


def _split_tables(
    plan: BucketPlan, files: Sequence[InputFile], mapping: Any, workers: int,
    background: Serial, write: Callable[[str, list[tuple[int, pa.Table]]], None],
    hashes: dict[str, list[np.ndarray]], stats: dict[str, list[pl.DataFrame]],
) -> None:
    config, continuous = plan.config, plan.space.continuous
    for table in TABLES:
        scans = []
        for f in files:
            if f.table != table:
                continue
            lf = scan_table(f, config, continuous=continuous, mapping=mapping)
            if f.relpath in plan.decisions_only:
                lf = lf.filter(pl.col("event_type") == "decision")
            scans.append(lf)
        batches = (frame for lf in scans for frame in lf.collect_batches(chunk_size=BATCH)
                   if frame.height)
        cut = partial(_split_batch, table=table, plan=plan)
        for cuts, (valid, rows, ids) in in_order(cut, batches, workers):
            background.submit(partial(write, table, cuts))
            hashes[table].append(valid["_h"].to_numpy())
            stats["latest"].append(valid.select("_m"))
            stats["rows"].append(rows)
            stats["ids"].append(ids)


def repeated_hashes(hashes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per table, the key hashes seen more than once (the only keys that can have copies)."""
    out = {}
    for table, values in hashes.items():
        ordered = np.sort(values)
        out[table] = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    return out


# ----------------------------------------------------------------------------- step 2: globals
@dataclass
class BucketKeys:
    """What the rows of one bucket give the global steps: link pairs and duplicate candidates."""

    pairs: pl.DataFrame
    dup_rows: dict[str, pl.DataFrame]


def bucket_files(plan: BucketPlan, table: str, b: int) -> list[Path]:
    """Bucket ``b``'s files of ``table``: split groups in order, then routed pending rows."""
    folder = plan.folder("in", table, f"{b:05d}")
    return sorted(folder.glob("*.arrow")) if folder.is_dir() else []


def bucket_keys(plan: BucketPlan, b: int, wanted: pl.Series,
                repeated: Mapping[str, np.ndarray], *, links: bool = True) -> BucketKeys:
    """:func:`file_keys` of bucket ``b``'s files."""
    return file_keys(plan, {t: bucket_files(plan, t, b) for t in TABLES}, wanted, repeated,
                     links=links)


def pending_keys(plan: BucketPlan, group: int, repeated: Mapping[str, np.ndarray]
                 ) -> BucketKeys:
    """:func:`file_keys` of group ``group``'s pending rows (duplicate candidates only: rows
    without a user_id make no identity link)."""
    files = {t: [p] if (p := plan.folder("pending", t, f"g{group:05d}.arrow")).is_file() else []
             for t in TABLES}
    return file_keys(plan, files, pl.Series("anonymous_id", [], pl.String), repeated,
                     links=False)


def file_keys(plan: BucketPlan, files: Mapping[str, list[Path]], wanted: pl.Series,
              repeated: Mapping[str, np.ndarray], *, links: bool = True) -> BucketKeys:
    """The valid rows of split ``files`` that carry both ids with an anonymous id in ``wanted``
    (as identity-link pairs, unless ``links`` is off), and the key columns of the valid rows
    whose duplicate-key hash is in ``repeated``. Reads the memory-mapped Arrow files, the few
    columns the filters need, then validates only the rows that pass them."""
    pairs = [pl.DataFrame(schema=_PAIRS)]
    dups: dict[str, pl.DataFrame] = {}
    want_links = links and wanted.len() > 0
    for table in TABLES:
        rep = pl.Series("_r", repeated.get(table, np.zeros(0, np.uint64)), pl.UInt64)
        dups[table] = pl.DataFrame()
        if not files.get(table) or not (want_links or rep.len()):
            continue
        linkable = (pl.col("anonymous_id").is_in(wanted.implode())
                    & pl.col("user_id").is_not_null())
        repeats = key_hash(table).is_in(rep.implode())
        cond = (linkable if want_links else pl.lit(False)) | (
            repeats if rep.len() else pl.lit(False))
        rows = valid_rows(pl.scan_ipc(files[table]).filter(cond), table, plan).collect()
        if want_links:
            ts_col = "event_ts" if table == "events" else "order_ts"
            pairs.append(rows.filter(linkable).select(
                "anonymous_id", "user_id", pl.col(ts_col).alias("event_ts")))
        if rep.len():
            dups[table] = rows.filter(repeats).select(_DUP_COLUMNS[table])
    return BucketKeys(pl.concat(pairs), dups)


def file_links(plan: BucketPlan, file: InputFile, wanted: pl.Series
               ) -> tuple[pl.DataFrame, dt.datetime | None]:
    """Link pairs of ``wanted`` ids and the latest valid time of one input file (a nightly run
    stitches over every partition, not only those it transforms)."""
    lf = valid_rows(scan_table(file, plan.config, continuous=plan.space.continuous,
                               mapping=resolve_mapping(plan.config)), file.table, plan)
    ts_col = "event_ts" if file.table == "events" else "order_ts"
    pairs, latest = pl.collect_all([
        lf.filter(pl.col("anonymous_id").is_in(wanted.implode())
                  & pl.col("user_id").is_not_null())
        .select("anonymous_id", "user_id", pl.col(ts_col).alias("event_ts")),
        lf.select(pl.max_horizontal(ts_col, "ingest_ts").max().alias("m")),
    ])
    m = latest["m"][0]
    return pairs, m if isinstance(m, dt.datetime) else None


def identity_map(pairs: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """The identity map of link pairs (anonymous_id, user_id, event_ts) from any pieces."""
    both = pl.concat([pl.DataFrame(schema=_PAIRS), *pairs])
    no_orders = pl.LazyFrame(schema={"anonymous_id": pl.String, "user_id": pl.String,
                                     "order_ts": TS})
    return identity_links(both.lazy(), no_orders).collect()


def global_steps(
    plan: BucketPlan, split: SplitResult, keys: Iterable[BucketKeys],
    file_links: Sequence[tuple[pl.DataFrame, dt.datetime | None]] | None = None,
) -> GlobalInputs:
    """The global inputs from the split's pieces and every bucket's keys: the identity map of
    the ids looked up, the duplicate rows (exact: every copy of a key meets here) and the end of
    the data. ``file_links``: a nightly run's links and latest times, read from every input
    file (they replace the buckets' link pairs)."""
    got = list(keys)
    latest = split.latest
    if file_links is None:
        links = identity_map(k.pairs for k in got)
    else:
        links = identity_map(p for p, _ in file_links)
        times = [t for _, t in file_links if t is not None]
        latest = max([*times, *([latest] if latest is not None else [])], default=None)
    found: dict[str, pl.LazyFrame] = {}
    for table in TABLES:
        parts = [k.dup_rows[table] for k in got if k.dup_rows[table].width]
        empty = pl.LazyFrame(schema={c: _KEY_TYPES[c] for c in _DUP_COLUMNS[table]})
        found[table] = pl.concat(parts).lazy() if parts else empty
    dups = duplicate_rows(found["events"], found["orders"]).collect()
    return GlobalInputs(plan.space, links, dups, end_of_data(latest, plan.as_of_end_us),
                        as_of_end_us=plan.as_of_end_us)


def route_pending(plan: BucketPlan, links: pl.DataFrame, group: int) -> None:
    """Append group ``group``'s pending rows to their stitched user's bucket
    (``in/<table>/<bucket>/p<group>.arrow``)."""
    writers = _Writers()
    try:
        for table in TABLES:
            path = plan.folder("pending", table, f"g{group:05d}.arrow")
            if not path.is_file():
                continue
            frame = pl.read_ipc(path)
            keyed = frame.select("anonymous_id", "user_id", "session_id").join(
                links.select("anonymous_id", LINK_USER), on="anonymous_id", how="left",
                maintain_order="left")
            codes = _buckets(keyed, plan.n_buckets, routed=True)
            for b, part in _cut(frame, codes, plan.n_buckets):
                writers.write(_bucket_file(plan, table, b, f"p{group:05d}"), table, part)
            path.unlink()
    finally:
        writers.close()


# ----------------------------------------------------------------------------- step 3: buckets
def load_bucket(plan: BucketPlan, table: str, b: int, schema: pl.Schema) -> pl.DataFrame:
    """Bucket ``b``'s rows of ``table`` in input order (files in order, rows in file order)."""
    files = bucket_files(plan, table, b)
    if not files:
        return pl.DataFrame(schema=schema)
    parts = [pl.read_ipc(f) for f in files]
    frame = pl.concat([p if p.schema == schema else p.cast(dict(schema))  # type: ignore[arg-type]
                       for p in parts]).rechunk()
    if any(f.name.startswith("p") for f in files):  # routed pending rows: back in input order
        frame = frame[_input_order(frame, plan.order)]
    return frame


def _input_order(frame: pl.DataFrame, order: Sequence[str]) -> np.ndarray:
    """The permutation that puts rows back in input order: by (file's place in ``order``,
    row number). Files come in runs (each split or routed file is in input order), so the
    file's place is looked up once per run, and the stable sort merges the sorted runs."""
    files = frame.get_column(SOURCE_FILE)
    run = files.rle_id().to_numpy()
    starts = np.flatnonzero(np.diff(run, prepend=-1))
    rank = {name: i for i, name in enumerate(order)}
    place = np.array([rank[name] for name in files.gather(starts).to_list()], np.uint64)
    key = (place[run] << np.uint64(32)) | frame.get_column(ROW_NR).to_numpy().astype(np.uint64)
    return np.argsort(key, kind="stable")


def transform_bucket(plan: BucketPlan, b: int, g: GlobalInputs,
                     schemas: Mapping[str, pl.Schema]) -> PartitionOutput:
    """Step 3: bucket ``b`` through :func:`transform_partition`; its input files are removed."""
    ev = load_bucket(plan, "events", b, schemas["events"])
    od = load_bucket(plan, "orders", b, schemas["orders"])
    out = transform_partition(ev, od, g, plan.config)
    for table in TABLES:
        for f in bucket_files(plan, table, b):
            f.unlink()
    return out


def dated_pieces(out: PartitionOutput) -> Iterator[tuple[str, str, pl.DataFrame]]:
    """A bucket's outputs per output date: (kind, date, rows), transitions in
    (episode_id, step) order (decision date), quarantine rows by partition date."""
    for kind, frame, date in (("transitions", out.transitions, pl.col("decision_ts").dt.date()),
                              ("quarantine", out.quarantine, pl.col("partition_date"))):
        if frame.height == 0:
            continue
        keyed = frame.with_columns(date.alias("_date"))
        for part in keyed.partition_by("_date", maintain_order=True):
            day = part["_date"][0]
            assert isinstance(day, dt.date)
            yield kind, day.isoformat(), part.drop("_date")


@dataclass
class MemoryPieces:
    """The local engine's outputs, kept in memory per (kind, date) in bucket order."""

    pieces: dict[tuple[str, str], list[pl.DataFrame]] = field(default_factory=dict)
    counts: list[pl.DataFrame] = field(default_factory=list)

    def put(self, out: PartitionOutput) -> None:
        self.counts.append(out.counts)
        for kind, day, part in dated_pieces(out):
            self.pieces.setdefault((kind, day), []).append(part)

    def dates(self, kind: str) -> list[str]:
        return sorted(d for k, d in self.pieces if k == kind)

    def get(self, kind: str, day: str) -> list[pl.DataFrame]:
        return self.pieces.get((kind, day), [])

    def pop(self, kind: str, day: str) -> list[pl.DataFrame]:
        return self.pieces.pop((kind, day), [])

    def transitions(self) -> list[pl.DataFrame]:
        return [p for (k, _), parts in sorted(self.pieces.items()) if k == "transitions"
                for p in parts]


def write_pieces(plan: BucketPlan, b: int, out: PartitionOutput) -> pl.DataFrame:
    """The Spark engine's step 3 output: ``out/<kind>/date=D/<bucket>.arrow``; returns the
    counts."""
    for kind, day, part in dated_pieces(out):
        path = plan.folder("out", kind, f"date={day}", f"{b:05d}.arrow")
        path.parent.mkdir(parents=True, exist_ok=True)
        part.write_ipc(path, compression="uncompressed")
    return out.counts


def stored_dates(plan: BucketPlan, kind: str) -> list[str]:
    folder = plan.folder("out", kind)
    return sorted(p.name.removeprefix("date=") for p in folder.glob("date=*")) \
        if folder.is_dir() else []


def stored_pieces(plan: BucketPlan, kind: str, day: str, columns: list[str] | None = None
                  ) -> list[pl.DataFrame]:
    """The pieces :func:`write_pieces` wrote for ``day`` (``columns`` only), in bucket order."""
    files = sorted(plan.folder("out", kind, f"date={day}").glob("*.arrow"))
    return [pl.read_ipc(f, columns=columns) for f in files]


# ----------------------------------------------------------------------------- step 4: finish
def fit_scaling(names: list[str], pieces: Sequence[pl.DataFrame], n_ranges: int,
                workers: int = 1) -> Scaling:
    """:meth:`Scaling.fit` of every raw feature row of ``pieces`` (each sorted by
    (episode_id, step), users disjoint or not) in global (episode_id, step) order, streamed.

    The rows are taken range after range of episode ids (bounds from a sample of every piece);
    each range's rows are sliced out of every piece (contiguous: the pieces are sorted), sorted
    (``workers`` ranges at a time) and summed row after row, which is how numpy reduces a
    C-ordered matrix along its first axis (with two or more features), so the mean and standard
    deviation equal ``Scaling.fit`` of the whole sorted matrix to the bit. A second pass over
    the ranges sums the squared deviations.
    """
    k = len(names)
    pieces = [p for p in pieces if p.height]
    if not pieces:
        return Scaling.fit(names, np.zeros((0, k)))
    sample = pl.concat([p["episode_id"].gather_every(max(1, p.height // 64)) for p in pieces])
    sample = sample.sort()
    bounds = sample.gather([sample.len() * i // n_ranges for i in range(1, n_ranges)]).unique(
        maintain_order=True) if n_ranges > 1 else sample.clear()
    cuts = [np.concatenate([[0], p["episode_id"].search_sorted(bounds, side="left").to_numpy(),
                            [p.height]]) for p in pieces]
    orders: dict[int, np.ndarray] = {}  # per range, its rows' (episode_id, step) order

    def matrix(r: int) -> np.ndarray:
        parts = [p.slice(int(c[r]), int(c[r + 1] - c[r]))
                 for p, c in zip(pieces, cuts, strict=True) if c[r + 1] > c[r]]
        if not parts:
            return np.zeros((0, k))
        if r not in orders:  # sorted once; the second pass gathers in the same order
            keys = pl.concat([p.select(*TRANS_SORT) for p in parts], rechunk=False)
            orders[r] = keys.select(pl.arg_sort_by(*TRANS_SORT)).to_series().to_numpy()
        raw = np.concatenate([p[RAW_OBS].to_numpy().reshape(p.height, k) for p in parts])
        return np.take(raw.astype(np.float64, copy=False), orders[r], axis=0)

    def ranges() -> Iterator[np.ndarray]:
        yield from in_order(matrix, range(bounds.len() + 1), workers)

    if k < 2:  # numpy sums a single column pairwise: fit on the (small) column itself
        return Scaling.fit(names, np.concatenate(list(ranges())))
    total: np.ndarray | None = None
    n = 0
    for raw in ranges():
        total = _row_sum(total, raw)
        n += raw.shape[0]
    assert total is not None
    mean = total / n
    squares: np.ndarray | None = None
    for raw in ranges():
        dev = raw - mean
        squares = _row_sum(squares, dev * dev)
    assert squares is not None
    std = np.sqrt(squares / n)
    std = np.where(std > 1e-12, std, 1.0)
    return Scaling(tuple(names), mean, std)


def _row_sum(acc: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """``acc`` plus the rows, added one after another (numpy's order along a C-ordered first
    axis: chunked sums equal the sum of the whole matrix to the bit)."""
    block = rows if acc is None else np.concatenate([acc[None, :], rows])
    return np.add.reduce(block, axis=0)


def date_frame(kind: str, pieces: Sequence[pl.DataFrame], scaling: Scaling | None,
               n_features: int) -> pl.DataFrame:
    """One output date's rows from its pieces: sorted, and scaled (transitions)."""
    frame = pl.concat(list(pieces))
    if kind == "transitions":
        frame = frame.sort(*TRANS_SORT)
        return frame if scaling is None else apply_scaling(frame, scaling, n_features)
    return frame.sort(*QUAR_SORT)


def publish_date(target: Path, kind: str, day: str, pieces: Sequence[pl.DataFrame],
                 scaling: Scaling | None, n_features: int,
                 write: Callable[[pl.DataFrame, Path], None] = write_parquet) -> pl.DataFrame:
    """Write ``target/<kind>/date=D/part-00000.parquet`` from the date's pieces (with
    ``write``: the dataset writer); returns the rows written."""
    frame = date_frame(kind, pieces, scaling, n_features)
    write(frame, target / kind / f"date={day}" / "part-00000.parquet")
    return frame


def estimate_rows(files: Sequence[InputFile]) -> int:
    """Input rows, cheaply (Parquet footers; CSV line counts), to choose the bucket count."""
    import pyarrow.parquet as pq

    rows = 0
    for f in files:
        if f.path.suffix == ".parquet":
            try:
                rows += pq.ParquetFile(f.path).metadata.num_rows
            except (OSError, pa.ArrowException):
                continue  # the reader names the broken file later
        else:
            lines = 0
            with f.path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    lines += chunk.count(b"\n")
            rows += max(0, lines - 1)
    return rows
