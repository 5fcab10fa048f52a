"""Certified candidates: the behaviour model as plain arrays, the cells, the artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression

from offline_rl import artifacts
from offline_rl.certified import (
    CertifiedPolicy,
    CertifiedSpec,
    LinearBehaviour,
    StateCells,
    advantage_scale,
    family_specs,
    load_policy,
    tilt_policy,
)
from offline_rl.config import TrainConfig
from offline_rl.data import TransitionManifest
from offline_rl.errors import TrainingError
from offline_rl.train import train_on_frame


def _obs(frame: pl.DataFrame) -> np.ndarray:
    return np.asarray(frame["observation"].to_list(), dtype=np.float32)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_linear_behaviour_reproduces_sklearn(n_classes: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 5))
    y = rng.integers(0, n_classes, 500)
    model = LogisticRegression(C=1e4, max_iter=500).fit(x, y)
    behaviour = LinearBehaviour.from_sklearn(model, n_actions=4)
    expected = np.zeros((500, 4))
    expected[:, model.classes_] = model.predict_proba(x)
    np.testing.assert_allclose(behaviour.predict_proba(x), expected, atol=1e-10)
    again = LinearBehaviour.from_dict(behaviour.to_dict())
    np.testing.assert_array_equal(again.predict_proba(x), behaviour.predict_proba(x))


def test_cells_count_every_logged_decision_once() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(800, 3))
    a = rng.integers(0, 4, 800)
    cells = StateCells.fit(x, a, 4, n_cells=6)
    assert cells.counts.sum() == 800
    manual = np.zeros_like(cells.counts)
    np.add.at(manual, (cells.assign(x), a), 1.0)
    np.testing.assert_array_equal(manual, cells.counts)
    np.testing.assert_array_equal(cells.counts_for(x[:5]), cells.counts[cells.assign(x[:5])])


class _Agent:
    """Greedy on a fixed linear critic."""

    def __init__(self, weights: np.ndarray) -> None:
        self.w = weights

    def predict(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray((obs @ self.w).argmax(axis=1), dtype=np.int64)

    def predict_value(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        q = obs @ self.w
        return np.asarray(q[np.arange(len(q)), actions])


def _member(
    spec: CertifiedSpec, discrete_data: tuple[pl.DataFrame, TransitionManifest], agent: object
) -> CertifiedPolicy:
    frame, _ = discrete_data
    x, a = _obs(frame), frame["action"].to_numpy()
    model = LogisticRegression(C=1e4, max_iter=500).fit(x, a)
    cells = StateCells.fit(x, a, 4, n_cells=4)
    return CertifiedPolicy(spec, LinearBehaviour.from_sklearn(model, 4), agent, cells)


def test_members_span_behaviour_to_agent(
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
) -> None:
    agent = _Agent(np.random.default_rng(2).normal(size=(6, 4)))
    x = _obs(discrete_data[0])
    behaviour = _member(CertifiedSpec("behaviour"), discrete_data, agent)
    pi_b = behaviour.action_probabilities(x)
    for spec, expected in (
        (CertifiedSpec("mixture", 0.0), pi_b),
        (CertifiedSpec("mixture", 1.0), np.eye(4)[agent.predict(x)]),
        (CertifiedSpec("spibb", np.inf), pi_b),
        (CertifiedSpec("soft_spibb", 0.0), pi_b),
        (CertifiedSpec("tilt", 0.0), pi_b),
    ):
        probs = _member(spec, discrete_data, agent).action_probabilities(x)
        np.testing.assert_allclose(probs, expected, atol=1e-12, err_msg=spec.label)
    for spec in family_specs([0.3], [5.0], [0.1], 1.0, has_critic=True, tilts=[1.0]):
        probs = _member(spec, discrete_data, agent).action_probabilities(x)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    # sampling follows the probabilities
    member = _member(CertifiedSpec("mixture", 0.5), discrete_data, agent)
    obs = np.repeat(x[:1], 20_000, axis=0)
    freq = np.bincount(member.act(obs, np.random.default_rng(3)), minlength=4) / 20_000
    np.testing.assert_allclose(freq, member.action_probabilities(x[:1])[0], atol=0.015)


def test_tilt_moves_mass_by_advantage_and_keeps_a_bounded_ratio() -> None:
    rng = np.random.default_rng(4)
    q = rng.normal(size=(300, 4))
    behaviour = rng.dirichlet(np.ones(4), size=300)
    np.testing.assert_allclose(tilt_policy(q, behaviour, 0.0), behaviour, atol=1e-12)
    sharp = tilt_policy(q, behaviour, 200.0)
    np.testing.assert_array_equal(sharp.argmax(axis=1), q.argmax(axis=1))
    for eta in (0.5, 2.0):
        pi = tilt_policy(q, behaviour, eta)
        advantage = q - np.sum(behaviour * q, axis=1, keepdims=True)
        # first-order gain is never negative, and grows with eta
        assert np.all(np.sum((pi - behaviour) * advantage, axis=1) >= -1e-12)
        spread = advantage.max(axis=1) - advantage.min(axis=1)
        assert np.all(pi / behaviour <= np.exp(eta * spread)[:, None] + 1e-9)
    assert advantage_scale(np.ones((5, 4)), behaviour[:5]) == 1.0


def test_certified_artifact_round_trips_and_refuses_tampering(
    discrete_data: tuple[pl.DataFrame, TransitionManifest], tmp_path: Path
) -> None:
    frame, manifest = discrete_data
    config = TrainConfig.model_validate(
        {"agent": "discrete_cql", "n_steps": 20, "checkpoint_every": 20,
         "discrete_cql": {"hidden_units": [16], "batch_size": 16}}
    )
    trained = train_on_frame(frame, manifest, tmp_path / "train", config, progress=False)
    agent = load_policy(trained.artifact)
    member = _member(CertifiedSpec("tilt", 2.0), discrete_data, agent)
    folder = member.save(tmp_path / "certified", trained.artifact)
    loaded = load_policy(folder)
    assert isinstance(loaded, CertifiedPolicy)
    x = _obs(frame)
    np.testing.assert_array_equal(loaded.action_probabilities(x), member.action_probabilities(x))
    with pytest.raises(TrainingError, match="certified candidate"):
        artifacts.load_policy(folder)
    meta = folder / "certified.json"
    meta.write_text(meta.read_text().replace('"tilt"', '"mixture"'))
    with pytest.raises(TrainingError, match="tampered"):
        load_policy(folder)
