"""Our off-policy evaluation against SCOPE-RL 0.2.1 on identical arrays.

    .venv/bin/python -m benchmarks.ope_vs_scope [--episodes 100000] [--steps 10] [--resamples 1000]
        [--candidates 5] [--scope-python PATH]

Fixed-length episodes (SCOPE-RL's layout), 4 actions, gamma 0.9. Both sides run single-threaded
(``OMP_NUM_THREADS=1``); every figure is process CPU seconds (the machine is shared, so CPU
time is the steadier guide), the best of ``--repeat`` runs for point estimates.

1. Point estimates of TIS, PDIS, SNTIS, SNPDIS (ours: ``is``, ``pdis``, ``wis``, ``wpdis``)
   from the logged arrays and the candidate's action distribution; ours from an ``EpisodeData``
   built beforehand (loading, shared by every candidate). They must agree to 1e-9 (SCOPE-RL adds
   1e-10 to its self-normalised denominators).
2. Bootstrap intervals with SCOPE-RL's procedure: 1,000 resamples of the N trajectories with
   replacement (multinomial), the mean of the per-trajectory values, the 2.5 % and 97.5 %
   percentiles; the self-normalised estimators keep the full-sample normaliser in every
   resample (SCOPE-RL normalises before resampling). SCOPE-RL draws its resamples again for each
   estimator (``estimate_interval(random_state=0)``); ours draws resample counts once, for the
   four estimators, and multiplies them by the per-episode statistics.
   * ``same resamples``: our counts are SCOPE-RL's own resamples (its MT19937 stream, redrawn
     here), products in float64: the intervals must agree to 1e-9.
   * ``own counts``: our multinomial counts (PCG64, ``scheme="multinomial"``), float32
     products as in ``evaluation.intervals``: the same procedure, another random stream.
3. Ours as the library runs it: ``estimate_interval`` one estimator at a time (percentile,
   Poisson bootstrap, ratio estimators resampling their normalisers too), the counts shared
   through ``evaluation.intervals.shared_counts``; then ``--candidates`` candidates, SCOPE-RL's
   time scaled by the number of candidates (it shares nothing between calls).

SCOPE-RL needs ``numpy<2``, so it lives in its own virtual environment,
``benchmarks/.venv-scope`` (git-ignored), created on first use with
``pip install torch==2.13.0 d3rlpy==2.8.1 scope-rl==0.2.1 'numpy<2' 'pandas<3' 'pyarrow<22'``
(torch's CPU build as the Makefile installs it: the default index; a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ecomrl.logging import configure_logging
from evaluation.data import EpisodeData
from evaluation.estimators import (
    OPEInput,
    PerDecisionIS,
    TrajectoryIS,
    WeightedIS,
    WeightedPerDecisionIS,
)
from evaluation.estimators.base import OffPolicyEstimator
from evaluation.intervals import (
    bootstrap_from_counts,
    bootstrap_values,
    clear_shared_counts,
    percentile_interval,
)
from evaluation.statistics import EpisodeStatistics

T = TypeVar("T")
NAMES = ["is", "pdis", "wis", "wpdis"]
VENV = Path(__file__).resolve().parent / ".venv-scope"
SCOPE_PACKAGES = [
    "torch==2.13.0", "d3rlpy==2.8.1", "scope-rl==0.2.1", "numpy<2", "pandas<3", "pyarrow<22",
]  # fmt: skip

SCOPE_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
from scope_rl.ope.discrete import (
    TrajectoryWiseImportanceSampling, PerDecisionImportanceSampling, SelfNormalizedTIS,
    SelfNormalizedPDIS)
z = np.load(sys.argv[1])
n_boot, repeat = int(sys.argv[2]), int(sys.argv[3])
kw = dict(step_per_trajectory=int(z["steps"]), action=z["action"], reward=z["reward"],
          pscore=z["pscore"], evaluation_policy_action_dist=z["dist"], gamma=float(z["gamma"]))
ests = [("is", TrajectoryWiseImportanceSampling()), ("pdis", PerDecisionImportanceSampling()),
        ("wis", SelfNormalizedTIS()), ("wpdis", SelfNormalizedPDIS())]
out = {"values": {}, "intervals": {}, "point_cpu": float("inf")}
for _ in range(repeat):
    c = time.process_time()
    values = {name: float(e.estimate_policy_value(**kw)) for name, e in ests}
    out["point_cpu"] = min(out["point_cpu"], time.process_time() - c)
out["values"] = values
c = time.process_time()
for name, e in ests:
    ci = list(e.estimate_interval(**kw, n_bootstrap_samples=n_boot, random_state=0).values())
    out["intervals"][name] = [float(ci[1]), float(ci[2])]
out["boot_cpu"] = time.process_time() - c
print(json.dumps(out))
"""


def scope_python(path: Path | None) -> Path:
    """The SCOPE-RL interpreter: ``path`` if given, else ``benchmarks/.venv-scope`` (made here)."""
    if path is not None:
        return path
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} and installing SCOPE-RL 0.2.1 (a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        (VENV / ".gitignore").write_text("*\n")
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, *SCOPE_PACKAGES], check=True)
    return python


def make_arrays(n_episodes: int, steps: int, seed: int, shift: float) -> dict[str, np.ndarray]:
    """Logged decisions of fixed-length episodes and one candidate's action distribution."""
    rng = np.random.default_rng(seed)
    n, k = n_episodes * steps, 4
    logits = rng.normal(size=(n, k)) * 0.8
    behaviour = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    action = np.minimum((rng.random(n)[:, None] > behaviour.cumsum(axis=1)).sum(axis=1), k - 1)
    reward = logits[:, 0] + 0.5 * (action == 1) + rng.normal(size=n)
    greedy = np.eye(k)[(logits[:, 1] > 0).astype(int)]
    return {
        "action": action,
        "reward": reward,
        "pscore": behaviour[np.arange(n), action],
        "dist": (1 - shift) * behaviour + shift * greedy,
        "steps": np.array(steps),
        "gamma": np.array(0.9),
    }


def candidate_dist(arrays: dict[str, np.ndarray], j: int) -> np.ndarray:
    """The j-th candidate: the logged one shifted towards uniform by a different amount."""
    share = 0.05 * j
    return (1 - share) * arrays["dist"] + share / arrays["dist"].shape[1]


def cpu(fn: Callable[[], T], repeat: int = 1) -> tuple[float, T]:
    """Best process CPU seconds of ``fn`` over ``repeat`` runs, and its last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    assert out is not None
    return best, out


def estimators() -> list[OffPolicyEstimator]:
    return [TrajectoryIS(), PerDecisionIS(), WeightedIS(), WeightedPerDecisionIS()]


def fixed_normaliser_stats(inp: OPEInput) -> list[EpisodeStatistics]:
    """Per-episode values under SCOPE-RL's bootstrap: normalisers from the full sample.

    TIS and PDIS are plain means already. SNTIS divides each episode's ``w G`` by the mean
    trajectory weight; SNPDIS divides each step's ``gamma^t w_t r_t`` by that step's mean weight
    (fixed-length episodes: every episode still runs at every step).
    """
    d = inp.data
    tis, pdis = TrajectoryIS().episode_statistics(inp), PerDecisionIS().episode_statistics(inp)
    tw = inp.trajectory_weights
    sn_tis = EpisodeStatistics.mean_of((tw * d.returns / tw.mean())[:, None])
    step_mean = np.bincount(d.step, weights=inp.w) / d.n_episodes
    sn_pdis_col = np.bincount(
        d.episode, weights=d.discount * inp.w * d.reward / step_mean[d.step], minlength=d.n_episodes
    )
    return [tis, pdis, sn_tis, EpisodeStatistics.mean_of(sn_pdis_col[:, None])]


def scope_counts(n: int, resamples: int, chunk: int) -> list[np.ndarray]:
    """SCOPE-RL's resamples as float64 counts: ``RandomState(0).choice(N, N)`` per resample,
    counted one resample at a time (its counts stay in cache)."""
    rs = np.random.RandomState(0)
    out = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        counts = np.empty((size, n))
        for row, drawn in zip(counts, rs.randint(0, n, size=(size, n)), strict=True):
            row[:] = np.bincount(drawn, minlength=n)
        out.append(counts)
    return out


def intervals_of(replicates: np.ndarray) -> dict[str, list[float]]:
    return {name: list(percentile_interval(replicates[:, j], 0.95)) for j, name in enumerate(NAMES)}


def run_scope(python: Path, arrays: dict[str, np.ndarray], resamples: int, repeat: int) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "arrays.npz"
        payload: dict[str, Any] = dict(arrays)
        np.savez(path, **payload)
        proc = subprocess.run(
            [str(python), "-c", SCOPE_SCRIPT, str(path), str(resamples), str(repeat)],
            capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"SCOPE-RL failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def episode_data(arrays: dict[str, np.ndarray]) -> EpisodeData:
    steps = int(arrays["steps"])
    n = len(arrays["action"])
    return EpisodeData.from_arrays(
        episode=np.repeat(np.arange(n // steps), steps),
        action=arrays["action"],
        reward=arrays["reward"],
        behaviour_propensity=arrays["pscore"],
        gamma=float(arrays["gamma"]),
        n_actions=arrays["dist"].shape[1],
    )


def ours_point(data: EpisodeData, dist: np.ndarray, repeat: int) -> tuple[float, list[float]]:
    rows = np.arange(data.n_decisions)
    prob = dist[rows, data.action]

    def point() -> list[float]:
        inp = OPEInput(data, prob)
        return [e.estimate_policy_value(inp) for e in estimators()]

    return cpu(point, repeat)


def ours_same_resamples(inp: OPEInput, resamples: int) -> tuple[float, np.ndarray]:
    """SCOPE-RL's resamples redrawn, then every estimator from one float64 product each chunk."""

    def run() -> np.ndarray:
        stats = fixed_normaliser_stats(inp)
        blocks = scope_counts(inp.data.n_episodes, resamples, chunk=100)
        return np.vstack([bootstrap_from_counts(stats, c, exact=True) for c in blocks])

    return cpu(run)


def ours_own_counts(inp: OPEInput, resamples: int, scheme: str) -> tuple[float, np.ndarray]:
    return cpu(
        lambda: bootstrap_values(
            fixed_normaliser_stats(inp), n_resamples=resamples, seed=0, scheme=scheme
        )
    )


def ours_library(data: EpisodeData, dists: list[np.ndarray], resamples: int) -> float:
    """``estimate_interval`` of the four estimators for each candidate, counts shared."""
    rows = np.arange(data.n_decisions)
    clear_shared_counts()

    def run() -> int:
        for dist in dists:
            inp = OPEInput(data, dist[rows, data.action])
            for e in estimators():
                e.estimate_interval(inp, n_resamples=resamples, method="percentile")
        return len(dists)

    return cpu(run)[0]


def max_gap(ours: dict[str, list[float]], theirs: dict[str, list[float]]) -> float:
    return max(abs(a - b) for k in NAMES for a, b in zip(ours[k], theirs[k], strict=True))


def report(args: argparse.Namespace, scope: Any, rows: list[tuple[str, float, float]]) -> None:
    print("| step (CPU s) | SCOPE-RL 0.2.1 | ours | SCOPE-RL / ours |")
    print("|---|---:|---:|---:|")
    for label, theirs, ours in rows:
        print(f"| {label} | {theirs:.3f} | {ours:.3f} | {theirs / ours:.1f}x |")


def main() -> None:
    configure_logging(level="warning")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the point estimates")
    parser.add_argument("--scope-python", type=Path, default=None)
    args = parser.parse_args()
    python = scope_python(args.scope_python)
    arrays = make_arrays(args.episodes, args.steps, seed=0, shift=0.3)
    print(f"{args.episodes} episodes x {args.steps} steps, 4 actions, {args.resamples} resamples")
    scope = run_scope(python, arrays, args.resamples, args.repeat)
    data = episode_data(arrays)
    t_point, values = ours_point(data, arrays["dist"], args.repeat)
    inp = OPEInput(data, arrays["dist"][np.arange(data.n_decisions), data.action])
    t_same, same = ours_same_resamples(inp, args.resamples)
    t_multi, _ = ours_own_counts(inp, args.resamples, "multinomial")
    t_poisson, _ = ours_own_counts(inp, args.resamples, "poisson")
    dists = [candidate_dist(arrays, j) for j in range(args.candidates)]
    t_one = ours_library(data, dists[:1], args.resamples)
    t_many = ours_library(data, dists, args.resamples)
    boot = scope["boot_cpu"]
    rows = [
        ("point estimates, 4 estimators", scope["point_cpu"], t_point),
        ("intervals, SCOPE-RL's procedure, same resamples (float64)", boot, t_same),
        ("intervals, SCOPE-RL's procedure, own multinomial counts", boot, t_multi),
        ("intervals, Poisson bootstrap, own counts", boot, t_poisson),
        ("estimate_interval x 4 estimators, 1 candidate", boot, t_one),
        (f"estimate_interval x 4 estimators, {args.candidates} candidates", boot * args.candidates,
         t_many),
    ]  # fmt: skip
    report(args, scope, rows)
    gap_point = max(abs(v - scope["values"][k]) for k, v in zip(NAMES, values, strict=True))
    gap_ci = max_gap(intervals_of(same), scope["intervals"])
    print(
        f"\npoint estimates: largest difference {gap_point:.1e} (agree to 1e-9: {gap_point < 1e-9})"
    )
    print(f"intervals, same resamples: largest difference {gap_ci:.1e} (1e-9: {gap_ci < 1e-9})")
    print(f"SCOPE-RL's {args.candidates}-candidate time is {args.candidates} x one candidate's")
    if gap_point >= 1e-9 or gap_ci >= 1e-9:
        sys.exit(1)


if __name__ == "__main__":
    main()
