"""EpisodeData from arrays / transitions frames / folders; candidate specs and tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from evaluation.candidates import (
    BehaviourPolicy,
    ConstantPolicy,
    ModelPolicy,
    TablePolicy,
    UniformPolicy,
    parse_policy_spec,
)
from evaluation.data import EpisodeData, load_transitions
from evaluation.errors import EvaluationError
from evaluation.weights import cumulative_weights


def _frame(shuffle: bool = False) -> pl.DataFrame:
    df = pl.DataFrame(
        {
            "episode_id": ["u2", "u1", "u1", "u1", "u2", "u3"],
            "step": [0, 0, 1, 2, 1, 0],
            "decision_id": ["d4", "d1", "d2", "d3", "d5", "d6"],
            "observation": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0.2, 0.1], [0.0, 0.0]],
            "action": [1, 0, 2, 1, 0, 3],
            "reward": [1.0, 2.0, 0.0, 4.0, 1.0, 8.0],
            "terminal": [False, False, False, True, False, True],
            "timeout": [False, False, False, False, True, False],
            "behaviour_propensity": [0.5, 0.25, 0.25, None, 0.5, 0.25],
            "propensity_source": ["logged", "logged", "logged", "missing", "logged", "logged"],
        },
        schema_overrides={
            "observation": pl.Array(pl.Float32, 2),
            "step": pl.Int32,
            "action": pl.Int32,
        },
    )
    return df.sample(fraction=1.0, shuffle=True, seed=1) if shuffle else df


def test_from_frame_sorts_and_indexes_variable_length_episodes() -> None:
    data = EpisodeData.from_frame(_frame(shuffle=True), gamma=0.5)
    assert data.n_episodes == 3 and data.n_decisions == 6
    assert list(data.episode_id) == ["u1", "u2", "u3"]  # type: ignore[arg-type]
    assert list(data.lengths) == [3, 2, 1]
    assert list(data.decision_id) == ["d1", "d2", "d3", "d4", "d5", "d6"]  # type: ignore[arg-type]
    assert data.observation is not None and data.observation.shape == (6, 2)
    # returns: u1 = 2 + 0.5 * 0 + 0.25 * 4, u2 = 1 + 0.5 * 1, u3 = 8
    assert np.allclose(data.returns, [3.0, 1.5, 8.0])
    assert np.isnan(data.behaviour_propensity[2])
    assert data.propensity_source is not None and data.propensity_source[2] == "missing"


def test_load_transitions_reads_the_etl_layout_and_manifest(tmp_path: Path) -> None:
    part = tmp_path / "transitions" / "date=2026-01-05"
    part.mkdir(parents=True)
    _frame().write_parquet(part / "part-00000.parquet")
    manifest = {"gamma": 0.8, "action_space": {"type": "discrete", "n": 4, "labels": list("abcd")}}
    (tmp_path / "_manifest.json").write_text(json.dumps(manifest))
    ds = load_transitions(tmp_path)
    data = ds.to_episode_data()
    assert data.gamma == 0.8 and data.action_space.n == 4
    assert data.action_space.labels == ("a", "b", "c", "d")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"step": [0, 0, 1, 1, 1, 0]}, "steps must increase"),
        ({"behaviour_propensity": [0.5, 0.0, 0.25, 0.2, 0.5, 0.25]}, "must be > 0"),
        ({"step": [1, 0, 1, 2, 2, 0]}, "does not start at step 0"),
    ],
)
def test_bad_transitions_raise_clear_errors(change: dict[str, list[float]], message: str) -> None:
    df = _frame().with_columns(
        [pl.Series(k, v, dtype=_frame().schema[k]) for k, v in change.items()]
    )
    with pytest.raises(EvaluationError, match=message):
        EpisodeData.from_frame(df.sort("episode_id", maintain_order=True))


def test_action_out_of_range_and_missing_columns() -> None:
    with pytest.raises(EvaluationError, match="out of range"):
        EpisodeData.from_arrays(
            episode=[0, 1], action=np.array([0, 5]), reward=[1.0, 1.0], n_actions=3
        )
    with pytest.raises(EvaluationError, match="required column"):
        EpisodeData.from_frame(_frame().drop("reward"))


def test_cumulative_weights_equal_per_episode_cumprod() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, size=300)
    episode = np.repeat(np.arange(300), lengths)
    data = EpisodeData.from_arrays(
        episode=episode,
        action=np.zeros(len(episode), int),
        reward=np.zeros(len(episode)),
        n_actions=1,
    )
    rho = rng.uniform(0, 2, size=len(episode))
    rho[rng.random(len(episode)) < 0.05] = 0.0
    w, w_prev = cumulative_weights(data, rho)
    for i in range(300):
        rows = np.flatnonzero(episode == i)
        expected = np.cumprod(rho[rows])
        assert np.allclose(w[rows], expected)
        assert np.allclose(w_prev[rows], np.r_[1.0, expected[:-1]])


def _data() -> EpisodeData:
    df = _frame().with_columns(pl.col("behaviour_propensity").fill_null(0.25))
    return EpisodeData.from_frame(df, gamma=0.9)


def test_rule_specs() -> None:
    data = _data()
    const = parse_policy_spec("rule:constant=2").probabilities(data)
    assert const.distribution is not None
    assert np.all(const.distribution[:, 2] == 1.0)
    assert np.array_equal(const.logged, (data.action == 2).astype(float))
    assert isinstance(parse_policy_spec("rule:behaviour"), BehaviourPolicy)
    assert isinstance(parse_policy_spec("rule:uniform"), UniformPolicy)
    b = BehaviourPolicy().probabilities(data)
    assert np.array_equal(b.logged, data.behaviour_propensity)
    with pytest.raises(EvaluationError, match="index 0..3"):
        ConstantPolicy(7).probabilities(data)
    with pytest.raises(EvaluationError, match="unknown kind"):
        parse_policy_spec("magic:thing")
    with pytest.raises(EvaluationError, match="unknown rule"):
        parse_policy_spec("rule:best")
    with pytest.raises(EvaluationError, match="not found"):
        parse_policy_spec("table:/nonexistent.parquet")


def test_constant_by_label_uses_the_manifest_labels(tmp_path: Path) -> None:
    part = tmp_path / "transitions" / "date=2026-01-05"
    part.mkdir(parents=True)
    _frame().with_columns(pl.col("behaviour_propensity").fill_null(0.25)).write_parquet(
        part / "p.parquet"
    )
    labels = ["none", "pct_5", "pct_10", "free_shipping"]
    (tmp_path / "_manifest.json").write_text(
        json.dumps({"action_space": {"type": "discrete", "n": 4, "labels": labels}})
    )
    data = load_transitions(tmp_path).to_episode_data()
    probs = parse_policy_spec("rule:constant=pct_10").probabilities(data)
    assert probs.distribution is not None and np.all(probs.distribution[:, 2] == 1.0)


def test_table_candidate_joins_on_decision_id_and_validates(tmp_path: Path) -> None:
    data = _data()
    ids = [f"d{i}" for i in range(1, 7)]
    rows = []
    for j, d in enumerate(ids):
        rows += [(d, j % 4, 0.7), (d, (j + 1) % 4, 0.3)]
    table = pl.DataFrame(rows, schema=["decision_id", "action", "probability"], orient="row")
    path = tmp_path / "t.parquet"
    table.sample(fraction=1.0, shuffle=True, seed=0).write_parquet(path)
    probs = parse_policy_spec(f"table:{path}").probabilities(data)
    assert probs.distribution is not None
    for row, d in enumerate(data.decision_id):  # type: ignore[arg-type]
        j = ids.index(d)
        assert probs.distribution[row, j % 4] == pytest.approx(0.7)
        assert probs.distribution[row, (j + 1) % 4] == pytest.approx(0.3)
    with pytest.raises(EvaluationError, match="no probabilities"):
        TablePolicy(table.filter(pl.col("decision_id") != "d3")).probabilities(data)
    bad = table.with_columns(pl.col("probability") * 2)
    with pytest.raises(EvaluationError, match="sum to 1"):
        TablePolicy(bad).probabilities(data)
    with pytest.raises(EvaluationError, match="lacks column"):
        TablePolicy(table.drop("probability"))


def test_model_policy_greedy_and_epsilon_soft() -> None:
    data = _data()

    class Greedy:
        def predict(self, obs: np.ndarray) -> np.ndarray:
            return (obs[:, 0] > 0.4).astype(np.int64)

    greedy = ModelPolicy(Greedy()).probabilities(data)
    assert greedy.distribution is not None
    assert np.allclose(greedy.distribution.sum(axis=1), 1.0)
    soft = ModelPolicy(Greedy(), epsilon=0.2).probabilities(data)
    assert soft.distribution is not None and soft.distribution.min() == pytest.approx(0.05)
    with pytest.raises(EvaluationError, match="predict"):
        ModelPolicy(object())


def test_artifact_spec_reports_a_missing_folder_as_a_user_error() -> None:
    with pytest.raises(EvaluationError, match="artifact"):
        parse_policy_spec("artifact:/nonexistent/policy")
