"""The gate's error rates against the simulator's truth: power and false approvals.

    .venv/bin/python -m benchmarks.approval_truth [--seeds 0,1,2] [--users 10000,50000]
        [--bias 0,1] [--spaces discrete] [--steps 5000] [--truth-users 20000] [--out DIR]

Every world (seed x users x logging bias x action space) is simulated with users arriving
throughout ``--days`` days, and the whole nightly job (``ecomrl.pipeline.run_nightly``) runs on
its last day: ETL, training on the fitting users, the certified family and its selection on the
selection users, and the gate on the held-out users' complete first episodes. Beside the job's
candidate the gate also judges, on the same held-out episodes, deliberately worse candidates:
always the most expensive tier (``rule:constant=2``, 10 % off), uniform random, and the certified
pick built around an agent trained on a corrupted (negated) reward, selected the same way.

The truth of every candidate is its deployment value (``simulator.deployment_value``: the
discounted return of a new user's first episode), measured by paired rollouts against the
logging policy on ``--truth-users`` simulated users of the same world (the logs' seed, which
also draws the catalogue; another user count draws fresh users), and on
``--truth-users-approved`` users for every approved candidate, whose truth decides a false
approval. The pick, the unconstrained agent and the simulator's hand-made targeting rule are
always rolled out; the deliberately worse rules only when the gate approved them.

Printed: one line per world and candidate, then, with Clopper-Pearson 95 % intervals,
**power** (worlds whose pick is truly better in which the gate approved it), **false
approvals** (approved candidates whose true gain is not above 0, among all approved), each
estimator's paired interval against the noisy truth (covers: the truth's point inside;
agrees: within 1.96 standard errors of the difference), the shipped gain against the
unconstrained agent's and the targeting rule's, and how much tighter the paired bound is than
the level comparison. ``--json`` writes every row; ``--summarise FILE ...`` merges the rows of
several runs (the more precise truth wins) and prints the summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks._stats import clopper_pearson
from ecomrl.config import EcomrlConfig, RunConfig
from ecomrl.pipeline import TrainedAgents, build_candidates, run_nightly, split_logs
from etl.observation import ObservationBuilder
from evaluation.config import DEFAULT_ESTIMATORS, EvaluateConfig
from evaluation.data import TransitionsDataset
from evaluation.evaluate import evaluate_candidates
from offline_rl import load_policy, load_transitions
from offline_rl.config import TrainConfig
from offline_rl.train import train_on_frame
from simulator import SimulatorConfig, deployment_value, logging_policy, simulate
from simulator.logs import write_raw_logs
from simulator.policies import TargetingRule, constant_action

WORSE_RULES = {"discrete": ("rule:constant=2", 2), "continuous": ("rule:constant=0.3", 0.3)}


@dataclass(frozen=True)
class World:
    seed: int
    users: int
    bias: float
    space: str

    @property
    def label(self) -> str:
        return f"{self.space} bias={self.bias:g} users={self.users} seed={self.seed}"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _config(world: World, raw: Path, runs: Path, steps: int) -> EcomrlConfig:
    baselines = [WORSE_RULES[world.space][0]]
    if world.space == "discrete":
        baselines.append("rule:uniform")
    run = RunConfig(input=raw, runs_dir=runs, baselines=baselines, bc_baseline=False)
    train = TrainConfig(n_steps=steps, seed=world.seed)
    if world.space == "continuous":
        train = TrainConfig(n_steps=max(steps // 2, 1), seed=world.seed)
    evaluate = EvaluateConfig(estimators=[*DEFAULT_ESTIMATORS, "mdr"])
    return EcomrlConfig(run=run, train=train, evaluate=evaluate)


def _simulate(world: World, days: int, raw: Path) -> SimulatorConfig:
    cfg = SimulatorConfig(
        n_users=world.users,
        seed=world.seed,
        days=days,
        arrival_days=None,
        action_space=world.space,
        logging_discount_bias=world.bias if world.space == "discrete" else 0.0,
    )
    write_raw_logs(simulate(cfg), raw)
    return cfg


def _corrupted(
    config: EcomrlConfig, date: Any, root: Path
) -> tuple[Any, dict[str, Any] | None]:
    """The certified pick around an agent trained on the negated reward, and its gate result."""
    dataset = config.run.runs_dir / "dataset"
    frame, manifest = load_transitions(dataset)
    split = split_logs(frame, date, config)
    bad = split.fit.with_columns(-pl.col("reward"))
    trained = train_on_frame(bad, manifest, root / "corrupt", config.train)
    agent = TrainedAgents(trained.artifact, None)
    chosen = build_candidates(split, manifest, dataset, root / "corrupt_out", agent, config)
    held = TransitionsDataset(frame=split.held_out, manifest=manifest.data, path=dataset)
    result = evaluate_candidates(
        held, chosen.policies[:1], config=config.evaluate, approval=config.approval,
        selection_notes=chosen.selection_notes,
    )
    return chosen.artifact, result.to_dict()["candidates"][0]


def _gate_rows(ope: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for c in ope["candidates"]:
        imp = c.get("improvement") or {}
        out[c["name"]] = {
            "approved": bool(c["verdict"]["approved"]),
            "estimated_gain": imp.get("estimate"),
            "gain_lower_bound": imp.get("lower_bound"),
            "gain_ci": (imp.get("ci_low"), imp.get("ci_high")),
            "level_lower_bound": imp.get("level_lower_bound"),
            "reason": c["verdict"]["decided_by"],
            "intervals": {
                name: [e.get("ci_low"), e.get("ci_high")]
                for name, e in (c.get("improvements") or {}).items()
            },
            "lower_bounds": {
                name: e.get("lower_bound") for name, e in (c.get("improvements") or {}).items()
            },
        }
    return out


def _truth(
    policies: dict[str, Any], sim: SimulatorConfig, hook: ObservationBuilder, users: int
) -> dict[str, tuple[float, float]]:
    """True gain over the logging policy (mean, 95 % half-width) by paired rollouts.

    The seed is the logs' own (it also draws the catalogue: another seed is another world);
    ``users`` differs from the logs' user count, so the rollout's users are a fresh draw.
    """
    seed = sim.seed
    base = deployment_value(logging_policy(sim), sim, n_users=users, seed=seed)
    out: dict[str, tuple[float, float]] = {"logging": (0.0, 0.0)}
    for name, policy in policies.items():
        uses_hook = not getattr(policy, "uses_default_observation", False)
        result = deployment_value(
            policy, sim, observation_hook=hook if uses_hook else None, n_users=users, seed=seed
        )
        out[name] = result.paired_difference(base)
    out["_logging_value"] = (base.value, base.std_error)
    return out


def run_world(world: World, args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    """Simulate, run the nightly job, judge the worse candidates, measure every truth."""
    clock = time.perf_counter()
    raw, runs = root / "raw", root / "runs"
    sim = _simulate(world, args.days, raw)
    config = _config(world, raw, runs, args.steps)
    date = sim.start_date + dt.timedelta(days=args.days - 1)
    outcome = run_nightly(config, date)
    run_json = json.loads((outcome.run_dir / "run.json").read_text())
    ope = json.loads((outcome.run_dir / "evaluation" / "ope.json").read_text())
    gate = _gate_rows(ope)
    policies: dict[str, Any] = {
        "candidate": load_policy(outcome.run_dir / run_json["candidate_artifact"]),
        "agent:unconstrained": load_policy(outcome.run_dir / run_json["agent_artifact"]),
    }
    rule, action = WORSE_RULES[world.space]
    others: dict[str, Any] = {rule: constant_action(action)}
    if world.space == "discrete":
        policies["targeting-rule"] = TargetingRule()
        others["rule:uniform"] = [0.25, 0.25, 0.25, 0.25]
        if args.corrupt and world.users <= args.corrupt_max_users:
            artifact, row = _corrupted(config, date, root)
            if row is not None:
                gate["corrupted-reward"] = _gate_rows({"candidates": [row]})[row["name"]]
                policies["corrupted-reward"] = load_policy(artifact)
    # the deliberately worse rules are rolled out only when the gate approved them
    policies.update({k: v for k, v in others.items() if gate.get(k, {}).get("approved")})
    hook = ObservationBuilder.from_manifest(runs / "dataset" / "_manifest.json")
    truth = _truth(policies, sim, hook, args.truth_users)
    approved = {k: v for k, v in policies.items() if gate.get(k, {}).get("approved")}
    if approved and args.truth_users_approved > args.truth_users:
        # an approval's truth decides a false approval: measure it on more users
        precise = _truth(approved, sim, hook, args.truth_users_approved)
        truth.update({k: v for k, v in precise.items() if k in approved})
    for name in others:
        if name not in truth and name in gate:
            truth[name] = (math.nan, math.nan)
    rows = []
    for name, (gain, half) in truth.items():
        if name.startswith("_") or name == "logging":
            continue
        g = gate.get(name, {})
        rows.append(
            {
                "world": world.label, "seed": world.seed, "users": world.users,
                "bias": world.bias, "space": world.space, "candidate": name,
                "true_gain": gain, "true_gain_half_width": half,
                "pick": (run_json.get("selection") or {}).get("pick"),
                "selection": run_json.get("selection") if name == "candidate" else None,
                **{k: v for k, v in g.items() if k != "gain_ci"},
                "gain_ci": list(g.get("gain_ci", (None, None))),
                "logging_value": truth["_logging_value"][0],
                "seconds": time.perf_counter() - clock,
            }
        )
    return rows


def _line(row: dict[str, Any]) -> str:
    est = row.get("estimated_gain")
    lb = row.get("gain_lower_bound")
    gate = "" if "approved" not in row else ("APPROVE" if row["approved"] else "reject")
    return (
        f"  {row['candidate']:<22} true {row['true_gain']:+6.2f} "
        f"+- {row['true_gain_half_width']:.2f}   est {_fmt(est)} lb {_fmt(lb)}  {gate}"
    )


def _fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:+6.2f}"


def summarise(rows: list[dict[str, Any]]) -> list[str]:
    """Power, false approvals, coverage, shipped gain, tightness (module docstring)."""
    cand = [r for r in rows if r["candidate"] == "candidate"]
    better = [r for r in cand if r["true_gain"] > 0]
    power_k = sum(r["approved"] for r in better)
    approved = [r for r in rows if r.get("approved")]
    false_k = sum(r["true_gain"] <= 0 for r in approved)
    out = []
    lo, hi = clopper_pearson(power_k, len(better))
    out.append(f"power: {power_k}/{len(better)} worlds with a truly better candidate approved "
               f"it ({lo:.2f}-{hi:.2f})")
    lo, hi = clopper_pearson(false_k, len(approved))
    out.append(f"false approvals: {false_k}/{len(approved)} approved candidates not truly better "
               f"({lo:.2f}-{hi:.2f}); over every judged candidate: {false_k}/"
               f"{sum('approved' in r for r in rows)}")
    out.extend(_coverage(rows))
    for space in sorted({r["space"] for r in rows}):
        for users in sorted({r["users"] for r in rows}):
            for bias in sorted({r["bias"] for r in rows}):
                out.extend(_group(rows, space, users, bias))
    return out


CERTIFIED = ("candidate", "corrupted-reward")


def _consistent(interval: list[float], truth: float, truth_half: float) -> bool:
    """Whether the interval agrees with a noisy truth: ``|mid - truth|`` within 1.96 standard
    errors of the difference (the interval's own, from its width, and the truth's)."""
    low, high = interval
    se = (high - low) / (2 * 1.959964)
    se_truth = truth_half / 1.959964
    return abs((low + high) / 2 - truth) <= 1.959964 * math.sqrt(se**2 + se_truth**2)


def _coverage(rows: list[dict[str, Any]]) -> list[str]:
    """Per estimator: the paired 95 % interval of the gain against the measured truth.

    ``covers``: the truth's point estimate inside the interval (biased low when the truth's own
    noise is not small against the interval); ``agrees``: the interval's centre within 1.96
    standard errors of the difference from the truth (both noises counted).
    """
    out = []
    names = sorted({n for r in rows for n in (r.get("intervals") or {})})
    for kind, keep in (("certified picks", True), ("other judged candidates", False)):
        sel = [r for r in rows if r.get("intervals") and (r["candidate"] in CERTIFIED) == keep]
        parts = []
        for name in names:
            cis = [
                (r["intervals"][name], r["true_gain"], r["true_gain_half_width"]) for r in sel
                if name in r["intervals"] and r["intervals"][name][0] is not None
                and r["intervals"][name][1] is not None and math.isfinite(r["true_gain"])
            ]
            k = sum(ci[0] <= g <= ci[1] for ci, g, _ in cis)
            a = sum(_consistent(ci, g, h) for ci, g, h in cis)
            lo, hi = clopper_pearson(a, len(cis))
            parts.append(f"{name} covers {k}/{len(cis)}, agrees {a}/{len(cis)} ({lo:.2f}-{hi:.2f})")
        out.append(f"the paired 95 % interval of the gain against the truth, {kind}: "
                   + "; ".join(parts))
    picks = [r for r in rows if r["candidate"] in CERTIFIED and r.get("lower_bounds")]
    parts = []
    for name in names:
        passed = [r for r in picks if (r["lower_bounds"].get(name) or -math.inf) > 0]
        bad = sum(r["true_gain"] <= 0 for r in passed)
        parts.append(f"{name} {len(passed)} (not truly better: {bad})")
    out.append(
        f"certified picks whose paired lower bound clears 0, by estimator (diagnostics aside; "
        f"{len(picks)} picks): " + ", ".join(parts)
    )
    return out


def _group(rows: list[dict[str, Any]], space: str, users: int, bias: float) -> list[str]:
    sel = [r for r in rows if r["space"] == space and r["users"] == users and r["bias"] == bias]
    if not sel:
        return []

    def mean(name: str, key: str = "true_gain") -> float:
        vals = [r[key] for r in sel if r["candidate"] == name and r.get(key) is not None]
        return sum(vals) / len(vals) if vals else math.nan

    cands = [r for r in sel if r["candidate"] == "candidate"]
    shipped = [r["true_gain"] if r["approved"] else 0.0 for r in cands]
    n_app = sum(r["approved"] for r in cands)
    tight = [
        (r["estimated_gain"] - r["gain_lower_bound"], r["estimated_gain"] - r["level_lower_bound"])
        for r in cands
        if r.get("level_lower_bound") is not None and r.get("gain_lower_bound") is not None
    ]
    ratio = (sum(b for _, b in tight) / sum(a for a, _ in tight)) if tight else math.nan
    return [
        f"{space} users={users} bias={bias:g}: approved {n_app}/{len(cands)}; true gain of the "
        f"pick {mean('candidate'):+.2f}, shipped (0 when rejected) "
        f"{sum(shipped) / max(len(shipped), 1):+.2f}, unconstrained agent "
        f"{mean('agent:unconstrained'):+.2f}, targeting rule {mean('targeting-rule'):+.2f}; "
        f"paired bound {ratio:.1f}x tighter than the level comparison"
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--users", type=_ints, default=[10_000, 50_000])
    p.add_argument("--bias", type=_floats, default=[0.0, 1.0])
    p.add_argument("--spaces", default="discrete")
    p.add_argument("--days", type=int, default=70)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--truth-users", type=int, default=30_000)
    p.add_argument("--truth-users-approved", type=int, default=120_000,
                   help="users of the paired rollouts of every approved candidate")
    p.add_argument("--no-corrupt", dest="corrupt", action="store_false")
    p.add_argument("--corrupt-max-users", type=int, default=10_000,
                   help="train the corrupted-reward agent only in worlds this small")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--summarise", type=Path, nargs="+", default=None,
                   help="only summarise the rows of these --json files (a rerun's row replaces "
                        "a row of the same world and candidate when its truth is more precise)")
    return p.parse_args(argv)


def merge_rows(files: list[Path]) -> list[dict[str, Any]]:
    """Rows of several runs; for the same world and candidate the most precise truth wins."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for path in files:
        for row in json.loads(path.read_text()):
            key = (row["world"], row["candidate"])
            old = best.get(key)
            half = row["true_gain_half_width"]
            if old is None or (math.isfinite(half) and not half >= old["true_gain_half_width"]):
                best[key] = row
    return list(best.values())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarise:
        print("\n".join(summarise(merge_rows(args.summarise))))
        return 0
    worlds = [
        World(seed, users, bias if space == "discrete" else 0.0, space)
        for space in args.spaces.split(",")
        for users in args.users
        for bias in (args.bias if space == "discrete" else [0.0])
        for seed in args.seeds
    ]
    rows: list[dict[str, Any]] = []
    for world in worlds:
        with tempfile.TemporaryDirectory(prefix="approval_truth_") as tmp:
            world_rows = run_world(world, args, Path(tmp))
        print(f"{world.label}  ({world_rows[0]['seconds']:.0f} s, pick {world_rows[0]['pick']})")
        for row in world_rows:
            print(_line(row))
        rows.extend(world_rows)
        if args.json is not None:
            args.json.write_text(json.dumps(rows, indent=1, default=str))
    print("\n".join(summarise(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
