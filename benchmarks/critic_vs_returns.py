"""Does the trained critic rank the tiers as the logged returns do? (a diagnosis of DiscreteCQL)

    .venv/bin/python -m benchmarks.critic_vs_returns [--logging-discount-bias 1.0] [--seed 0]

Simulates promotion logs (discrete tiers), runs the ETL, and at the first decision of every
episode compares, tier by tier:

* the logged value of taking the tier: the discounted return-to-go (the manifest's gamma) of
  the episodes whose first logged tier it was, weighted by the inverse logged propensity and
  self-normalised (Precup et al. 2000): the value of "this tier first, then the logging
  policy", unbiased because the logging policy's propensities are logged;
* the same for the decision's own reward alone (what a myopic rule would see);
* what d3rlpy's Huber TD loss (threshold 1 training unit) makes of the decision's own reward
  at the chosen reward scale: the Huber location of each tier's (inverse-propensity weighted)
  rewards, the constant a critic with ``gamma`` ~ 0 converges to. Where purchases are worth
  more than one training unit it is about the purchase odds ``p / (1 - p)`` units, whatever
  the purchase is worth;
* the mean Q(s0, tier) of DiscreteCQL trained with the ``[train]`` defaults and each ``alpha``
  of ``--alphas`` (default 1.0 and 0.1), in training units and in EUR (divided by the reward
  multiplier), and the share of first decisions where each tier is the critic's argmax.

If the two rankings disagree, the critic has not learnt what the logs show.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from benchmarks._world import ARRIVAL_DAYS
from benchmarks.train_learns import returns_to_go, reward_scale_arg, train_config
from etl.config import EtlConfig
from etl.pipeline import build_transitions
from offline_rl.agents import DiscreteCQLConfig
from offline_rl.artifacts import load_policy
from offline_rl.config import TrainConfig
from offline_rl.data import TransitionManifest, to_arrays
from offline_rl.response import ResponseModel
from offline_rl.train import reward_multiplier, train_on_frame
from simulator import TIERS, SimulatorConfig, simulate


def huber_location(values: np.ndarray, weights: np.ndarray, delta: float = 1.0) -> float:
    """The weighted Huber M-estimate of location: the ``theta`` where
    ``sum_i w_i psi(x_i - theta) = 0``, ``psi(u) = clip(u, -delta, delta)`` (the minimiser of the
    Huber loss that d3rlpy's TD error uses, threshold ``delta``), by bisection."""
    lo, hi = float(values.min()), float(values.max())
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if float((weights * np.clip(values - mid, -delta, delta)).sum()) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def with_hidden_expectation(
    frame: pl.DataFrame, manifest: dict[str, Any], truth: pl.DataFrame
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The transitions with the simulator's hidden discount expectation at each decision (before
    the decision's update; standardised) as one more observation feature, and the manifest
    that names it: whether the critic can learn a discount's later cost once it sees the state
    that carries that cost."""
    hidden = frame.select("decision_id").join(
        truth.select("decision_id", "h_discount_expectation"), on="decision_id", how="left",
        maintain_order="left",
    )["h_discount_expectation"].fill_null(0.0).to_numpy()
    scaled = (hidden - hidden.mean()) / (hidden.std() or 1.0)
    dtype = frame.schema["observation"]
    assert isinstance(dtype, pl.Array)
    obs = np.column_stack([np.stack(list(frame["observation"].to_numpy())), scaled])
    frame = frame.with_columns(
        pl.Series("observation", obs, dtype=pl.Array(dtype.inner, obs.shape[1]))
    )
    names = [*manifest["feature_names"], "hidden_discount_expectation"]
    return frame, {**manifest, "feature_names": names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--logging-discount-bias", type=float, default=0.0)
    parser.add_argument("--alphas", default="1.0,0.1",
                        help="DiscreteCQL alpha values to train, comma-separated")
    parser.add_argument("--gamma", type=float, default=None,
                        help="diagnosis: the critic's discount (default the manifest's; a tiny "
                        "value makes it a regression of the decision's own reward)")
    parser.add_argument("--reward-scale", type=reward_scale_arg, default=None,
                        help="[train] reward_scale: a number, auto (the default: max for "
                        "DiscreteCQL), std (1 / reward std) or max (1 / max |reward|); small "
                        "values keep d3rlpy's Huber TD loss in its quadratic (mean-seeking) "
                        "range")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None,
                        help="the agent's lr_schedule (default the agent's default)")
    parser.add_argument("--timeouts-as-terminals", action="store_true",
                        help="diagnosis: end every episode as terminal (no bootstrapping past "
                        "the last decision, the finite horizon the true value measures)")
    parser.add_argument("--monte-carlo", action="store_true",
                        help="diagnosis: the critic regresses each decision's logged discounted "
                        "return-to-go (reward := return-to-go, gamma ~ 0): the logging "
                        "policy's Q without bootstrapping")
    parser.add_argument("--trees", action="store_true",
                        help="also fit gradient-boosted trees (offline_rl's ResponseModel) to "
                        "the return-to-go and print their mean Q(s0, tier) and argmax share")
    parser.add_argument("--with-hidden-expectation", action="store_true",
                        help="diagnosis: append the simulator's hidden discount expectation at "
                        "each decision to the observation (no deployable policy can see it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sim = SimulatorConfig(n_users=args.users, seed=args.seed, action_space="discrete",
                          logging_discount_bias=args.logging_discount_bias,
                          arrival_days=ARRIVAL_DAYS)
    logs = simulate(sim)
    etl = build_transitions(logs.events, logs.orders, EtlConfig())
    frame = etl.transitions.sort("episode_id", "step")
    manifest_data = dict(etl.manifest)
    if args.with_hidden_expectation:
        frame, manifest_data = with_hidden_expectation(frame, manifest_data, logs.truth)
    if args.timeouts_as_terminals:
        frame = frame.with_columns(
            (pl.col("terminal") | pl.col("timeout")).alias("terminal"),
            pl.lit(False).alias("timeout"),
        )
    manifest = TransitionManifest.from_dict(manifest_data)
    gamma = float(etl.manifest["gamma"])
    ret = returns_to_go(frame, gamma)
    first = frame["step"].to_numpy() == 0
    action = frame["action"].to_numpy()[first]
    prop = frame["behaviour_propensity"].to_numpy()[first]
    s0 = np.asarray(frame["observation"].to_numpy(), dtype=np.float32)[first]
    print(f"critic_vs_returns: {args.users} users, seed {args.seed}, logging_discount_bias "
          f"{args.logging_discount_bias}, hidden expectation in the state: "
          f"{args.with_hidden_expectation}, timeouts as terminals: {args.timeouts_as_terminals}, "
          f"gamma {gamma} (critic: {args.gamma or gamma}), reward_scale {args.reward_scale}, "
          f"lr_schedule {args.lr_schedule}, monte carlo: {args.monte_carlo}, "
          f"{int(first.sum())} first decisions")
    print(f"{'':<34}" + "".join(f"{t:>15}" for t in TIERS))
    def snipw(values: np.ndarray) -> list[float]:
        """Per tier, the self-normalised inverse-propensity mean of ``values`` at the first
        decisions where that tier was logged."""
        weights = [(action == k) / prop for k in range(len(TIERS))]
        return [float((w * values).sum() / w.sum()) for w in weights]

    logged = snipw(ret[first])
    print(f"{'logged value (SNIPW, EUR)':<34}" + "".join(f"{v:>15.3f}" for v in logged))
    reward0 = frame["reward"].to_numpy()[first]
    now = snipw(reward0)
    print(f"{'... of which this decision (EUR)':<34}" + "".join(f"{v:>15.3f}" for v in now))
    scale = reward_multiplier(  # DiscreteCQL's training multiplier
        TrainConfig(reward_scale=args.reward_scale or "auto"), to_arrays(frame, manifest),
        DiscreteCQLConfig(),
    )
    huber = [huber_location(reward0 * scale, (action == k) / prop) / scale
             for k in range(len(TIERS))]
    print(f"{'... Huber location of it (EUR)':<34}" + "".join(f"{v:>15.3f}" for v in huber))
    observations = np.asarray(frame["observation"].to_numpy(), dtype=np.float32)
    if args.trees:
        trees = ResponseModel.for_manifest(manifest).fit(
            observations, frame["action"].to_numpy(), ret
        )
        q_trees = trees.predict_all_actions(s0)
        share = np.bincount(q_trees.argmax(1), minlength=len(TIERS)) / len(s0)
        print(f"{'trees on the return: Q(s0) EUR':<34}"
              + "".join(f"{v:>15.3f}" for v in q_trees.mean(0)))
        print(f"{'trees: argmax share':<34}" + "".join(f"{v:>15.2f}" for v in share))
    critic_gamma = args.gamma
    if args.monte_carlo:  # regress the return itself: Q of the logging policy, no bootstrap
        frame = frame.with_columns(pl.Series("reward", ret))
        critic_gamma = 1e-6
    with tempfile.TemporaryDirectory() as tmp:
        for alpha in (float(a) for a in args.alphas.split(",") if a):
            table: dict[str, Any] = {"alpha": alpha}
            if args.lr_schedule:
                table["lr_schedule"] = args.lr_schedule
            # the logged rewards (or returns): this measures what the critic makes of them
            fields = {k: v for k, v in (("gamma", critic_gamma),
                                        ("reward_scale", args.reward_scale)) if v is not None}
            config = train_config("discrete_cql", args.steps, args.seed, None, table,
                                  {"reward_source": "logged", **fields})
            trained = train_on_frame(frame, manifest, Path(tmp) / f"alpha{alpha}", config,
                                     progress=False)
            policy = load_policy(trained.artifact)
            q = [float(np.mean(policy.predict_value(s0, np.full(len(s0), k))))
                 for k in range(len(TIERS))]
            share = np.bincount(policy.predict(s0), minlength=len(TIERS)) / len(s0)
            multiplier = float(policy.scalers["reward_multiplier"])
            print(f"{f'CQL alpha {alpha}: mean Q(s0, tier)':<34}"
                  + "".join(f"{v:>15.4f}" for v in q))
            print(f"{'... in EUR':<34}" + "".join(f"{v / multiplier:>15.3f}" for v in q))
            print(f"{f'CQL alpha {alpha}: argmax share':<34}"
                  + "".join(f"{v:>15.2f}" for v in share))
    order = np.argsort(logged)[::-1]
    print("logged ranking: " + " > ".join(TIERS[i] for i in order))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
