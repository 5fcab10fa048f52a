"""Shared by the ETL benchmarks: run one measured step in a fresh child process.

Each step (simulate, ETL, floor, Spark, ...) runs as ``python -m <module> --child <mode>`` so
that its wall and CPU seconds and its peak resident memory (``wait4``'s ``ru_maxrss``) are its
own: a child's ``ru_maxrss`` starts from the size of the process it is forked from, which is why
the input is simulated in a child too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def measure(
    module: str, mode: str, input_dir: Path, out: Path, result_file: Path, **extra: Any
) -> dict[str, Any]:
    """Run ``module``'s child ``mode``; its JSON result plus ``wall``, ``cpu`` (user + system
    seconds) and ``rss_mib`` (peak resident MiB)."""
    cmd = [sys.executable, "-m", module, "--child", mode, "--input", str(input_dir),
           "--out", str(out)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    cmd += ["--result", str(result_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")  # drain before waiting (no pipe stall)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{err[-3000:]}")
    info: dict[str, Any] = json.loads(result_file.read_text())
    info.update(wall=wall, cpu=usage.ru_utime + usage.ru_stime, rss_mib=usage.ru_maxrss / 1024)
    return info


DIRTY_EVENTS_PER_USER = 70.0  # with every kind of dirt on: bots' bursts, duplicates, ...


def simulate_child(args: argparse.Namespace, events_per_user: float) -> dict[str, Any]:
    """Child step: simulate about ``args.rows`` raw events (promotion, 28 days) under
    ``args.out``; with ``args.dirty`` (when the benchmark has that flag) every kind of dirt is
    on (anonymous sessions, bots, duplicates, late and out-of-order rows, reversals)."""
    from benchmarks._world import ARRIVAL_DAYS
    from simulator.config import DirtConfig, SimulatorConfig
    from simulator.logs import simulate, write_raw_logs

    dirty = bool(getattr(args, "dirty", 0))
    per_user = DIRTY_EVENTS_PER_USER if dirty else events_per_user
    n_users = max(50, round(args.rows / per_user))
    dirt = DirtConfig.all_on() if dirty else DirtConfig()
    config = SimulatorConfig(n_users=n_users, days=28, seed=0, dirt=dirt, arrival_days=ARRIVAL_DAYS)
    logs = simulate(config)
    write_raw_logs(logs, args.out, truth=False)
    return {"events_in": logs.events.height}
