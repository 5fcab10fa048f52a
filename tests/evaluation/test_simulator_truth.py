"""OPE on simulator logs through the ETL, against the simulator's true values (rollouts).

The simulator's world (catalogue, segments) is fixed by its seed: the logs and the truth
rollouts use the same seed, the truth with four times more users (a new population of the same
world). A slow test: one logged dataset, three candidates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

simulator_logs = pytest.importorskip("simulator.logs")
simulator_rollout = pytest.importorskip("simulator.rollout")
etl_pipeline = pytest.importorskip("etl.pipeline")

from evaluation.config import EvaluateConfig  # noqa: E402
from evaluation.evaluate import evaluate_candidates  # noqa: E402
from simulator.config import SimulatorConfig  # noqa: E402
from simulator.policies import logging_policy  # noqa: E402


@pytest.mark.slow
def test_estimates_on_simulated_logs_match_rollout_truth(tmp_path: Path) -> None:
    cfg = SimulatorConfig(n_users=2000, seed=3)
    logs = simulator_logs.simulate(cfg)
    simulator_logs.write_raw_logs(logs, tmp_path / "raw")
    etl_pipeline.run_etl(tmp_path / "raw", tmp_path / "etl")
    ecfg = EvaluateConfig(estimators=["pdis", "wpdis", "dr", "wdr", "dm"])
    ecfg.bootstrap.n_resamples = 200
    result = evaluate_candidates(
        tmp_path / "etl", ["rule:behaviour", "rule:constant=0", "rule:constant=3"], config=ecfg
    )
    # the logging policy's on-policy value IS the simulator's value on these very users
    same_users = simulator_rollout.rollout(logging_policy(cfg), cfg)
    assert result.behaviour.estimate == pytest.approx(same_users.value, rel=1e-9)

    def truth(policy: object) -> tuple[float, float]:
        r = simulator_rollout.rollout(policy, cfg, n_users=8000)
        return r.value, r.std_error

    checks = {"rule:behaviour": truth(logging_policy(cfg))}
    for k in (0, 3):
        probs = np.zeros(4)
        probs[k] = 1.0
        checks[f"rule:constant={k}"] = truth(probs)
    for name, (value, se_truth) in checks.items():
        cand = result.candidate(name)
        for est in ("pdis", "dr"):
            e = cand.estimate(est)
            tol = 4.0 * np.hypot(e.se, se_truth)
            assert abs(e.estimate - value) < tol, (name, est, e.estimate, value, tol)
