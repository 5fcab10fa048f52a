"""A candidate's result never depends on the other candidates evaluated in the same call."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import polars as pl

from evaluation.candidates import BehaviourPolicy, ConstantPolicy, TablePolicy, UniformPolicy
from evaluation.config import EvaluateConfig
from evaluation.data import EpisodeData
from evaluation.evaluate import evaluate_candidates


def _sequential_logs(
    n_episodes: int = 300, k: int = 3, seed: int = 0
) -> tuple[EpisodeData, np.ndarray]:
    """Episodes of 3 decisions, a logging policy that depends on the state, propensities logged."""
    rng = np.random.default_rng(seed)
    n = n_episodes * 3
    obs = rng.normal(size=(n, 2))
    logits = np.column_stack([obs[:, 0], -obs[:, 0], 0.5 * obs[:, 1]])
    dist = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    action = (np.cumsum(dist, axis=1) < rng.random(n)[:, None]).sum(axis=1).clip(0, k - 1)
    reward = obs[:, 0] * (action == 0) + 0.5 * (action == 2) + rng.normal(0, 0.5, n)
    data = EpisodeData.from_arrays(
        episode=np.repeat(np.arange(n_episodes), 3),
        action=action,
        reward=reward,
        behaviour_propensity=dist[np.arange(n), action],
        gamma=0.9,
        n_actions=k,
        observation=obs.astype(np.float32),
        decision_id=np.array([f"d{i}" for i in range(n)]),
    )
    return data, dist


def _table(data: EpisodeData, dist: np.ndarray) -> pl.DataFrame:
    n, k = dist.shape
    assert data.decision_id is not None
    return pl.DataFrame(
        {
            "decision_id": np.repeat(data.decision_id, k),
            "action": np.tile(np.arange(k), n),
            "probability": dist.ravel(),
        }
    )


def _same(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


CONFIG = EvaluateConfig(bootstrap={"n_resamples": 60})


def test_each_candidate_alone_equals_all_together() -> None:
    data, dist = _sequential_logs()
    candidates = [
        ConstantPolicy(0),
        UniformPolicy(),
        TablePolicy(_table(data, dist), name="table:logging"),
        BehaviourPolicy(),
    ]
    together = evaluate_candidates(data, candidates, CONFIG)
    assert together.propensity["estimated"] is False
    assert "calibration" not in together.propensity  # no behaviour model was fitted
    for i, candidate in enumerate(candidates):
        alone = evaluate_candidates(data, [candidate], CONFIG)
        _same(asdict(alone.candidates[0]), asdict(together.candidates[i]), candidate.name)
        _same(asdict(alone.behaviour), asdict(together.behaviour))
        assert alone.propensity == together.propensity


def test_a_table_equal_to_the_logging_policy_is_reported_as_it() -> None:
    data, dist = _sequential_logs()
    result = evaluate_candidates(
        data, [TablePolicy(_table(data, dist), name="table:logging"), UniformPolicy()], CONFIG
    )
    same, other = result.candidates
    assert same.diagnostics["logging_policy"] is True
    assert other.diagnostics["logging_policy"] is False
    assert any("is the logging policy" in note for note in same.notes)
    on_policy = result.behaviour.estimate
    for name in ("is", "pdis", "wis", "wpdis", "dr", "wdr"):
        assert abs(same.estimate(name).estimate - on_policy) < 1e-9, name
    assert abs(same.improvement.estimate if same.improvement else 1.0) < 1e-9
