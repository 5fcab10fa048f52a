"""Coverage of the marginal estimators' intervals: the state ratios held fixed vs refitted.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.marginal_coverage \
        [--datasets 200] [--episodes 300] [--resamples 200] [--seed 2026] [--no-timing]

The tabular MDP of ``tests/evaluation/test_marginal.py`` (4 states x 3 actions, at most 5
decisions, episodes ending with a probability that depends on the state and the action, one-hot
observations; exact values by dynamic programming). For each of M independent logged datasets
of N episodes and each candidate (close: 20 % greedy, far: 60 % greedy), with the deliberately
wrong fixed model ``q = 0.7 x exact Q`` and one shared set of Poisson(1) resample counts per
dataset, the nominal 95 % intervals of

* ``mis`` / ``mdr fixed ratios``: the episode bootstrap of ``evaluation.intervals.summarise``
  (BCa) with the fitted state ratios held fixed (the current intervals);
* ``mis`` / ``mdr refit``: ``evaluation.estimators.marginal.marginal_bootstrap``, the ratio
  regressions refitted on every resample (percentile interval);
* ``dr``: the sequential doubly robust estimator (same model), episode bootstrap, BCa;

are checked against the exact value, for the level ``V(candidate)`` and for the paired
difference ``V(candidate) - V(behaviour)`` (per episode ``X_i - G_i``). Printed: coverage with
its Clopper-Pearson 95 % interval and the mean interval width. Then the time of the refit
bootstrap on the tabular datasets, and (unless ``--no-timing``) on 100,000 decisions with 30
continuous features and 10 steps (B = 200, one core with ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from benchmarks._stats import clopper_pearson
from ecomrl.logging import configure_logging
from evaluation.config import MarginalConfig
from evaluation.data import EpisodeData
from evaluation.estimators import (
    DoublyRobust,
    MarginalizedDR,
    MarginalizedIS,
    OPEInput,
)
from evaluation.estimators.marginal import marginal_bootstrap
from evaluation.improvement import paired_difference
from evaluation.intervals import ResampleCounts, percentile_interval, summarise
from evaluation.testing.synthetic import TabularMDP, mix, softmax_policy

METHODS = (
    "mis fixed ratios (BCa)",
    "mdr fixed ratios (BCa)",
    "mis refit (percentile)",
    "mdr refit (percentile)",
    "dr (BCa)",
)
TARGETS = ("level", "paired")
Q_SCALE = 0.7


@dataclass
class Tally:
    """Per (method, target): interval covers the truth, interval width."""

    covered: dict[tuple[str, str], list[bool]] = field(default_factory=dict)
    width: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, method: str, target: str, low: float, high: float, truth: float) -> None:
        self.covered.setdefault((method, target), []).append(low <= truth <= high)
        self.width.setdefault((method, target), []).append(high - low)


def candidate_input(
    mdp: TabularMDP, policy: np.ndarray, data: EpisodeData, states: np.ndarray
) -> OPEInput:
    """The candidate with the wrong fixed model ``Q_SCALE x`` the exact Q."""
    return mdp.candidate_input(policy, data, states, Q_SCALE)


def one_dataset(
    data: EpisodeData,
    inp: OPEInput,
    truth: dict[str, float],
    tally: Tally,
    *,
    n_resamples: int,
    seed: int,
) -> float:
    """Add one dataset's intervals for one candidate to ``tally``; returns the seconds spent in
    the refit bootstrap."""
    config = MarginalConfig()
    shared = ResampleCounts(data.n_episodes, n_resamples, seed=seed)
    counts = np.concatenate(list(shared.chunks()))
    g = data.returns
    fixed = [
        MarginalizedIS(config).episode_statistics(inp),
        MarginalizedDR(config).episode_statistics(inp),
        DoublyRobust().episode_statistics(inp),
    ]
    paired = [paired_difference(s, g) for s in fixed]
    summaries = summarise(fixed + paired, n_resamples=n_resamples, counts=shared)
    for k, method in enumerate((METHODS[0], METHODS[1], METHODS[4])):
        for target, s in zip(TARGETS, (summaries[k], summaries[k + 3]), strict=True):
            tally.add(method, target, s.ci_low, s.ci_high, truth[target])
    spent = 0.0
    for method, dr in ((METHODS[2], False), (METHODS[3], True)):
        for target, returns in zip(TARGETS, (None, g), strict=True):
            start = time.perf_counter()
            draws = marginal_bootstrap(
                inp, doubly_robust=dr, config=config, counts=counts, returns=returns
            )
            spent += time.perf_counter() - start
            low, high = percentile_interval(draws, 0.95)
            tally.add(method, target, low, high, truth[target])
    return spent


def _interval(hits: list[bool]) -> tuple[float, float]:
    return clopper_pearson(int(sum(hits)), len(hits))


def report(tallies: dict[str, Tally], truths: dict[str, dict[str, float]]) -> None:
    print(
        "| candidate | target | truth | method | 95 % coverage | Clopper-Pearson 95 % | "
        "mean width |"
    )
    print("|---|---|---:|---|---:|---|---:|")
    for name, tally in tallies.items():
        for target in TARGETS:
            for m in METHODS:
                hits = tally.covered[(m, target)]
                lo, hi = _interval(hits)
                print(
                    f"| {name} | {target} | {truths[name][target]:.3f} | {m} | "
                    f"{np.mean(hits):.1%} | {lo:.1%} - {hi:.1%} | "
                    f"{np.mean(tally.width[(m, target)]):.3f} |"
                )


def continuous_input(
    n_decisions: int = 100_000, n_features: int = 30, horizon: int = 10, seed: int = 0
) -> OPEInput:
    """Episodes of exactly ``horizon`` decisions with AR(1) Gaussian observations, softmax
    logging and candidate policies over 3 actions and a fixed model (for timing only)."""
    rng = np.random.default_rng(seed)
    n_episodes = n_decisions // horizon
    obs = np.empty((n_episodes, horizon, n_features))
    obs[:, 0] = rng.normal(size=(n_episodes, n_features))
    for t in range(1, horizon):
        obs[:, t] = 0.8 * obs[:, t - 1] + 0.6 * rng.normal(size=(n_episodes, n_features))
    flat = obs.reshape(-1, n_features)
    behaviour = softmax_policy(flat @ rng.normal(scale=0.2, size=(n_features, 3)))
    candidate = softmax_policy(flat @ rng.normal(scale=0.2, size=(n_features, 3)))
    action = (rng.random(len(flat))[:, None] > np.cumsum(behaviour, axis=1)).sum(axis=1)
    action = np.minimum(action, 2)
    rows = np.arange(len(flat))
    data = EpisodeData.from_arrays(
        episode=np.repeat(np.arange(n_episodes), horizon),
        action=action,
        reward=rng.normal(size=len(flat)),
        behaviour_propensity=behaviour[rows, action],
        n_actions=3,
        observation=flat.astype(np.float32),
    )
    q = rng.normal(size=(len(flat), 3))
    return OPEInput(
        data,
        target_probability=candidate[rows, action],
        target_distribution=candidate,
        q_logged=q[rows, action],
        v_hat=np.sum(candidate * q, axis=1),
    )


def time_large(n_resamples: int = 200) -> None:
    inp = continuous_input()
    d = inp.data
    counts = np.concatenate(list(ResampleCounts(d.n_episodes, n_resamples, seed=0).chunks()))
    for dr in (False, True):
        start = time.perf_counter()
        marginal_bootstrap(inp, doubly_robust=dr, counts=counts, returns=d.returns)
        elapsed = time.perf_counter() - start
        print(
            f"{'mdr' if dr else 'mis'} refit bootstrap, {d.n_decisions} decisions x "
            f"{d.observation.shape[1] if d.observation is not None else 0} features x "
            f"{d.horizon} steps, B = {n_resamples}: {elapsed:.1f} s "
            f"({1000 * elapsed / n_resamples:.0f} ms per refit)"
        )


def main() -> None:
    configure_logging(level="warning")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-timing", action="store_true", help="skip the 100k-decision timing")
    args = parser.parse_args()
    mdp = TabularMDP.random(n_states=4, n_actions=3, horizon=5, seed=1)
    behaviour = softmax_policy(np.random.default_rng(0).normal(size=(4, 3)))
    greedy = np.eye(3)[[0, 1, 2, 0]]
    candidates = {
        "close (20% greedy)": mix(behaviour, greedy, 0.2),
        "far (60% greedy)": mix(behaviour, greedy, 0.6),
    }
    v_behaviour = mdp.value(behaviour)
    truths = {
        k: {"level": mdp.value(p), "paired": mdp.value(p) - v_behaviour}
        for k, p in candidates.items()
    }
    tallies = {k: Tally() for k in candidates}
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    refit_seconds = 0.0
    for j in tqdm(range(args.datasets), desc="datasets"):
        data, states = mdp.sample(behaviour, args.episodes, rng)
        for key, policy in candidates.items():
            inp = candidate_input(mdp, policy, data, states)
            refit_seconds += one_dataset(
                data, inp, truths[key], tallies[key], n_resamples=args.resamples, seed=j
            )
    elapsed = time.perf_counter() - start
    n_refits = args.datasets * len(candidates) * 4 * args.resamples
    print(
        f"\n{args.datasets} datasets x {args.episodes} episodes, {args.resamples} Poisson "
        f"resamples (shared by all methods), nominal 95 %, model {Q_SCALE} x exact Q; "
        f"{elapsed:.0f} s\n"
    )
    report(tallies, truths)
    print(
        f"\nrefit bootstrap, tabular MDP: {1e6 * refit_seconds / n_refits:.0f} us per "
        f"refit ({1e3 * refit_seconds / (n_refits / args.resamples):.1f} ms per call of "
        f"{args.resamples} resamples)"
    )
    if not args.no_timing:
        time_large(args.resamples)


if __name__ == "__main__":
    main()
