"""Simulator speed: events per second of ``simulate`` and users per second of value rollouts.

Run: ``.venv/bin/python -m benchmarks.simulator_bench [--small]``. Prints a table to stdout.
Figures depend on the machine and its load (the dev machine is shared: note the load).
"""

from __future__ import annotations

import argparse
import os
import time

import structlog

from benchmarks._world import ARRIVAL_DAYS
from simulator import SimulatorConfig, constant_action, rollout, simulate


def _quiet() -> None:
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="10x fewer users (a quick check)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _quiet()
    scale = 10 if args.small else 1
    cases = [
        ("simulate", "promotion", "discrete", 100_000 // scale),
        ("simulate", "promotion", "continuous", 100_000 // scale),
        ("simulate", "recommendation", "discrete", 20_000 // scale),
        ("rollout", "promotion", "discrete", 100_000 // scale),
        ("rollout", "recommendation", "discrete", 20_000 // scale),
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"simulator benchmark (cpus {os.cpu_count()}, load average {load:.1f})")
    header = (f"{'what':<9} {'scenario':<15} {'space':<10} {'users':>8} {'episodes':>9} "
              f"{'events':>10} {'wall s':>7} {'cpu s':>7} {'events/s':>10} {'users/s':>9}")
    print(header)
    print("-" * len(header))
    for what, scenario, space, n_users in cases:
        cfg = SimulatorConfig(scenario=scenario, action_space=space, n_users=n_users,
                              seed=args.seed, arrival_days=ARRIVAL_DAYS)
        t0, c0 = time.perf_counter(), time.process_time()
        if what == "simulate":
            logs = simulate(cfg)
            events = logs.events.height
            episodes = logs.truth["episode_id"].n_unique()
        else:
            res = rollout(constant_action(0), cfg)
            events = 0
            episodes = res.n_episodes
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        ev_rate = f"{events / dt:>10,.0f}" if events else f"{'-':>10}"
        print(f"{what:<9} {scenario:<15} {space:<10} {n_users:>8,} {episodes:>9,} "
              f"{events:>10,} {dt:>7.2f} {cpu:>7.2f} {ev_rate} {n_users / dt:>9,.0f}")
    print("rollout = value only (no events table built); simulate = full raw logs + truth;")
    print("events/s and users/s are per wall-clock second; cpu s counts every thread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
