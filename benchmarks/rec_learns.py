"""Does it learn to recommend? Trained agents against the logging policy, online.

    .venv/bin/python -m benchmarks.rec_learns [--users 10000] [--eval-users 10000]
                                              [--steps 3000] [--seeds 3]

The recommendation scenario's learning check, the companion of ``benchmarks.train_learns``
(promotions). For each seed: simulate recommendation logs (which of the categories to show
first, ``--users`` users arriving over the first week), run the ETL in memory with the
scenario's config, train DiscreteCQL and DiscreteBC on them with the ``[train]`` defaults
(``--steps`` gradient steps), then roll the logging policy, both agents and every "always
category k" rule out online on the same fresh users (the ETL's ``ObservationBuilder`` as the
observation hook) and print each one's true value: the mean discounted return per episode
(gamma 0.9) of the weighted reward (click 1, add to cart 2, purchase 5), with the paired
difference against the logging policy on the same users. The summary gives, per agent, the
mean over seeds of (agent - logging) with a t-interval over the seeds, and DiscreteCQL against
DiscreteBC.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks._world import ARRIVAL_DAYS
from etl.config import EtlConfig, RewardWeights
from etl.observation import ObservationBuilder
from etl.pipeline import build_transitions
from offline_rl.artifacts import load_policy
from offline_rl.config import TrainConfig
from offline_rl.data import TransitionManifest
from offline_rl.train import train_on_frame
from simulator import SimulatorConfig, constant_action, logging_policy, rollout, simulate

AGENTS = ("discrete_cql", "discrete_bc")


def one_seed(seed: int, users: int, eval_users: int, steps: int, out: Path) -> dict[str, float]:
    """Paired differences (policy - logging) on the same fresh users, one seed."""
    sim = SimulatorConfig(scenario="recommendation", n_users=users, seed=seed,
                          arrival_days=ARRIVAL_DAYS)
    etl_config = EtlConfig(scenario="recommendation", n_categories=sim.n_categories,
                           reward_weights=RewardWeights(**sim.rec_reward.model_dump()))
    started = time.perf_counter()
    logs = simulate(sim)
    etl = build_transitions(logs.events, logs.orders, etl_config)
    manifest = TransitionManifest.from_dict(etl.manifest)
    hook = ObservationBuilder.from_manifest(etl.manifest)
    print(f"[seed {seed}] {etl.transitions.height} decisions in "
          f"{etl.transitions['episode_id'].n_unique()} episodes "
          f"({time.perf_counter() - started:.0f}s)", flush=True)
    eval_seed = 10_000 + seed
    base = rollout(logging_policy(sim), sim, n_users=eval_users, seed=eval_seed)
    print(f"  {'logging':<14} {base.value:7.3f} [{base.ci_low:.3f}, {base.ci_high:.3f}]")
    diffs: dict[str, float] = {}
    for k in range(sim.n_categories):
        ref = rollout(constant_action(k), sim, n_users=eval_users, seed=eval_seed)
        diffs[f"always cat_{k:02d}"], half = ref.paired_difference(base)
        print(f"  {f'always cat_{k:02d}':<14} {ref.value:7.3f}  paired "
              f"{diffs[f'always cat_{k:02d}']:+.3f} +- {half:.3f}")
    for agent in AGENTS:
        trained = train_on_frame(etl.transitions, manifest, out / f"{seed}_{agent}",
                                 TrainConfig(agent=agent, n_steps=steps, seed=seed, onnx=False),
                                 progress=False)
        res = rollout(load_policy(trained.artifact), sim, observation_hook=hook,
                      n_users=eval_users, seed=eval_seed)
        diffs[agent], half = res.paired_difference(base)
        print(f"  {agent:<14} {res.value:7.3f}  paired {diffs[agent]:+.3f} +- {half:.3f}",
              flush=True)
    diffs["cql_minus_bc"] = diffs["discrete_cql"] - diffs["discrete_bc"]
    return diffs


def summarise(per_seed: list[dict[str, float]]) -> None:
    """Mean over seeds with a 95 % t-interval, for the agents and the best constant rule."""
    print("\nover seeds (mean, 95 % t-interval):")
    best = max((k for k in per_seed[0] if k.startswith("always")),
               key=lambda k: float(np.mean([d[k] for d in per_seed])))
    for key in (*AGENTS, "cql_minus_bc", best):
        values = np.array([d[key] for d in per_seed])
        half = (float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1)
                      / math.sqrt(len(values))) if len(values) > 1 else float("nan"))
        label = "DiscreteCQL - BC" if key == "cql_minus_bc" else f"{key} - logging"
        per = ", ".join(f"{v:+.3f}" for v in values)
        print(f"  {label:<26} {values.mean():+.3f} [{values.mean() - half:+.3f}, "
              f"{values.mean() + half:+.3f}]   per seed {per}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--eval-users", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=3_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        per_seed = [
            one_seed(seed, args.users, args.eval_users, args.steps, Path(tmp))
            for seed in range(args.first_seed, args.first_seed + args.seeds)
        ]
    summarise(per_seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
