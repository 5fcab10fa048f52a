"""Does it learn? Trained agents against the logging policy, online in the simulator.

    .venv/bin/python -m benchmarks.train_learns [--small] [--continuous-only|--discrete-only]
                                                [--cells] [--diagnostics]

For each of three seeds: simulate the promotion scenario's logs under the default logging
policy (``--users`` users), run the ETL in memory, train DiscreteCQL, DiscreteBCQ and DiscreteBC
(discrete tiers) and CQL and BCQ (continuous discount rate) with the ``[train]`` defaults
(``--steps`` gradient steps), then roll every policy out online in the simulator on fresh
users (the ETL's ``ObservationBuilder`` as the observation hook, so the agent sees the
features it was trained on) and report its true value (mean discounted return per episode,
gamma 0.9) with the rollout's 95 % CI, beside the logging policy's on the same users.

Reference lines on the same users: every constant action ("always k"), and with
``--diagnostics`` a myopic policy (the tier of highest predicted immediate reward under
offline_rl's response model) and DiscreteCQL with ``alpha`` 0.1: sensitivity lines that say
why an agent does (not) learn, not the check's configuration. Per seed the "paired" figure is
the mean per-episode difference on the episodes both rollouts share (same users).

The summary line per agent: mean over seeds of (agent - logging) with a t-interval over the
seeds, then every agent and the targeting rule against DiscreteBC (BC for the continuous space),
the baseline the goal names. ``--cells`` prints, for the first seed, the logged discounted
return-to-go of every tier per context cell beside each agent's choices (where an agent's choices
come from). Defaults: 50,000 users of logs, 40,000 users per rollout, 10,000 discrete steps
(``--small``: 2,000 / 2,000 / 3,000).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from scipy import stats

from benchmarks._world import ARRIVAL_DAYS, world
from etl.config import EtlConfig
from etl.observation import ObservationBuilder
from etl.pipeline import build_transitions
from offline_rl.artifacts import load_policy
from offline_rl.config import TrainConfig
from offline_rl.data import TransitionManifest
from offline_rl.response import ResponseModel
from offline_rl.train import train_on_frame
from simulator import (
    PromotionResponse,
    SimulatorConfig,
    constant_action,
    logging_policy,
    rollout,
    simulate,
)
from simulator.policies import TargetingRule

DISCRETE = ("discrete_cql", "discrete_bcq", "discrete_bc")
CONTINUOUS = ("cql", "bcq", "bc")


def reward_scale_arg(value: str) -> float | str:
    """``--reward-scale``: a multiplier, or ``auto`` / ``std`` / ``max`` (``[train]
    reward_scale``)."""
    if value in ("auto", "std", "max"):
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--reward-scale takes a number, 'auto', 'std' or 'max', not {value!r}"
        ) from None


def train_config(
    agent: str,
    steps: int,
    seed: int,
    hidden: list[int] | None,
    overrides: dict[str, Any] | None = None,
    train_fields: dict[str, Any] | None = None,
) -> TrainConfig:
    """The benchmarks' ``[train]`` config: ``overrides`` go to the agent's table,
    ``train_fields`` are top-level keys (``reward_scale``, ``reward_source``, ``gamma``)."""
    table: dict[str, Any] = dict(overrides or {})
    if hidden is not None:
        table["hidden_units"] = hidden
    return TrainConfig.model_validate(
        {
            "agent": agent,
            "n_steps": steps,
            "seed": seed,
            "checkpoint_every": steps,
            "log_every": max(steps // 20, 1),
            "split": "none",
            **(train_fields or {}),
            agent: table,
        }
    )


class GreedyResponse:
    """Diagnostic policy: the tier with the highest predicted immediate reward (myopic)."""

    def __init__(self, model: ResponseModel) -> None:
        self.model = model

    def predict(self, observations: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_all_actions(observations).argmax(axis=1))


def run_space(
    space: str,
    agents: tuple[str, ...],
    *,
    diagnostics: bool = False,
    cells: bool = False,
    users: int,
    eval_users: int,
    steps: int,
    seeds: list[int],
    hidden: list[int] | None,
    out: Path,
    response: PromotionResponse | None = None,
    bias: float = 0.0,
    options: dict[str, dict[str, Any]] | None = None,
    train_fields: dict[str, Any] | None = None,
) -> dict[str, list[dict[str, float]]]:
    """``options``: per agent name, fields of its ``[train.<agent>]`` table (``--cql-alpha``,
    ``--lr-schedule``); ``train_fields``: top-level ``[train]`` keys (``--reward-scale``,
    ``--reward-source``)."""
    options = options or {}
    response = response or PromotionResponse()
    results: dict[str, list[dict[str, float]]] = {"logging": []}
    for seed in seeds:
        sim = SimulatorConfig(n_users=users, seed=seed, action_space=space,
                              promotion_response=response, logging_discount_bias=bias,
                              arrival_days=ARRIVAL_DAYS)
        t0 = time.perf_counter()
        logs = simulate(sim)
        etl = build_transitions(logs.events, logs.orders, EtlConfig())
        manifest = TransitionManifest.from_dict(etl.manifest)
        hook = ObservationBuilder.from_manifest(etl.manifest)
        print(
            f"[{space} seed {seed}] logs: {etl.transitions.height} decisions, "
            f"{etl.transitions['episode_id'].n_unique()} episodes "
            f"({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
        eval_seed = 10_000 + seed
        base = rollout(logging_policy(sim), sim, n_users=eval_users, seed=eval_seed)
        results["logging"].append({"value": base.value, "lo": base.ci_low, "hi": base.ci_high})
        print(f"  logging      {base.value:8.3f}  [{base.ci_low:7.3f}, {base.ci_high:7.3f}]")
        observations = np.asarray(etl.transitions["observation"].to_numpy(), dtype=np.float32)
        logged = etl.transitions["action"].to_numpy()
        if space == "discrete":
            shares = np.bincount(logged, minlength=manifest.action_size) / len(logged)
            print("  logged mix   " + "/".join(f"{x:.2f}" for x in shares))
        constants = range(manifest.action_size) if space == "discrete" else (0.0, 0.05, 0.1)
        for action in constants:
            ref = rollout(constant_action(action), sim, n_users=eval_users, seed=eval_seed)
            mean, half = ref.paired_difference(base)
            name = f"always {action}"
            results.setdefault(name, []).append(
                {
                    "value": ref.value,
                    "lo": ref.ci_low,
                    "hi": ref.ci_high,
                    "diff": ref.value - base.value,
                }
            )
            print(
                f"  {name:<12} {ref.value:8.3f}  [{ref.ci_low:7.3f}, {ref.ci_high:7.3f}]  "
                f"diff {ref.value - base.value:+7.3f} (paired {mean:+.3f} +- {half:.3f})"
            )
        if space == "discrete":  # the documented hand-made rule: a reference, not a target
            ref = rollout(TargetingRule(), sim, n_users=eval_users, seed=eval_seed)
            mean, half = ref.paired_difference(base)
            results.setdefault("targeting rule", []).append(
                {"value": ref.value, "lo": ref.ci_low, "hi": ref.ci_high,
                 "diff": ref.value - base.value}
            )
            print(
                f"  {'targeting':<12} {ref.value:8.3f}  [{ref.ci_low:7.3f}, {ref.ci_high:7.3f}]  "
                f"diff {ref.value - base.value:+7.3f} (paired {mean:+.3f} +- {half:.3f})"
            )
        extra: list[tuple[str, str, dict[str, Any]]] = []
        if diagnostics and space == "discrete":
            # sensitivity lines, labelled as such: not the check's configuration
            extra.append(("cql_alpha0.1", "discrete_cql", {"alpha": 0.1}))
            response_model = ResponseModel.for_manifest(manifest).fit_frame(etl.transitions)
            greedy = rollout(
                GreedyResponse(response_model),
                sim,
                observation_hook=hook,
                n_users=eval_users,
                seed=eval_seed,
            )
            mean, half = greedy.paired_difference(base)
            results.setdefault("greedy_response", []).append(
                {"value": greedy.value, "diff": greedy.value - base.value}
            )
            mix = np.bincount(
                GreedyResponse(response_model).predict(observations),
                minlength=manifest.action_size,
            ) / len(observations)
            print(
                f"  {'greedy_resp':<12} {greedy.value:8.3f}  [{greedy.ci_low:7.3f}, "
                f"{greedy.ci_high:7.3f}]  diff {greedy.value - base.value:+7.3f} (paired "
                f"{mean:+.3f} +- {half:.3f})  mix " + "/".join(f"{x:.2f}" for x in mix)
            )
        runs: list[tuple[str, str, dict[str, Any]]] = [
            (a, a, dict(options.get(a, {}))) for a in agents
        ] + extra
        trained_policies: dict[str, Any] = {}
        for label, agent, overrides in runs:
            t1 = time.perf_counter()
            trained = train_on_frame(
                etl.transitions,
                manifest,
                out / f"{space}_{seed}_{label}",
                train_config(agent, steps, seed, hidden, overrides, train_fields),
                progress=False,
            )
            policy = load_policy(trained.artifact)
            trained_policies[label] = policy
            t2 = time.perf_counter()
            res = rollout(policy, sim, observation_hook=hook, n_users=eval_users, seed=eval_seed)
            mean, half = res.paired_difference(base)
            results.setdefault(label, []).append(
                {
                    "value": res.value,
                    "lo": res.ci_low,
                    "hi": res.ci_high,
                    "diff": res.value - base.value,
                }
            )
            print(
                f"  {label:<12} {res.value:8.3f}  [{res.ci_low:7.3f}, {res.ci_high:7.3f}]  "
                f"diff {res.value - base.value:+7.3f} (paired {mean:+.3f} +- {half:.3f})  "
                f"{_action_mix(policy, observations)}  (train {t2 - t1:.0f}s at "
                f"{trained.updates_per_second:.0f}/s, rollout {time.perf_counter() - t2:.0f}s)",
                flush=True,
            )
        if cells and space == "discrete" and seed == seeds[0]:
            print_cells(etl.transitions, etl.manifest, trained_policies)
    return results


DEVICES = ("mobile", "desktop", "app")
CHANNELS = ("direct", "search", "email", "social")


def returns_to_go(frame: pl.DataFrame, gamma: float) -> np.ndarray:
    """Discounted return from each transition to the end of its episode (rows sorted by episode
    and step): ``sum_k gamma^(k - t) r_k`` over the episode's steps ``k >= t``."""
    power = pl.lit(gamma) ** pl.col("step")
    return (
        frame.select(
            (pl.col("reward") * power).cum_sum(reverse=True).over("episode_id") / power
        ).to_series().to_numpy()
    )


def context_cells(obs: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ETL observations: the context cell ``device * 4 + channel`` (``DEVICES``,
    ``CHANNELS``) and whether it is a first visit (no past session: the standardised session
    count at its minimum)."""
    device = obs[:, [names.index(f"device_{d}") for d in DEVICES]].argmax(1)
    channel = obs[:, [names.index(f"channel_{c}") for c in CHANNELS]].argmax(1)
    sessions = obs[:, names.index("n_sessions")]
    return device * 4 + channel, sessions <= sessions.min() + 1e-6


def print_cells(frame: pl.DataFrame, manifest: dict[str, Any], policies: dict[str, Any]) -> None:
    """Per cell of the context (device x channel x first visit): the logged discounted return-to-go
    of each tier (a Monte-Carlo Q of the logging policy, unconfounded on first visits, where the
    logging policy sees nothing but device and channel) beside each agent's choices."""
    obs = np.asarray(frame["observation"].to_numpy(), dtype=np.float32)
    ret = returns_to_go(frame, float(manifest["gamma"]))
    actions = frame["action"].to_numpy()
    context, first = context_cells(obs, manifest["feature_names"])
    cell = context * 2 + first
    choices = {label: p.predict(obs) for label, p in policies.items()}
    k = int(actions.max()) + 1
    print("  per cell: logged return-to-go by tier (se), and each agent's tier shares")
    for c in np.unique(cell):
        m = cell == c
        q = [ret[m & (actions == a)].mean() for a in range(k)]
        se = np.mean([ret[m & (actions == a)].std() / np.sqrt((m & (actions == a)).sum())
                      for a in range(k)])
        dev = DEVICES[c // 8]
        ch = CHANNELS[(c // 2) % 4]
        shares = "  ".join(
            f"{label}:" + "/".join(f"{x:.2f}" for x in np.bincount(v[m], minlength=k) / m.sum())
            for label, v in choices.items()
        )
        print(f"  {dev:<8}{ch:<7}{'first' if c % 2 else 'return':<7}n={int(m.sum()):>6} "
              + " ".join(f"{x:6.2f}" for x in q) + f" (se {se:.2f})  {shares}")


def _action_mix(policy: Any, observations: np.ndarray) -> str:
    """What the policy does on the logged states: tier shares, or the mean rate."""
    actions = policy.predict(observations)
    if policy.discrete:
        shares = np.bincount(actions, minlength=policy.n_actions) / max(len(actions), 1)
        return "mix " + "/".join(f"{x:.2f}" for x in shares)
    return f"mean rate {float(np.mean(actions)):.3f} (sd {float(np.std(actions)):.3f})"


def summarise(space: str, results: dict[str, list[dict[str, float]]]) -> None:
    print(
        f"\n{space}: true value per episode (gamma 0.9), mean over {len(results['logging'])} seeds"
    )
    print(f"{'policy':<14}{'value':>9}{'diff vs logging':>17}{'95% t-CI of diff':>22}")
    base = np.array([r["value"] for r in results["logging"]])
    print(f"{'logging':<14}{base.mean():>9.3f}")
    for agent, rows in results.items():
        if agent == "logging":
            continue
        diffs = np.array([r["diff"] for r in rows])
        n = len(diffs)
        half = stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        value = np.mean([r["value"] for r in rows])
        print(
            f"{agent:<14}{value:>9.3f}{diffs.mean():>+17.3f}"
            f"{f'[{diffs.mean() - half:+.3f}, {diffs.mean() + half:+.3f}]':>22}"
        )
    baseline = "discrete_bc" if "discrete_bc" in results else "bc" if "bc" in results else None
    if baseline is None:
        return
    print(f"against {baseline} (the baseline every report compares with), per seed then t-CI:")
    ref = np.array([r["value"] for r in results[baseline]])
    for agent, rows in results.items():
        if agent in ("logging", baseline) or agent.startswith("always"):
            continue
        diffs = np.array([r["value"] for r in rows]) - ref[: len(rows)]
        n = len(diffs)
        half = stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        print(
            f"  {agent:<14}{diffs.mean():>+9.3f}  [{diffs.mean() - half:+.3f}, "
            f"{diffs.mean() + half:+.3f}]  per seed " + " ".join(f"{d:+.3f}" for d in diffs)
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer users and steps")
    parser.add_argument("--users", type=int, default=None, help="users in the training logs")
    parser.add_argument("--eval-users", type=int, default=None, help="users per rollout")
    parser.add_argument("--steps", type=int, default=None, help="gradient steps (discrete)")
    parser.add_argument("--continuous-steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds FIRST_SEED .. FIRST_SEED + SEEDS - 1 (default 0)")
    parser.add_argument("--discrete-only", action="store_true")
    parser.add_argument(
        "--reward-scale", type=reward_scale_arg, default=None,
        help="[train] reward_scale: a number, auto (the default), std or max",
    )
    parser.add_argument(
        "--reward-source", choices=("logged", "expected"), default=None,
        help="[train] reward_source of the agents that learn a Q-function (default the config's)",
    )
    parser.add_argument("--cql-alpha", type=float, default=None,
                        help="DiscreteCQL's alpha (default the agent's, 0.01)")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None,
                        help="every agent's lr_schedule (default the agents' default)")
    parser.add_argument(
        "--agents", nargs="*", default=None, choices=sorted(set(DISCRETE + CONTINUOUS)),
        help="subset of the agents to train (default: all)",
    )
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="also roll out a myopic response-model policy and DiscreteCQL with alpha 0.1",
    )
    parser.add_argument(
        "--cells",
        action="store_true",
        help="per context cell, logged returns-to-go by tier beside each agent's choices (seed 0)",
    )
    parser.add_argument("--continuous-only", action="store_true")
    parser.add_argument("--logging-discount-bias", type=float, default=0.0,
                        help="another logging policy: [simulator] logging_discount_bias "
                        "(discrete; default 0, the heuristic; > 0 over-discounts)")
    parser.add_argument("--expectation-rise", type=float, default=None,
                        help="another world: [simulator.promotion_response] expectation_rise "
                        "(default 0.4)")
    parser.add_argument(
        "--continuous-hidden",
        type=int,
        nargs="*",
        default=None,
        help="hidden units of the continuous agents' networks (default d3rlpy's 256 256)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train_fields = {
        key: value
        for key, value in (("reward_scale", args.reward_scale),
                           ("reward_source", args.reward_source))
        if value is not None
    }
    users = args.users or (2_000 if args.small else 50_000)
    eval_users = args.eval_users or (2_000 if args.small else 40_000)
    steps = args.steps or (3_000 if args.small else 10_000)
    c_steps = args.continuous_steps or (300 if args.small else 2_000)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    options: dict[str, dict[str, Any]] = {a: {} for a in (*DISCRETE, *CONTINUOUS)}
    if args.lr_schedule:
        for table in options.values():
            table["lr_schedule"] = args.lr_schedule
    if args.cql_alpha is not None:
        options["discrete_cql"]["alpha"] = args.cql_alpha
    print(
        f"train_learns: users={users} eval_users={eval_users} discrete_steps={steps} "
        f"continuous_steps={c_steps} seeds={seeds} torch_threads=1 "
        f"world={world(args.expectation_rise).model_dump()} "
        f"logging_discount_bias={args.logging_discount_bias} train={train_fields} "
        f"agent options={ {k: v for k, v in options.items() if v} }"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if not args.continuous_only:
            res = run_space(
                "discrete",
                tuple(a for a in DISCRETE if args.agents is None or a in args.agents),
                diagnostics=args.diagnostics,
                cells=args.cells,
                users=users,
                eval_users=eval_users,
                steps=steps,
                seeds=seeds,
                hidden=None,
                out=Path(tmp),
                response=world(args.expectation_rise),
                bias=args.logging_discount_bias,
                options=options,
                train_fields=train_fields,
            )
            summarise("discrete", res)
        if not args.discrete_only:
            res = run_space(
                "continuous",
                tuple(a for a in CONTINUOUS if args.agents is None or a in args.agents),
                users=users,
                eval_users=eval_users,
                steps=c_steps,
                seeds=seeds,
                hidden=args.continuous_hidden,
                out=Path(tmp),
                response=world(args.expectation_rise),
                options=options,
                train_fields=train_fields,
            )
            summarise("continuous", res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
