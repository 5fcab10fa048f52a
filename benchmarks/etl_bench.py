"""ETL speed and memory: the ETL against the floor of its I/O, and against plain pandas.

    .venv/bin/python -m benchmarks.etl_bench [--events N] [--buckets 1,8,auto] [--dirty 1] [--small]
                                             [--input-dir RAW] [--keep DIR]

Simulates about N raw events (promotion scenario, the simulator's logging policy), writes them
as raw-log Parquet partitions (or reuses ``--input-dir``, e.g. a ``--keep`` folder's ``raw/``, to
compare code versions on one input), then measures, each in a fresh subprocess (wall and CPU
seconds, peak resident memory from ``wait4``'s ``ru_maxrss``):

* ``etl``: :func:`etl.run_etl` (backfill, ``collect=False``: the output stays on disk) with each
  bucket count in ``--buckets`` (``auto``: ``EtlConfig``'s choice from the input size);
* ``floor``: polars reading the same inputs, sorting the events by user and time, and writing as
  many rows as the ETL wrote transitions (a lower bound for any ETL of these files);
* ``pandas``: a straightforward pandas implementation of the same transform (dedup, identity
  map, per-user windowed features with a loop over users, session attribution, episodes) on a
  smaller input (``--pandas-events``), next to the polars ETL on that same input.

Prints a table with events per second and the ETL / floor ratio. Timings taken on a shared
machine vary by tens of percent; compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._children import measure, simulate_child

EVENTS_PER_USER = 27.0  # promotion logs of 28 days: about this many events per simulated user


# ----------------------------------------------------------------------------- children
def _buckets(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _child_etl(args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    from etl import EtlConfig, run_etl

    config = EtlConfig(n_buckets=_buckets(args.buckets_one))
    res = run_etl(args.input, args.out, config, collect=False)  # the output stays on disk
    rows = res.counts["events"]["rows_in"] + res.counts["orders"]["rows_in"]
    written = pl.scan_parquet(Path(args.out) / "transitions" / "**" / "*.parquet")
    return {"transitions": int(written.select(pl.len()).collect().item()),
            "buckets": config.bucket_count(rows),
            "events_in": res.counts["events"]["rows_in"],
            "orders_in": res.counts["orders"]["rows_in"]}


def _child_floor(args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    events = pl.scan_parquet(Path(args.input) / "events" / "**" / "*.parquet")
    orders = pl.scan_parquet(Path(args.input) / "orders" / "**" / "*.parquet")
    ev, od = pl.collect_all([events, orders])
    ev = ev.sort(pl.coalesce("user_id", "anonymous_id"), "event_ts")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ev.head(args.rows).write_parquet(out / "floor.parquet", compression="zstd")
    return {"events_in": ev.height, "orders_in": od.height}


def _child_pandas(args: argparse.Namespace) -> dict[str, Any]:
    """The same transform, written the straightforward pandas way (one pass per user)."""
    import numpy as np
    import pandas as pd

    root = Path(args.input)
    ev = pd.concat([pd.read_parquet(p) for p in sorted((root / "events").rglob("*.parquet"))])
    od = pd.concat([pd.read_parquet(p) for p in sorted((root / "orders").rglob("*.parquet"))])
    n_in = len(ev)
    ev = ev[ev["event_id"].notna() & ev["event_ts"].notna()]
    ev = ev.sort_values(["ingest_ts", "event_id"]).drop_duplicates("event_id")
    both = ev.dropna(subset=["user_id", "anonymous_id"]).sort_values("event_ts")
    links = both.groupby("anonymous_id")["user_id"].first()
    ev["user"] = ev["user_id"].fillna(ev["anonymous_id"].map(links))
    ev["user"] = ev["user"].fillna("anon:" + ev["anonymous_id"].astype(str))
    od["user"] = od["user_id"].fillna(od["anonymous_id"].map(links))
    ev = ev.sort_values(["user", "event_ts", "event_id"])
    window = np.timedelta64(28, "D")
    rows = []
    placed = od[od["status"] == "placed"].copy()
    placed["net"] = placed["quantity"] * placed["unit_price"] - placed["discount_amount"]
    orders_by_user = {u: g.sort_values("order_ts") for u, g in placed.groupby("user")}
    for user, g in ev.groupby("user", sort=False):
        ts = g["event_ts"].to_numpy()
        etype = g["event_type"].to_numpy()
        is_view = np.isin(etype, ["page_view", "view_item"])
        is_cart = etype == "add_to_cart"
        is_dec = etype == "decision"
        uo = orders_by_user.get(user)
        ots = uo["order_ts"].to_numpy() if uo is not None else np.array([], dtype=ts.dtype)
        onet = uo["net"].to_numpy() if uo is not None else np.array([])
        for i in np.flatnonzero(is_dec):
            t = ts[i]
            lo = np.searchsorted(ts, t - window, "left")
            hi = np.searchsorted(ts, t, "left")
            olo = np.searchsorted(ots, t - window, "left")
            ohi = np.searchsorted(ots, t, "left")
            rows.append((g["decision_id"].iat[i], user, g["session_id"].iat[i], t,
                         hi - lo, is_view[lo:hi].sum(), is_cart[lo:hi].sum(),
                         is_dec[lo:hi].sum(), ohi - olo, onet[olo:ohi].sum()))
    dec = pd.DataFrame(rows, columns=["decision_id", "user", "session_id", "decision_ts",
                                      "n_events", "n_views", "n_carts", "n_offers", "n_orders",
                                      "monetary"])
    # reward: session's placed lines minus reversals within 14 days
    placed["parts"] = placed["margin"] - placed["discount_amount"]
    per_session = placed.groupby("session_id")["parts"].sum()
    rev = od[od["status"] != "placed"].merge(
        placed[["order_id", "line_no", "session_id"]].rename(columns={"order_id": "parent"}),
        left_on=["parent_order_id", "line_no"], right_on=["parent", "line_no"],
        suffixes=("", "_p"))
    rev = rev.merge(dec[["session_id", "decision_ts"]], left_on="session_id_p",
                    right_on="session_id", suffixes=("", "_d"))
    rev = rev[rev["order_ts"] <= rev["decision_ts"] + np.timedelta64(14, "D")]
    returns = (rev["margin"] - rev["discount_amount"]).groupby(rev["session_id_p"]).sum()
    dec["reward"] = dec["session_id"].map(per_session).fillna(0.0) - dec["session_id"].map(
        returns).fillna(0.0)
    dec = dec.sort_values(["user", "decision_ts"])
    dec["step"] = dec.groupby("user").cumcount() % 10
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dec.to_parquet(out / "pandas.parquet")
    return {"transitions": len(dec), "events_in": n_in,
            "rewards": dict(zip(dec["decision_id"], dec["reward"].round(6), strict=True))}


# ----------------------------------------------------------------------------- driver
def _measure(mode: str, input_dir: Path, out: Path, **extra: Any) -> dict[str, Any]:
    """Run a child in a fresh process; wall/CPU seconds and peak RSS (MiB) from wait4."""
    result = out.parent / f"{out.name}.{mode}.json"
    return measure("benchmarks.etl_bench", mode, input_dir, out, result, **extra)


def _child_simulate(args: argparse.Namespace) -> dict[str, Any]:
    return simulate_child(args, EVENTS_PER_USER)


def _simulate(n_events: int, root: Path, dirty: int = 0) -> int:
    """Simulate in a child process, so that this (parent) process stays small: a child's
    ``ru_maxrss`` starts from the size of the process it was forked from."""
    return int(_measure("simulate", root, root, rows=n_events, dirty=dirty)["events_in"])


def _count(raw: Path) -> int:
    """The events of raw logs already simulated."""
    import polars as pl

    return int(pl.scan_parquet(raw / "events" / "**" / "*.parquet").select(pl.len())
               .collect().item())


def _row(name: str, info: dict[str, Any], events: int, floor: dict[str, Any] | None) -> str:
    ratio = f"{info['work'] / floor['work']:6.2f}" if floor else "     -"
    return (f"{name:<24} {events:>10,} {info['wall']:>7.2f} {info['work']:>7.2f} "
            f"{info['cpu']:>7.2f} {info['rss_mib']:>8.0f} {events / info['work']:>11,.0f} "
            f"{ratio}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child``, one measured step)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="raw events to simulate")
    p.add_argument("--buckets", default="1,8,auto",
                   help="bucket counts to run, comma-separated ('auto': EtlConfig's choice)")
    p.add_argument("--pandas-events", type=int, default=100_000,
                   help="input size of the pandas comparison (0: skip)")
    p.add_argument("--small", action="store_true", help="quick run: 100k events, 20k for pandas")
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    p.add_argument("--dirty", type=int, choices=[0, 1], default=0,
                   help="1: simulate with every kind of dirt on (anonymous sessions stitched at "
                   "login, bots, duplicates, late rows, reversals)")
    p.add_argument("--input-dir", type=Path, default=None,
                   help="reuse raw logs already simulated (e.g. a --keep folder's raw/)")
    p.add_argument("--child", choices=["etl", "floor", "pandas", "simulate"],
                   help=argparse.SUPPRESS)
    p.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--buckets-one", default="1", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        fn = {"etl": _child_etl, "floor": _child_floor, "pandas": _child_pandas,
              "simulate": _child_simulate}[args.child]
        import polars  # noqa: F401  (imports are not part of the work measured)

        if args.child in ("etl", "simulate"):
            import etl  # noqa: F401
        if args.child == "pandas":
            import pandas
        start = time.perf_counter()
        info = fn(args)
        info["work"] = time.perf_counter() - start
        args.result.write_text(json.dumps(info, default=str))
        return 0

    if args.small:
        args.events, args.pandas_events = 100_000, 20_000
    buckets = [b for b in args.buckets.split(",") if b]
    with tempfile.TemporaryDirectory(prefix="etl_bench_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        raw = args.input_dir or work / "raw"
        n_events = _simulate(args.events, raw, args.dirty) if args.input_dir is None \
            else _count(raw)
        kind = "dirty events" if args.dirty else "events"
        print(f"input: {n_events:,} {kind} in {time.perf_counter() - t0:.1f} s "
              f"(machine: {os.cpu_count()} cores, shared; load average "
              f"{os.getloadavg()[0]:.1f})")
        print("wall: the whole process; work: the same minus interpreter start and imports; "
              "cpu: user+sys of the process; events/s and /floor on work time")
        print(f"{'run':<24} {'events':>10} {'wall s':>7} {'work s':>7} {'cpu s':>7} "
              f"{'peak MiB':>8} {'events/s':>11} {'/floor':>6}")
        etl_runs = {b: _measure("etl", raw, work / f"etl{b}", buckets_one=b) for b in buckets}
        n_rows = next(iter(etl_runs.values()))["transitions"]
        floor = _measure("floor", raw, work / "floor", rows=n_rows)
        print(_row("floor (read+sort+write)", floor, n_events, None))
        for b, info in etl_runs.items():
            name = f"etl, {b} bucket(s)" if b != "auto" else f"etl, auto ({info['buckets']})"
            print(_row(name, info, n_events, floor))
        print(f"transitions written: {n_rows:,}")

        if args.pandas_events:
            m = _simulate(args.pandas_events, work / "raw_small")
            small_etl = _measure("etl", work / "raw_small", work / "etl_small", buckets_one="1")
            pandas = _measure("pandas", work / "raw_small", work / "pandas")
            print(_row("etl (pandas-size input)", small_etl, m, None))
            print(_row("pandas, straightforward", pandas, m, None))
            print(f"pandas / etl work time: {pandas['work'] / small_etl['work']:.1f}x "
                  f"on {m:,} events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
