"""Which tier is truly best at a first visit, per context cell, and which do the critics pick?

    .venv/bin/python -m benchmarks.first_visit_truth [--logging-discount-bias 1.0] [--seed 0]

The ground truth for the critics' state-by-state choices, where it can be had: at a user's first
visit the state is little more than the device and the channel (12 cells). For each tier k the
simulator runs "tier k at the first visit, then the logging policy" online (``--rollout-users``
fresh users), and the mean discounted return of the episodes that begin with a first visit, per
cell, is the true Q of the logging policy there, with its standard error. Beside it, on logs of
the same world (``--users``), two critics regress the logged discounted return-to-go (no
bootstrapping): gradient-boosted trees (offline_rl's ``ResponseModel``) and the DiscreteCQL
network (``alpha`` 0, the ``[train]`` defaults otherwise, ``gamma`` ~ 0 on the return). Each
critic's argmax share per cell, and the share of logged first decisions where it picks the
cell's truly best tier.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmarks._world import ARRIVAL_DAYS
from benchmarks.train_learns import CHANNELS, DEVICES, context_cells, returns_to_go, train_config
from etl.config import EtlConfig
from etl.pipeline import build_transitions
from offline_rl.artifacts import load_policy
from offline_rl.data import TransitionManifest
from offline_rl.response import ResponseModel
from offline_rl.train import train_on_frame
from simulator import TIERS, SimulatorConfig, logging_policy, rollout, simulate
from simulator.policies import CallablePolicy

FIRST_VISIT = 7  # index of first_visit in the simulator's default observation


def true_first_visit_values(sim: SimulatorConfig, users: int, seed: int) -> pl.DataFrame:
    """Per cell (device * 4 + channel): mean, standard error and count of the discounted return
    of first-visit episodes under "tier k at the first visit, then the logging policy"."""
    base = logging_policy(sim)
    parts: list[pl.DataFrame] = []
    for k in range(len(TIERS)):
        def act(obs: np.ndarray, rng: np.random.Generator, k: int = k) -> np.ndarray:
            logged = base.act(obs, rng)  # drawn for every row: the same random stream for each k
            return np.where(obs[:, FIRST_VISIT] > 0, k, logged)

        res = rollout(CallablePolicy(act), sim, n_users=users, seed=seed, return_logs=True)
        assert res.observations is not None
        starts = res.truth.filter(pl.col("step") == 0).select("decision_id", "episode_id").join(
            res.observations, on="decision_id"
        )
        obs = np.stack(list(starts["observation"].to_numpy()))
        first = obs[:, FIRST_VISIT] > 0
        cell = obs[first, 0:3].argmax(1) * 4 + obs[first, 3:7].argmax(1)
        values = (
            starts.filter(pl.Series(first)).select("episode_id")
            .with_columns(cell=pl.Series(cell))
            .join(res.returns.select("episode_id", "discounted"), on="episode_id")
            .group_by("cell")
            .agg(
                pl.col("discounted").mean().alias(f"q{k}"),
                (pl.col("discounted").std() / pl.len().sqrt()).alias(f"se{k}"),
                pl.len().alias(f"n{k}"),
            )
        )
        parts.append(values)
    out = parts[0]
    for part in parts[1:]:
        out = out.join(part, on="cell")
    return out.sort("cell")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000, help="users in the logs")
    parser.add_argument("--rollout-users", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--logging-discount-bias", type=float, default=0.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sim = SimulatorConfig(n_users=args.users, seed=args.seed, action_space="discrete",
                          logging_discount_bias=args.logging_discount_bias,
                          arrival_days=ARRIVAL_DAYS)
    truth = true_first_visit_values(sim, args.rollout_users, 10_000 + args.seed)

    logs = simulate(sim)
    etl = build_transitions(logs.events, logs.orders, EtlConfig())
    frame = etl.transitions.sort("episode_id", "step")
    manifest = TransitionManifest.from_dict(etl.manifest)
    ret = returns_to_go(frame, float(etl.manifest["gamma"]))
    obs = np.asarray(frame["observation"].to_numpy(), dtype=np.float32)
    cells, first = context_cells(obs, etl.manifest["feature_names"])
    s0, cell = obs[first], cells[first]
    trees = ResponseModel.for_manifest(manifest).fit(obs, frame["action"].to_numpy(), ret)
    picks = {"trees": trees.predict_all_actions(s0).argmax(1)}
    with tempfile.TemporaryDirectory() as tmp:
        # a regression of the logged returns themselves (not of a model's expectation of them)
        config = train_config("discrete_cql", args.steps, args.seed, None, {"alpha": 0.0},
                              {"gamma": 1e-6, "reward_source": "logged"})
        trained = train_on_frame(frame.with_columns(pl.Series("reward", ret)), manifest,
                                 Path(tmp) / "critic", config, progress=False)
        picks["network"] = load_policy(trained.artifact).predict(s0)

    print(f"first_visit_truth: seed {args.seed}, logging_discount_bias "
          f"{args.logging_discount_bias}, {args.rollout_users} rollout users per tier, "
          f"{len(s0)} logged first visits")
    print(f"{'cell':<16}{'n':>6}  true Q, EUR (" + " / ".join(TIERS) + ")   best tier      "
          "| trees' picks          | network's picks")
    hits = dict.fromkeys(picks, 0.0)
    for row in truth.iter_rows(named=True):
        c = int(row["cell"])
        q = np.array([row[f"q{k}"] for k in range(len(TIERS))])
        se = max(row[f"se{k}"] for k in range(len(TIERS)))
        best = int(q.argmax())
        in_cell = cell == c
        shares = {
            name: np.bincount(p[in_cell], minlength=len(TIERS)) / max(int(in_cell.sum()), 1)
            for name, p in picks.items()
        }
        for name, share in shares.items():
            hits[name] += float(share[best]) * int(in_cell.sum())
        print(f"{DEVICES[c // 4]:<8}{CHANNELS[c % 4]:<8}{row['n0']:>6}  "
              + " ".join(f"{v:6.2f}" for v in q) + f" (se <= {se:.2f})  {TIERS[best]:<14} | "
              + " | ".join("/".join(f"{x:.2f}" for x in s) for s in shares.values()))
    print("share of logged first visits where the critic picks its cell's truly best tier: "
          + ", ".join(f"{name} {hit / len(s0):.2f}" for name, hit in hits.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
