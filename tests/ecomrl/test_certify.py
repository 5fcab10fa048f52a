"""Certified candidates end to end on synthetic logs with a known reward: select, then test.

``offline_rl.testing.synthetic.make_transitions`` logs episodes whose reward is
``obs @ effects[action]`` plus small noise and whose states do not depend on the actions, so
the exact gain of any policy over the logging policy on the logged states is a plug-in sum
with the true ``q``, independent of every estimator.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ecomrl.certify import build_family, choose_certified, selection_data
from ecomrl.holdout import RunSplit, split_by_users
from evaluation.candidates import ModelPolicy
from evaluation.config import ApprovalConfig, EvaluateConfig
from evaluation.data import TransitionsDataset
from evaluation.evaluate import evaluate_candidates
from offline_rl.certified import CertifiedPolicy
from offline_rl.config import CertifyConfig
from offline_rl.data import TransitionManifest
from offline_rl.testing.synthetic import logging_weights, make_transitions, softmax

N_FEATURES, N_ACTIONS, SEED = 6, 4, 3
DAY = dt.date(2026, 2, 20)
EFFECTS = np.random.default_rng(SEED + 7).normal(0.0, 1.0, size=(N_ACTIONS, N_FEATURES))
EVALUATE = EvaluateConfig(bootstrap={"n_resamples": 200})  # type: ignore[arg-type]
CERTIFY = CertifyConfig(n_cells=8)


class KnownQAgent:
    """An agent whose critic is the true (or, with ``sign`` -1, the reversed) expected reward."""

    def __init__(self, sign: float = 1.0) -> None:
        self.sign = sign

    def _q(self, obs: np.ndarray) -> np.ndarray:
        return self.sign * np.asarray(obs, dtype=np.float64) @ EFFECTS.T

    def predict(self, observations: np.ndarray) -> np.ndarray:
        return np.asarray(self._q(observations).argmax(axis=1), dtype=np.int64)

    def predict_value(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        q = self._q(observations)
        return np.asarray(q[np.arange(len(q)), np.asarray(actions, dtype=np.int64)])


@pytest.fixture(scope="module")
def logs() -> tuple[pl.DataFrame, TransitionManifest]:
    return make_transitions(3000, n_features=N_FEATURES, n_actions=N_ACTIONS, seed=SEED,
                            n_days=40)


def _split(frame: pl.DataFrame) -> RunSplit:
    return split_by_users(frame, DAY, holdout_fraction=0.3, selection_fraction=0.3,
                          min_age_days=0, first_only=True)


def _select(split: RunSplit, manifest: TransitionManifest, agent: KnownQAgent,
            tmp: Path) -> tuple[list[CertifiedPolicy], object]:
    members = build_family(split.fit, manifest, agent, CERTIFY)
    data = selection_data(split.selection, manifest, tmp, EVALUATE)
    n_test = split.held_out["episode_id"].n_unique()
    result = choose_certified(members, data, n_test, EVALUATE, ApprovalConfig(), CERTIFY)
    return members, result


def _true_gain(policy: CertifiedPolicy, held_out: pl.DataFrame, gamma: float) -> float:
    """Exact expected gain on the held-out states (states do not depend on actions)."""
    obs = np.asarray(held_out["observation"].to_list(), dtype=np.float64)
    q = obs @ EFFECTS.T
    pi_b = softmax(obs @ logging_weights(N_FEATURES, N_ACTIONS, SEED))
    pi_e = policy.action_probabilities(obs.astype(np.float32))
    disc = gamma ** held_out["step"].to_numpy().astype(np.float64)
    per_row = disc * np.sum((pi_e - pi_b) * q, axis=1)
    return float(per_row.sum() / held_out["episode_id"].n_unique())


def test_a_real_gain_is_selected_certified_and_covered(
    logs: tuple[pl.DataFrame, TransitionManifest], tmp_path: Path
) -> None:
    frame, manifest = logs
    split = _split(frame)
    members, result = _select(split, manifest, KnownQAgent(), tmp_path)
    assert result.certifiable, result.to_dict()  # type: ignore[attr-defined]
    pick = members[result.pick]  # type: ignore[attr-defined,index]
    held = TransitionsDataset(frame=split.held_out, manifest=manifest.data, path=tmp_path)
    candidate = ModelPolicy(pick, name="candidate")
    evaluation = evaluate_candidates(
        held, [candidate], config=EVALUATE,
    )
    verdict = evaluation.candidate("candidate")
    assert verdict.verdict.approved, verdict.verdict.decided_by
    improvement = verdict.improvement
    assert improvement is not None
    truth = _true_gain(pick, split.held_out, evaluation.gamma)
    assert truth > 0
    assert improvement.ci_low <= truth <= improvement.ci_high


def test_poisoning_the_held_out_episodes_leaves_the_pick_unchanged(
    logs: tuple[pl.DataFrame, TransitionManifest], tmp_path: Path
) -> None:
    frame, manifest = logs
    split = _split(frame)
    held_ids = split.held_out["user_id"].unique()
    poisoned = frame.with_columns(
        pl.when(pl.col("user_id").is_in(held_ids.implode()))
        .then(pl.col("reward") * -50.0 + 1000.0)
        .otherwise(pl.col("reward"))
        .alias("reward")
    )
    psplit = _split(poisoned)
    assert not psplit.held_out["reward"].equals(split.held_out["reward"])
    _, clean = _select(split, manifest, KnownQAgent(), tmp_path)
    _, dirty = _select(psplit, manifest, KnownQAgent(), tmp_path)
    assert clean.to_dict() == dirty.to_dict()  # type: ignore[attr-defined]


def test_a_family_without_a_certifiable_member_is_rejected_for_that_reason(
    logs: tuple[pl.DataFrame, TransitionManifest], tmp_path: Path
) -> None:
    frame, manifest = logs
    split = _split(frame)
    members, result = _select(split, manifest, KnownQAgent(sign=-1.0), tmp_path)
    assert not result.certifiable  # type: ignore[attr-defined]
    note = result.note()  # type: ignore[attr-defined]
    assert note is not None and note.startswith("No member of the candidate family")
    pick = members[result.pick]  # type: ignore[attr-defined,index]
    held = TransitionsDataset(frame=split.held_out, manifest=manifest.data, path=tmp_path)
    evaluation = evaluate_candidates(
        held, [ModelPolicy(pick, name="candidate")], config=EVALUATE,
        selection_notes={"candidate": note},
    )
    verdict = evaluation.candidate("candidate").verdict
    assert not verdict.approved
    assert verdict.decided_by.startswith("Rejected: the candidate is not shown to beat")
    assert verdict.decided_by.endswith(note)
