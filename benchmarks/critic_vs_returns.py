"""Does the trained critic rank the tiers as the logged returns do? (a diagnosis of DiscreteCQL)

    .venv/bin/python -m benchmarks.critic_vs_returns [--logging-discount-bias 1.0] [--seed 0]

Simulates promotion logs (discrete tiers), runs the ETL, and at the first decision of every
episode compares, tier by tier:

* the logged value of taking the tier: the discounted return-to-go (the manifest's gamma) of
  the episodes whose first logged tier it was, self-normalised by the logged propensities
  (Precup et al. 2000: the value of "this tier first, then the logging policy"). At the first
  decision the logging policy sees only device and channel, so this is a fair comparison;
* the mean Q(s0, tier) of DiscreteCQL trained with the ``[train]`` defaults (``alpha`` 1.0,
  and 0.1 for a less conservative critic), in training reward units, and the share of first
  decisions where each tier is the critic's argmax.

If the two rankings disagree, the critic has not learnt what the logs show.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmarks.train_learns import train_config
from etl.config import EtlConfig
from etl.pipeline import build_transitions
from offline_rl.artifacts import load_policy
from offline_rl.data import TransitionManifest
from offline_rl.train import train_on_frame
from simulator import TIERS, SimulatorConfig, simulate


def returns_to_go(frame: pl.DataFrame, gamma: float) -> np.ndarray:
    """Discounted return from each transition to the end of its episode:
    ``sum_k gamma^(k - t) r_k`` over the episode's steps ``k >= t``."""
    power = pl.lit(gamma) ** pl.col("step")
    return (
        frame.select(
            (pl.col("reward") * power).cum_sum(reverse=True).over("episode_id") / power
        ).to_series().to_numpy()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--logging-discount-bias", type=float, default=0.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sim = SimulatorConfig(n_users=args.users, seed=args.seed, action_space="discrete",
                          logging_discount_bias=args.logging_discount_bias)
    logs = simulate(sim)
    etl = build_transitions(logs.events, logs.orders, EtlConfig())
    frame = etl.transitions.sort("episode_id", "step")
    manifest = TransitionManifest.from_dict(etl.manifest)
    gamma = float(etl.manifest["gamma"])
    ret = returns_to_go(frame, gamma)
    first = frame["step"].to_numpy() == 0
    action = frame["action"].to_numpy()[first]
    prop = frame["behaviour_propensity"].to_numpy()[first]
    s0 = np.asarray(frame["observation"].to_numpy(), dtype=np.float32)[first]
    print(f"critic_vs_returns: {args.users} users, seed {args.seed}, logging_discount_bias "
          f"{args.logging_discount_bias}, gamma {gamma}, {int(first.sum())} first decisions")
    print(f"{'':<34}" + "".join(f"{t:>15}" for t in TIERS))
    logged = []
    for k in range(len(TIERS)):
        w = (action == k) / prop
        logged.append(float((w * ret[first]).sum() / w.sum()))
    print(f"{'logged value (SNIPW, EUR)':<34}" + "".join(f"{v:>15.3f}" for v in logged))
    with tempfile.TemporaryDirectory() as tmp:
        for alpha in (1.0, 0.1):
            trained = train_on_frame(
                frame, manifest, Path(tmp) / f"alpha{alpha}",
                train_config("discrete_cql", args.steps, args.seed, None, {"alpha": alpha}),
                progress=False,
            )
            policy = load_policy(trained.artifact)
            q = [float(np.mean(policy.predict_value(s0, np.full(len(s0), k))))
                 for k in range(len(TIERS))]
            share = np.bincount(policy.predict(s0), minlength=len(TIERS)) / len(s0)
            print(f"{f'CQL alpha {alpha}: mean Q(s0, tier)':<34}"
                  + "".join(f"{v:>15.3f}" for v in q))
            print(f"{f'CQL alpha {alpha}: argmax share':<34}"
                  + "".join(f"{v:>15.2f}" for v in share))
    order = np.argsort(logged)[::-1]
    print("logged ranking: " + " > ".join(TIERS[i] for i in order))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
