"""Training speed: d3rlpy's stock ``fit()`` against our fast loop, same data, same config.

    .venv/bin/python -m benchmarks.train_speed [--small] [--device cpu|cuda] [--no-compile]
        [--agents discrete_cql discrete_bcq cql bcq]

For DiscreteCQL, DiscreteBCQ (batch 256) and continuous CQL (256) and BCQ (100), all with
d3rlpy's [256, 256] networks on 32 features: updates per second of

* ``stock``: ``algo.fit(dataset, n_steps, n_steps_per_epoch=n_steps)`` (no-op logger, no bar),
* ``fast``: ``FastTrainer`` (minibatches drawn at once from device tensors, d3rlpy's update),
* ``fast+compile``: the same with ``compile_update`` (CPU): the discrete agents' loss under
  ``torch.compile``, continuous CQL's conservative term and BCQ's target computed once per
  observation (``offline_rl.fast_continuous``); d3rlpy's ``compile_graph`` on CUDA,

measured in interleaved rounds (stock, fast, fast+compile, repeat) so that a busy machine slows
them alike; plus the compile time and the largest relative loss gap between the compiled and
the plain update on identical minibatches and torch seeds, over the first 5 and the first 20
steps (the two runs' weights drift apart by Adam's rounding-sized steps, so the gap grows).
Torch runs with one thread (``--threads`` to change).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from offline_rl._quiet import import_d3rlpy
from offline_rl.agents import AGENT_CONFIGS
from offline_rl.data import to_arrays, to_mdp_dataset
from offline_rl.fast_loop import FastTrainer, compile_update, to_tensors
from offline_rl.testing.synthetic import make_transitions
from offline_rl.train import build_algo, resolve_device

d3rlpy = import_d3rlpy()


SCHEDULE_STEPS = 1_000_000
"""The length a cosine learning-rate schedule is built for: far beyond the benchmark's steps, so
the rate stays at its start (the schedule's cost, one scheduler step per update, is measured)."""


def _build(name: str, manifest: Any, device: str, compile_graph: bool = False) -> Any:
    d3rlpy.seed(0)
    return build_algo(
        AGENT_CONFIGS[name](),
        manifest,
        gamma=0.9,
        multiplier=1.0,
        device=device,
        compile_graph=compile_graph,
        n_steps=SCHEDULE_STEPS,
    )


def _stock_round(algo: Any, dataset: Any, steps: int) -> float:
    from d3rlpy.logging import NoopAdapterFactory

    start = time.perf_counter()
    algo.fit(
        dataset,
        n_steps=steps,
        n_steps_per_epoch=steps,
        logger_adapter=NoopAdapterFactory(),
        show_progress=False,
        save_interval=10**9,
    )
    _sync()
    return time.perf_counter() - start


def _fast_round(trainer: FastTrainer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    _sync()
    return time.perf_counter() - start


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _loss_gap(
    name: str, manifest: Any, arrays: Any, device: str, on_cuda: bool
) -> tuple[float, float]:
    """Largest relative loss gap, plain vs compiled update, on the first 5 and the first 20 of
    20 identical minibatches (the same torch seed before each update: the continuous agents
    draw actions from torch's generator)."""
    plain = _build(name, manifest, device)
    comp = _build(name, manifest, device, compile_graph=on_cuda)
    if not on_cuda:
        compile_update(comp)
    tp = FastTrainer(plain, to_tensors(arrays, plain, device), seed=3)
    tc = FastTrainer(comp, to_tensors(arrays, comp, device), seed=3)
    gaps: list[float] = []
    for step in range(20):
        idx = tp.sample_indices()
        tc.sample_indices()
        torch.manual_seed(step)
        lp = tp.update(tp.batch(idx))
        torch.manual_seed(step)
        lc = tc.update(tc.batch(idx))
        gaps.append(max(abs(lc[k] - v) / max(abs(v), 1e-12) for k, v in lp.items()))
    return max(gaps[:5]), max(gaps)


ALL_AGENTS = ("discrete_cql", "discrete_bcq", "cql", "bcq")


def run(
    small: bool, device: str, compile_: bool, threads: int, agents: tuple[str, ...] = ALL_AGENTS
) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    on_cuda = device.startswith("cuda")
    n_episodes = 2_000 if small else 8_000
    rows: list[dict[str, Any]] = []
    for space in ("discrete", "continuous"):
        names = [a for a in agents if (a.startswith("discrete")) == (space == "discrete")]
        if not names:
            continue
        frame, manifest = make_transitions(
            n_episodes, n_features=32, n_actions=4, continuous=space == "continuous", seed=0
        )
        arrays = to_arrays(frame, manifest)
        dataset = to_mdp_dataset(arrays)
        for name in names:
            discrete = space == "discrete"
            steps = (100 if small else 300) if discrete else (10 if small else 30)
            rounds = 3 if small else 5
            stock = _build(name, manifest, device)
            fast = _build(name, manifest, device)
            trainer = FastTrainer(fast, to_tensors(arrays, fast, device), seed=0)
            variants: dict[str, Any] = {
                "stock": lambda s, a=stock, d=dataset: _stock_round(a, d, s),
                "fast": lambda s, t=trainer: _fast_round(t, s),
            }
            compile_s = float("nan")
            gap = (float("nan"), float("nan"))
            comp = _build(name, manifest, device, compile_graph=on_cuda) if compile_ else None
            # CPU: compile_update says whether it applies (continuous CQL keeps d3rlpy's update)
            if comp is not None and (on_cuda or compile_update(comp)):
                tcomp = FastTrainer(comp, to_tensors(arrays, comp, device), seed=0)
                t0 = time.perf_counter()
                _fast_round(tcomp, 5)  # compilation happens on the first steps
                compile_s = time.perf_counter() - t0
                variants["fast+compile"] = lambda s, t=tcomp: _fast_round(t, s)
                gap = _loss_gap(name, manifest, arrays, device, on_cuda)
            for run_ in variants.values():  # warm-up
                run_(max(steps // 10, 2))
            totals = dict.fromkeys(variants, 0.0)
            for _ in range(rounds):
                for key, run_ in variants.items():
                    totals[key] += run_(steps)
            speed = {k: rounds * steps / v for k, v in totals.items()}
            row = {
                "agent": name,
                "batch": int(stock.config.batch_size),
                "stock": speed["stock"],
                "fast": speed["fast"],
                "fast/stock": speed["fast"] / speed["stock"],
                "compiled": speed.get("fast+compile", float("nan")),
                "compiled/stock": speed.get("fast+compile", float("nan")) / speed["stock"],
                "compile_s": compile_s,
                "loss_gap_5": gap[0],
                "loss_gap": gap[1],
            }
            rows.append(row)
            print(_format_row(row), flush=True)
    return rows


HEADER = (
    f"{'agent':<14}{'batch':>6}{'stock/s':>10}{'fast/s':>10}{'fast/stock':>11}"
    f"{'compiled/s':>12}{'comp/stock':>11}{'compile s':>10}{'gap 5 steps':>12}{'gap 20':>9}"
)


def _format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['agent']:<14}{row['batch']:>6}{row['stock']:>10.1f}{row['fast']:>10.1f}"
        f"{row['fast/stock']:>10.2f}x{row['compiled']:>12.1f}{row['compiled/stock']:>10.2f}x"
        f"{row['compile_s']:>10.1f}{row['loss_gap_5']:>12.1e}{row['loss_gap']:>9.1e}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer steps and rows (quick look)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variant")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--agents", nargs="+", choices=ALL_AGENTS, default=list(ALL_AGENTS), help="(default: all)"
    )
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    print(
        f"train_speed: device={device} torch_threads={args.threads} torch={torch.__version__} "
        f"d3rlpy={d3rlpy.__version__} small={args.small}"
    )
    print(HEADER, flush=True)
    rows = run(args.small, device, not args.no_compile, args.threads, tuple(args.agents))
    best = [
        f"{r['agent']} {max(r['fast/stock'], np.nan_to_num(r['compiled/stock'])):.2f}x"
        for r in rows
    ]
    print(f"best ratio to stock fit(): {', '.join(best)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
