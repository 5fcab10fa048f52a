"""OPE against the truth: bias, Monte-Carlo error, interval coverage and ranking, per estimator.

    .venv/bin/python -m benchmarks.ope_truth [--small] [--datasets M] [--episodes N]

A tabular MDP (``evaluation.testing.synthetic``; episode lengths depend on the actions, at most 5
decisions) with exact values by dynamic programming. For each of M independent logged datasets
of N episodes (softmax logging policy) and each candidate (the logging policy itself, policies
close to and far from it, uniform, constant rules), every estimator is run with the model fitted
on that dataset (ridge fitted Q evaluation with step interactions) and 200 bootstrap resamples.
Printed per candidate and estimator: the truth, the mean estimate, the bias and its z-score
against the Monte-Carlo standard error (|z| > 3: biased at this sample size), the RMSE, the
coverage of the nominal 95 % BCa interval, and how often the t lower bound stays below the
truth. Then the ranking of the candidates (Spearman correlation with the truth, regret of the
top pick). Biased or under-covering estimators are shown as they are.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from scipy import stats
from tqdm import tqdm

from ecomrl.logging import configure_logging
from evaluation.config import DirectMethodConfig
from evaluation.estimators import (
    DirectMethod,
    DoublyRobust,
    FittedQEvaluation,
    OPEInput,
    PerDecisionIS,
    TrajectoryIS,
    WeightedDoublyRobust,
    WeightedIS,
    WeightedPerDecisionIS,
)
from evaluation.intervals import summarise
from evaluation.testing.synthetic import TabularMDP, mix, softmax_policy


def main() -> None:
    configure_logging(level="warning")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="50 datasets (a quick look)")
    parser.add_argument("--datasets", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument(
        "--simulator",
        type=int,
        default=None,
        help="simulator worlds for the second table (default 12, --small 3; 0 skips it)",
    )
    parser.add_argument(
        "--agent-worlds",
        type=int,
        default=0,
        help="train a discrete CQL agent in the first K simulator worlds and evaluate it too",
    )
    parser.add_argument("--agent-steps", type=int, default=3000)
    args = parser.parse_args()
    n_datasets = args.datasets or (50 if args.small else 300)
    mdp = TabularMDP.random(n_states=4, n_actions=3, horizon=5, seed=1)
    behaviour = softmax_policy(np.random.default_rng(0).normal(size=(4, 3)))
    greedy = np.eye(3)[[0, 1, 2, 0]]
    candidates = {
        "behaviour": behaviour,
        "close (20% greedy)": mix(behaviour, greedy, 0.2),
        "far (60% greedy)": mix(behaviour, greedy, 0.6),
        "uniform": np.full((4, 3), 1 / 3),
        "constant 0": np.eye(3)[[0, 0, 0, 0]],
        "constant 2": np.eye(3)[[2, 2, 2, 2]],
    }
    truth = {k: mdp.value(p) for k, p in candidates.items()}
    estimators = [
        TrajectoryIS(),
        PerDecisionIS(),
        WeightedIS(),
        WeightedPerDecisionIS(),
        DoublyRobust(),
        WeightedDoublyRobust(),
        DirectMethod(),
    ]
    names = [e.name for e in estimators]
    fqe = FittedQEvaluation(DirectMethodConfig(step_interactions=True, ridge_alpha=1e-3))
    est = {k: np.zeros((n_datasets, len(names))) for k in candidates}
    cover = {k: np.zeros((n_datasets, len(names)), dtype=bool) for k in candidates}
    lb_ok = {k: np.zeros((n_datasets, len(names)), dtype=bool) for k in candidates}
    rng = np.random.default_rng(2026)
    start = time.perf_counter()
    for j in tqdm(range(n_datasets), desc="datasets"):
        data, states = mdp.sample(behaviour, args.episodes, rng)
        for key, policy in candidates.items():
            pred = fqe.predict(data, target_distribution=policy[states])
            inp = OPEInput(
                data,
                policy[states, data.action],
                policy[states],
                q_logged=pred.q_logged,
                v_hat=pred.v_hat,
            )
            summaries = summarise(
                [e.episode_statistics(inp) for e in estimators],
                n_resamples=args.resamples,
                seed=j,
            )
            for i, s in enumerate(summaries):
                est[key][j, i] = s.estimate
                cover[key][j, i] = s.ci_low <= truth[key] <= s.ci_high
                lb_ok[key][j, i] = s.lower_bound_t <= truth[key]
    elapsed = time.perf_counter() - start
    print(
        f"\n{n_datasets} datasets x {args.episodes} episodes, {args.resamples} Poisson-bootstrap "
        f"resamples, BCa 95 % intervals; {elapsed:.0f} s\n"
    )
    print(
        "| candidate | estimator | truth | mean estimate | bias | bias z | RMSE | "
        "95 % coverage | t-bound <= truth |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in candidates:
        for i, name in enumerate(names):
            v = est[key][:, i]
            bias = v.mean() - truth[key]
            mc_se = v.std(ddof=1) / np.sqrt(n_datasets)
            z = bias / mc_se if mc_se > 0 else 0.0
            rmse = float(np.sqrt(np.mean((v - truth[key]) ** 2)))
            flag = " (!)" if abs(z) > 3 else ""
            print(
                f"| {key} | {name} | {truth[key]:.3f} | {v.mean():.3f} | {bias:+.3f}{flag} | "
                f"{z:+.1f} | {rmse:.3f} | {cover[key][:, i].mean():.0%} | "
                f"{lb_ok[key][:, i].mean():.0%} |"
            )
    print("\nRanking of the 6 candidates per dataset (mean over datasets):\n")
    print("| estimator | Spearman with truth | regret of top pick | top pick right |")
    print("|---|---:|---:|---:|")
    keys = list(candidates)
    t = np.array([truth[k] for k in keys])
    for i, name in enumerate(names):
        rhos, regrets = [], []
        for j in range(n_datasets):
            e = np.array([est[k][j, i] for k in keys])
            rhos.append(stats.spearmanr(t, e).statistic)
            regrets.append(t.max() - t[int(np.argmax(e))])
        r = np.asarray(regrets)
        print(f"| {name} | {np.mean(rhos):.3f} | {r.mean():.4f} | {np.mean(r == 0):.0%} |")
    n_worlds = args.simulator if args.simulator is not None else (3 if args.small else 12)
    if n_worlds > 0:
        simulator_sweep(n_worlds, args.resamples, args.agent_worlds, args.agent_steps)


def _epsilon_soft(policy: Any, epsilon: float) -> Any:
    """``(observations, rng) -> actions``: uniform with probability epsilon, else greedy."""

    def act(observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        greedy = np.asarray(policy.predict(observations), dtype=np.int64)
        explore = rng.random(len(greedy)) < epsilon
        return np.where(explore, rng.integers(0, policy.n_actions, len(greedy)), greedy)

    return act


def simulator_sweep(
    n_worlds: int, resamples: int, agent_worlds: int = 0, agent_steps: int = 3000
) -> None:
    """Simulator logs -> ETL -> OPE, against rollouts of the same world with 4x the users.

    The simulator's seed fixes its world (catalogue, segments) and its users, so each logged
    dataset is its own world with its own truth; bias and coverage are averaged over worlds.
    """
    import tempfile
    from pathlib import Path

    from benchmarks._world import ARRIVAL_DAYS
    from etl.pipeline import run_etl
    from evaluation.config import EvaluateConfig
    from evaluation.evaluate import evaluate_candidates
    from simulator.config import SimulatorConfig
    from simulator.logs import simulate, write_raw_logs
    from simulator.policies import logging_policy
    from simulator.rollout import rollout

    specs: dict[str, int | None] = {
        "rule:behaviour": None,
        "rule:constant=0": 0,
        "rule:constant=3": 3,
        "rule:uniform": -1,
    }
    names = ["pdis", "wpdis", "dr", "wdr", "dm"]
    rows: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    start = time.perf_counter()
    for w in tqdm(range(n_worlds), desc="simulator worlds"):
        cfg = SimulatorConfig(n_users=2000, seed=500 + w, arrival_days=ARRIVAL_DAYS)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_raw_logs(simulate(cfg), root / "raw")
            run_etl(root / "raw", root / "etl")
            world_specs = dict(specs)
            policies: dict[str, object] = {}
            hook = None
            if w < agent_worlds:
                from etl import ObservationBuilder
                from offline_rl import TrainConfig, load_policy
                from offline_rl.train import train

                trained = train(
                    root / "etl",
                    root / "agent",
                    TrainConfig(agent="discrete_cql", n_steps=agent_steps, onnx=False),
                    progress=False,
                )
                agent = load_policy(trained.artifact)
                world_specs[f"artifact:{trained.artifact}"] = None
                policies[f"artifact:{trained.artifact}"] = agent
                # epsilon-soft version: the same probabilities as ModelPolicy(epsilon=0.3)
                world_specs[f"artifact:{trained.artifact}#epsilon=0.3"] = None
                policies[f"artifact:{trained.artifact}#epsilon=0.3"] = _epsilon_soft(agent, 0.3)
                hook = ObservationBuilder.from_manifest(root / "etl" / "_manifest.json")
            ecfg = EvaluateConfig(estimators=names)
            ecfg.bootstrap.n_resamples = resamples
            result = evaluate_candidates(root / "etl", list(world_specs), config=ecfg)
            for spec, k in world_specs.items():
                label = spec
                if spec.startswith("artifact:"):
                    label = "trained agent (discrete CQL)"
                    if "#epsilon" in spec:
                        label += ", 30 % uniform"
                if spec in policies:
                    truth = rollout(policies[spec], cfg, n_users=8000, observation_hook=hook)
                else:
                    if k is None:
                        policy: object = logging_policy(cfg)
                    elif k < 0:
                        policy = np.full(4, 0.25)
                    else:
                        policy = np.eye(4)[k]
                    truth = rollout(policy, cfg, n_users=8000)
                cand = result.candidates[list(world_specs).index(spec)]
                diag = cand.diagnostics
                weights_ok = float(diag["ess"] >= 100 and diag["max_weight_share"] <= 0.05)
                for name in names:
                    e = cand.estimate(name)
                    rows.setdefault((label, name), []).append(
                        (
                            e.estimate,
                            e.ci_low,
                            e.ci_high,
                            truth.value,
                            truth.std_error,
                            float(diag["ess"]),
                            weights_ok,
                        )
                    )
    elapsed = time.perf_counter() - start
    print(
        f"\nSimulator (promotion, 2000 users and 28 days per logged dataset; truth: rollout of "
        f"the same world with 8000 users), {n_worlds} worlds, {elapsed:.0f} s\n"
    )
    print(
        "| candidate | estimator | mean truth | mean (estimate - truth) | z | "
        "95 % coverage | mean truth s.e. | mean ESS | weight checks pass |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (spec, name), values in rows.items():
        arr = np.asarray(values)
        diff = arr[:, 0] - arr[:, 3]
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        covered = np.mean((arr[:, 1] <= arr[:, 3]) & (arr[:, 3] <= arr[:, 2]))
        print(
            f"| {spec} | {name} | {arr[:, 3].mean():.3f} | {diff.mean():+.3f} | "
            f"{diff.mean() / se:+.1f} | {covered:.0%} | {arr[:, 4].mean():.3f} | "
            f"{arr[:, 5].mean():.0f} | {arr[:, 6].mean():.0%} |"
        )


if __name__ == "__main__":
    main()
