"""ecomrl against Open Bandit Pipeline (obp) on simulated one-step recommendation logs.

The Open Bandit Dataset paper's protocol (Saito et al. 2021): the estimators see B = 30
bootstrap resamples of the logged rounds; each estimate's relative estimation error
``|V_hat - V| / V`` against the known truth is averaged over the resamples (and here over the
candidates as well). The logs come from :mod:`evaluation.testing.synthetic_bandit` (K items, rare
clicks, a personal taste that interacts user and item), with a uniform and a non-uniform
logging policy, and three candidates per logging policy. Both libraries see the same rounds:
this process writes every resample to an ``.npz`` file and runs obp in its own virtual
environment (obp 0.5.7 pins Python < 3.11 and older numpy: ``benchmarks/.venv-obp``, built with
``--ignore-requires-python``; see the module's ``make_venv`` note) on the same files.

obp: ``RegressionModel`` (3-fold cross-fitted, ``action_context`` = one-hot items) with a
logistic regression and with gradient-boosted trees, and its DM, IPW, SNIPW, DR, SNDR,
Switch-DR and DR-os estimators; its best is the best of every (estimator, model) pair.
ecomrl: the default reward model (``auto``: a 5-fold cross-fitted logistic regression on
(context, action)) and its ipw, snipw, dm_bandit, dr_bandit and sndr, as ``evaluate_candidates``
computes them (point estimates only).

Run (about 10 minutes on 2 shared cores):

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.obp_bandit [--rounds 10000] [--items 40]

obp's venv, once:

    python3.11 -m venv benchmarks/.venv-obp && benchmarks/.venv-obp/bin/pip install \
        torch==2.13.0 "numpy<2" "scikit-learn<1.6" "pandas<2.3" scipy matplotlib seaborn \
        pyyaml tqdm mypy-extensions && \
        benchmarks/.venv-obp/bin/pip install --no-deps --ignore-requires-python obp==0.5.7
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

OBP_PYTHON = Path(__file__).resolve().parent / ".venv-obp" / "bin" / "python"
ECOMRL_ESTIMATORS = ("ipw", "snipw", "dm_bandit", "dr_bandit", "sndr")


# --------------------------------------------------------------------------- obp (its own venv)
def _obp_run(task: Path) -> dict[str, float]:
    """obp's estimates on one resample (runs under benchmarks/.venv-obp's Python)."""
    from obp.ope import (
        DirectMethod,
        DoublyRobust,
        DoublyRobustWithShrinkageTuning,
        InverseProbabilityWeighting,
        OffPolicyEvaluation,
        RegressionModel,
        SelfNormalizedDoublyRobust,
        SelfNormalizedInverseProbabilityWeighting,
        SwitchDoublyRobustTuning,
    )
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    z = np.load(task)
    x, a, r, p = z["context"], z["action"], z["reward"], z["propensity"]
    k = int(z["n_actions"])
    feedback = {
        "n_rounds": len(a),
        "n_actions": k,
        "action": a,
        "reward": r,
        "pscore": p,
        "context": x,
        "position": None,
    }
    lambdas = [10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, np.inf]
    estimators = [
        DirectMethod(),
        InverseProbabilityWeighting(),
        SelfNormalizedInverseProbabilityWeighting(),
        DoublyRobust(),
        SelfNormalizedDoublyRobust(),
        SwitchDoublyRobustTuning(lambdas=lambdas, estimator_name="switch-dr"),
        DoublyRobustWithShrinkageTuning(lambdas=lambdas, estimator_name="dr-os"),
    ]
    models = {
        "logistic": LogisticRegression(C=100, max_iter=10000),
        "hgb": HistGradientBoostingClassifier(random_state=0),
    }
    out: dict[str, float] = {}
    for model_name, base in models.items():
        reg = RegressionModel(n_actions=k, len_list=1, base_model=base, action_context=np.eye(k))
        q = reg.fit_predict(context=x, action=a, reward=r, n_folds=3, random_state=0)
        ope = OffPolicyEvaluation(bandit_feedback=feedback, ope_estimators=estimators)
        for cand in [c for c in z.files if c.startswith("cand_")]:
            values = ope.estimate_policy_values(
                action_dist=z[cand][:, :, None], estimated_rewards_by_reg_model=q
            )
            for est, v in values.items():
                out[f"{cand[5:]}|{est} ({model_name})"] = float(v)
    return out


def obp_worker(tasks: list[str], out: str) -> None:
    """Entry point under obp's venv: every task's estimates into one JSON file."""
    import warnings

    warnings.filterwarnings("ignore")
    results = {t: _obp_run(Path(t)) for t in tasks}
    Path(out).write_text(json.dumps(results), encoding="utf-8")


# --------------------------------------------------------------------------- ecomrl
def _ecomrl_run(task: Path) -> dict[str, float]:
    """ecomrl's estimates on one resample: the default model and the bandit estimators.

    The same objects ``evaluate_candidates`` uses (one reward model per dataset, shared by the
    candidates), without its intervals and verdicts (point estimates are what is compared).
    """
    from evaluation.config import DirectMethodConfig
    from evaluation.data import EpisodeData
    from evaluation.estimators import ESTIMATORS, FittedQEvaluation, OPEInput

    z = np.load(task)
    n = len(z["action"])
    data = EpisodeData.from_arrays(
        episode=np.arange(n),
        action=z["action"],
        reward=z["reward"],
        behaviour_propensity=z["propensity"],
        gamma=1.0,
        n_actions=int(z["n_actions"]),
        observation=z["context"].astype(np.float32),
    )
    fitter = FittedQEvaluation(DirectMethodConfig())
    out: dict[str, float] = {}
    for cand in [c for c in z.files if c.startswith("cand_")]:
        dist = z[cand]
        pred = fitter.predict(data, target_distribution=dist)
        inp = OPEInput(
            data, dist[np.arange(n), data.action], dist, q_logged=pred.q_logged, v_hat=pred.v_hat
        )
        for name in ECOMRL_ESTIMATORS:
            out[f"{cand[5:]}|{name}"] = ESTIMATORS[name]().estimate_policy_value(inp)
    return out


# --------------------------------------------------------------------------- the protocol
def _settings(items: int) -> list[dict[str, Any]]:
    from evaluation.testing.synthetic_bandit import BanditWorld

    world = BanditWorld.make(items, base=-4.0, seed=0)
    candidates = {
        "softmax_sharp": world.softmax(1.0, noise=0.3, seed=3),
        "eps_greedy": world.epsilon_greedy(0.2, noise=0.3, seed=4),
        "softmax_mild": world.softmax(0.3, noise=0.3, seed=5),
    }
    return [
        {
            "name": "uniform logging",
            "world": world,
            "logging": world.uniform(),
            "candidates": candidates,
        },
        {
            "name": "non-uniform logging",
            "world": world,
            "logging": world.softmax(0.5, noise=0.5, seed=1),
            "candidates": candidates,
        },
    ]


def _write_tasks(setting: dict[str, Any], rounds: int, n_boot: int, folder: Path) -> list[Path]:
    from evaluation.testing.synthetic_bandit import simulate_logs

    logs = simulate_logs(setting["world"], setting["logging"], rounds, seed=7)
    rng = np.random.default_rng(11)
    paths = []
    for b in range(n_boot):
        idx = rng.integers(0, rounds, size=rounds)
        x = logs.context[idx]
        path = folder / f"{setting['name'].replace(' ', '_')}_{b}.npz"
        np.savez(
            path,
            context=x,
            action=logs.action[idx],
            reward=logs.reward[idx],
            propensity=logs.propensity[idx],
            n_actions=setting["world"].n_actions,
            **{f"cand_{c}": pol(x) for c, pol in setting["candidates"].items()},
        )
        paths.append(path)
    return paths


def _relative_errors(
    estimates: dict[str, dict[str, float]], truth: dict[str, float]
) -> dict[str, tuple[float, float]]:
    """Per estimator: mean and sd over resamples and candidates of |V_hat - V| / V."""
    errors: dict[str, list[float]] = {}
    for per_task in estimates.values():
        for key, value in per_task.items():
            cand, est = key.split("|", 1)
            errors.setdefault(est, []).append(abs(value - truth[cand]) / truth[cand])
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in errors.items()}


def _table(title: str, rel: dict[str, tuple[float, float]]) -> list[str]:
    lines = [f"  {title}"]
    for est, (m, s) in sorted(rel.items(), key=lambda kv: kv[1][0]):
        lines.append(f"    {est:<28} {m:.4f}  (sd {s:.4f})")
    return lines


def run(rounds: int, items: int, n_boot: int) -> list[str]:
    lines = [f"{rounds} rounds, {items} items, {n_boot} bootstrap resamples; mean relative error"]
    with tempfile.TemporaryDirectory() as tmp:
        for setting in _settings(items):
            world = setting["world"]
            truth = {c: world.value(pol) for c, pol in setting["candidates"].items()}
            truth_text = ", ".join(f"{c} {v:.5f}" for c, v in truth.items())
            lines.append(
                f"{setting['name']}: true values {truth_text}; "
                f"logging {world.value(setting['logging']):.5f}"
            )
            tasks = _write_tasks(setting, rounds, n_boot, Path(tmp))
            out = Path(tmp) / "obp.json"
            subprocess.run(
                [
                    str(OBP_PYTHON),
                    "-m",
                    "benchmarks.obp_bandit",
                    "--obp-worker",
                    str(out),
                    *map(str, tasks),
                ],
                check=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
            obp = _relative_errors(json.loads(out.read_text(encoding="utf-8")), truth)
            ours = _relative_errors({str(t): _ecomrl_run(t) for t in tasks}, truth)
            lines += _table("obp", obp) + _table("ecomrl", ours)
            best_obp = min(obp.items(), key=lambda kv: kv[1][0])
            best_ours = min(ours.items(), key=lambda kv: kv[1][0])
            obp_dr = min(v[0] for k, v in obp.items() if k.startswith("dr ("))
            lines.append(
                f"  best: ecomrl {best_ours[0]} {best_ours[1][0]:.4f} vs obp {best_obp[0]} "
                f"{best_obp[1][0]:.4f}; DR: ecomrl {ours['dr_bandit'][0]:.4f} vs obp's best DR "
                f"{obp_dr:.4f}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10000)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--bootstrap", type=int, default=30)
    parser.add_argument("--obp-worker", nargs="+", metavar=("OUT", "TASK"))
    args = parser.parse_args(argv)
    if args.obp_worker:
        obp_worker(args.obp_worker[1:], args.obp_worker[0])
        return 0
    if not OBP_PYTHON.is_file():
        sys.stderr.write(f"obp's virtual environment is missing: {OBP_PYTHON} (see --help)\n")
        return 2
    sys.stdout.write("\n".join(run(args.rounds, args.items, args.bootstrap)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
