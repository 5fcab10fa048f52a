"""Public logs shipped inside PyPI packages, end to end through ``ecomrl etl`` with the shipped
configs: CDNOW orders (``lifetimes`` 0.11.3, ``configs/mappings/cdnow.toml``) and the
retentioneering clickstream (``retentioneering`` 5.2.4, ``configs/mappings/retentioneering.toml``).

    .venv/bin/python -m benchmarks.real_logs [--cache bench_out/real] [--wheels DIR]

Fetches the wheels with ``pip download --no-deps`` into the cache (or copies them from
``--wheels``), unpacks the data files, runs ``ecomrl etl`` on each in a fresh process (exit code,
message, wall time) and, in this process, the same ETL with ``require_decisions = false`` (the
rows in / used / quarantined / dropped, and its time). Neither source holds a decision of the
platform, so the honest end of ``ecomrl etl`` is exit 2 with every row accounted for; the
script checks that the refusal's accounting equals the history run's.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lifetimes==0.11.3", "retentioneering==5.2.4")


@dataclass(frozen=True)
class Source:
    """One data set: the wheel it ships in, the member, where it goes, its config."""

    name: str
    wheel_prefix: str
    member: str
    table: str
    config: Path


SOURCES = (
    Source(
        "cdnow",
        "lifetimes-0.11.3",
        "lifetimes/datasets/CDNOW_master.txt",
        "orders",
        ROOT / "configs" / "mappings" / "cdnow.toml",
    ),
    Source(
        "retentioneering",
        "retentioneering-5.2.4",
        "retentioneering/datasets/ecom.csv.gz",
        "events",
        ROOT / "configs" / "mappings" / "retentioneering.toml",
    ),
)


def _wheels(cache: Path, local: Path | None) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    missing = [s for s in SOURCES if _wheel(cache, s) is None]
    if not missing:
        return
    if local is not None:
        for path in local.glob("*.whl"):
            shutil.copy(path, cache / path.name)
        return
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", *PACKAGES, "-d", str(cache)],
        check=True,
    )


def _wheel(cache: Path, source: Source) -> Path | None:
    for path in cache.glob("*.whl"):
        if path.name.lower().startswith(source.wheel_prefix):
            return path
    return None


def _unpack(cache: Path, source: Source) -> Path:
    """``<cache>/<name>/raw/<table>/<file>`` from the wheel (gunzipped); the raw folder."""
    raw = cache / source.name / "raw"
    wheel = _wheel(cache, source)
    if wheel is None:
        raise SystemExit(f"no wheel for {source.name} in {cache}")
    name = Path(source.member).name.removesuffix(".gz")
    target = raw / source.table / (name if name.endswith((".csv", ".txt")) else f"{name}.txt")
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(source.member)
        target.write_bytes(gzip.decompress(data) if source.member.endswith(".gz") else data)
    return raw


def _cli(raw: Path, out: Path, config: Path) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ecomrl",
            "etl",
            "--input",
            str(raw),
            "--out",
            str(out),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    wall = time.perf_counter() - start
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ecomrl: error")]
    return proc.returncode, errors[-1] if errors else proc.stdout.strip(), wall


def _history(raw: Path, out: Path, config: Path) -> tuple[dict[str, Any], float]:
    from ecomrl.config import load_config
    from etl import run_etl

    cfg = load_config(config).etl.model_copy(update={"require_decisions": False})
    start = time.perf_counter()
    res = run_etl(raw, out, cfg, collect=False)
    return res.counts, time.perf_counter() - start


def main() -> None:
    """Fetch, unpack, run and print (see the module docstring)."""
    from etl.output import describe_counts

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=ROOT / "bench_out" / "real")
    p.add_argument(
        "--wheels",
        type=Path,
        default=None,
        help="a folder holding the two wheels already (no download)",
    )
    args = p.parse_args()
    cache = args.cache.resolve()
    _wheels(cache, args.wheels)
    for source in SOURCES:
        raw = _unpack(cache, source)
        out = cache / source.name / "out"
        shutil.rmtree(out, ignore_errors=True)
        code, message, wall = _cli(raw, out, source.config)
        counts, hist_wall = _history(raw, cache / source.name / "history", source.config)
        accounting = describe_counts(counts)
        print(f"== {source.name} ({source.member}, {source.config.relative_to(ROOT)})")
        for table, c in counts.items():
            if table == "decisions":
                continue
            q = sum(c["quarantined"].values())
            d = sum(c["dropped"].values())
            print(
                f"  {table}: rows in {c['rows_in']}, used {c['used']}, quarantined {q} "
                f"{c['quarantined']}, dropped {d} {c['dropped']}"
            )
        print(
            f"  ecomrl etl: exit {code} in {wall:.2f} s wall (fresh process, imports "
            f"included); nothing written: {not out.exists()}"
        )
        print(f"  {message}")
        print(f"  the refusal's accounting equals the history run's: {accounting in message}")
        print(f"  run_etl with require_decisions = false: {hist_wall:.2f} s, 0 transitions")


if __name__ == "__main__":
    main()
