"""ETL at scale: the local engine (user buckets) against the Spark engine (local mode).

    .venv/bin/python -m benchmarks.etl_scale [--small] [--events 1000000,10000000]
                                             [--buckets 1,8,auto] [--master local[2]] [--no-spark]
                                             [--partitions N] [--input-dir RAW]

For each input size, simulates about N raw events (promotion scenario, 28 days), writes them as
raw-log Parquet partitions (or reuses ``--input-dir``), then runs each engine in a fresh
subprocess:

* ``local``: :func:`etl.run_etl` (backfill, ``collect=False``) per bucket count (``auto``:
  ``EtlConfig``'s choice from the input size); wall and CPU seconds (user + system) and peak
  resident memory of the process, from ``wait4``'s ``ru_maxrss``, and the seconds of
  ``run_etl`` alone;
* ``spark``: :func:`etl.spark_engine.run_etl_spark` with ``--master``; start-up is measured
  apart: ``startup`` (JVM and Spark session) and ``warm-up`` (every Python worker started, with
  the ETL imported), then the ETL itself, with its steps. CPU seconds add the driver process
  and, through psutil, the JVM and the Python workers (their own and their reaped children's
  time); memory is the driver's peak plus the JVM's resident set at the end.

Prints ``run_etl`` alone against ``run_etl_spark`` alone (the ``auto`` local run when there is
one) and their ratio from the same run, and checks that the Spark run's manifest counts equal
the local run's (the exact equality of every file is a test: ``tests/etl/test_spark_engine.py``).
Figures on a shared machine vary by tens of percent; compare ratios from the same run.
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

EVENTS_PER_USER = 32.0  # promotion logs of 28 days: about this many events per simulated user


# ----------------------------------------------------------------------------- children
def _child_local(args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    from etl import EtlConfig, run_etl

    one = args.buckets_one
    config = EtlConfig(n_buckets=one if one == "auto" else int(one))
    start = time.perf_counter()
    res = run_etl(args.input, args.out, config, collect=False)  # the output stays on disk
    etl = time.perf_counter() - start
    rows = res.counts["events"]["rows_in"] + res.counts["orders"]["rows_in"]
    written = pl.scan_parquet(Path(args.out) / "transitions" / "**" / "*.parquet")
    return {"transitions": int(written.select(pl.len()).collect().item()),
            "buckets": config.bucket_count(rows), "counts": res.counts, "etl": etl}


def _tree_cpu_and_rss() -> tuple[float, float]:
    """CPU seconds and resident MiB of this process's descendants (JVM, Python workers)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil ships with the dev environment
        return float("nan"), float("nan")
    cpu = rss = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            cpu += t.user + t.system + t.children_user + t.children_system
            rss += child.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return cpu, rss


def _child_spark(args: argparse.Namespace) -> dict[str, Any]:
    from etl import EtlConfig
    from etl.spark_engine import SparkConfig, run_etl_spark, spark_session

    settings = SparkConfig(
        master=args.master,
        partitions=args.partitions or None,
        fast_start=False,
        conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
              "spark.driver.memory": args.driver_memory},
    )
    t0 = time.perf_counter()
    spark = spark_session(settings)
    t1 = time.perf_counter()
    # warm-up: every Python worker started, with polars and the ETL imported (workers are reused)
    sc = spark.sparkContext
    n = sc.defaultParallelism
    sc.parallelize(range(n), n).map(lambda _: __import__("etl.buckets").__name__).collect()
    t2 = time.perf_counter()
    timings: dict[str, float] = {}
    res = run_etl_spark(args.input, args.out, EtlConfig(), spark=spark, settings=settings,
                        collect=False, timings=timings)
    t3 = time.perf_counter()
    tree_cpu, jvm_rss = _tree_cpu_and_rss()
    spark.stop()
    return {"startup": t1 - t0, "warmup": t2 - t1, "etl": t3 - t2, "steps": timings,
            "tree_cpu": tree_cpu, "jvm_rss_mib": jvm_rss, "counts": res.counts}


# ----------------------------------------------------------------------------- driver
def _measure(mode: str, input_dir: Path, out: Path, **extra: Any) -> dict[str, Any]:
    """Run a child in a fresh process; wall/CPU seconds and peak RSS (MiB) from wait4."""
    return measure("benchmarks.etl_scale", mode, input_dir, out, out.with_suffix(".json"), **extra)


def _child_simulate(args: argparse.Namespace) -> dict[str, Any]:
    return simulate_child(args, EVENTS_PER_USER)


def _simulate(n_events: int, root: Path) -> int:
    """Simulate in a child process, so that this (parent) process stays small: a child's
    ``ru_maxrss`` starts from the size of the process it was forked from."""
    root.mkdir(parents=True, exist_ok=True)
    return int(_measure("simulate", root, root, rows=n_events)["events_in"])


def _count(raw: Path) -> int:
    import polars as pl

    return int(pl.scan_parquet(raw / "events" / "**" / "*.parquet").select(pl.len())
               .collect().item())


def _row(name: str, events: int, wall: float, cpu: float, mib: float, note: str = "") -> str:
    return (f"{name:<28} {events:>11,} {wall:>8.1f} {cpu:>8.1f} {mib:>9.0f} "
            f"{events / wall:>11,.0f}  {note}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child``, one measured run)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--events", default="1000000",
                   help="raw event counts to simulate, comma-separated (e.g. 1000000,10000000)")
    p.add_argument("--buckets", default="1,8,auto",
                   help="local bucket counts, comma-separated ('auto': EtlConfig's choice)")
    p.add_argument("--input-dir", type=Path, default=None,
                   help="reuse raw logs already simulated (skip the simulation)")
    p.add_argument("--master", default="local[2]", help="Spark master URL")
    p.add_argument("--partitions", type=int, default=0,
                   help="Spark user-hash buckets (0: the engine's choice)")
    p.add_argument("--driver-memory", default="4g", help="spark.driver.memory")
    p.add_argument("--no-spark", action="store_true", help="local engine only")
    p.add_argument("--small", action="store_true", help="quick run: 100k events")
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    p.add_argument("--child", choices=["local", "spark", "simulate"], help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--buckets-one", default="1", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        fn = {"local": _child_local, "spark": _child_spark,
              "simulate": _child_simulate}[args.child]
        args.result.write_text(json.dumps(fn(args), default=str))
        return 0

    sizes = [100_000] if args.small else [int(n) for n in args.events.split(",") if n]
    buckets = [b for b in args.buckets.split(",") if b]
    with tempfile.TemporaryDirectory(prefix="etl_scale_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"machine: {os.cpu_count()} cores (shared with other jobs: figures are noisy); "
              f"load average {os.getloadavg()[0]:.1f}")
        header = (f"{'run':<28} {'events':>11} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9} "
                  f"{'events/s':>11}")
        for size in sizes:
            t0 = time.perf_counter()
            raw = args.input_dir or work / f"raw_{size}"
            n_events = _simulate(size, raw) if args.input_dir is None else _count(raw)
            print(f"\nsimulated {n_events:,} events in {time.perf_counter() - t0:.1f} s; "
                  f"load average {os.getloadavg()[0]:.1f}")
            print(header)
            local = {b: _measure("local", raw, work / f"local_{size}_{b}", buckets_one=b)
                     for b in buckets}
            for b, info in local.items():
                name = f"local, {b} bucket(s)" if b != "auto" else \
                    f"local, auto ({info['buckets']})"
                print(_row(name, n_events, info["wall"], info["cpu"], info["rss_mib"]))
            if args.no_spark:
                continue
            sp = _measure("spark", raw, work / f"spark_{size}", master=args.master,
                          partitions=args.partitions, driver_memory=args.driver_memory)
            cpu = sp["cpu"] + sp["tree_cpu"]
            mem = sp["rss_mib"] + sp["jvm_rss_mib"]
            print(_row(f"spark {args.master}, all", n_events, sp["wall"], cpu, mem,
                       "process wall incl. JVM start; cpu: driver + JVM + workers"))
            print(_row("  spark ETL only", n_events, sp["etl"], float("nan"), float("nan"),
                       f"startup {sp['startup']:.1f} s + first-task warm-up "
                       f"{sp['warmup']:.1f} s excluded"))
            steps = ", ".join(f"{k} {v:.1f}" for k, v in sp["steps"].items())
            print(f"  spark steps (s): {steps}")
            first = "auto" if "auto" in local else next(iter(local))
            base = local[first]
            same = sp["counts"] == base["counts"]
            print(f"  local {first} run_etl alone: {base['etl']:.1f} s; Spark ETL alone: "
                  f"{sp['etl']:.1f} s; Spark / local: {sp['etl'] / base['etl']:.2f}x "
                  f"(start-up {sp['startup']:.1f} s + warm-up {sp['warmup']:.1f} s apart); "
                  f"manifest counts identical: {'yes' if same else 'NO'}; load average "
                  f"{os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
