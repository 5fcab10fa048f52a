"""An artifact evaluated on data with other features or scaling is refused, differences named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.artifact_check import check_artifact_data, read_training_data
from evaluation.errors import EvaluationError

FEATURES = ["recency", "n_orders", "monetary"]
SCALING = {f: {"mean": float(i), "std": 1.0 + i} for i, f in enumerate(FEATURES)}


def _artifact(tmp_path: Path, scaling: dict[str, dict[str, float]]) -> dict[str, object]:
    manifest = tmp_path / "train_data" / "_manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"feature_names": FEATURES, "scaling": scaling}), "utf-8")
    folder = tmp_path / "artifact"
    folder.mkdir()
    data = {
        "feature_names": FEATURES,
        "manifest_path": str(manifest.parent),
        "action_space": {"type": "discrete", "n": 3},
    }
    (folder / "data.json").write_text(json.dumps(data), "utf-8")
    training = read_training_data(folder)
    assert training is not None
    return training


def test_same_manifest_passes(tmp_path: Path) -> None:
    training = _artifact(tmp_path, SCALING)
    check_artifact_data(
        "artifact:a",
        training,
        {
            "feature_names": FEATURES,
            "scaling": SCALING,
            "action_space": {"type": "discrete", "n": 3},
        },
    )


def test_other_features_are_named(tmp_path: Path) -> None:
    training = _artifact(tmp_path, SCALING)
    with pytest.raises(EvaluationError) as err:
        check_artifact_data("artifact:a", training, {"feature_names": ["recency", "n_views"]})
    text = str(err.value)
    assert "n_orders" in text and "monetary" in text and "n_views" in text


def test_other_order_and_scaling_are_named(tmp_path: Path) -> None:
    training = _artifact(tmp_path, SCALING)
    other = {**SCALING, "monetary": {"mean": 50.0, "std": 3.0}}
    with pytest.raises(EvaluationError, match=r"monetary mean 2 -> 50"):
        check_artifact_data("artifact:a", training, {"feature_names": FEATURES, "scaling": other})
    with pytest.raises(EvaluationError, match="another order"):
        check_artifact_data("artifact:a", training, {"feature_names": FEATURES[::-1]})


def test_evaluate_refuses_it_before_any_work(tmp_path: Path) -> None:
    import polars as pl

    from evaluation.candidates import ModelPolicy
    from evaluation.data import TransitionsDataset
    from evaluation.evaluate import evaluate_candidates

    class Greedy:
        def predict(self, obs: np.ndarray) -> np.ndarray:
            return np.zeros(len(obs), dtype=np.int64)

    candidate = ModelPolicy(Greedy(), name="artifact:a")
    candidate.training_data = _artifact(tmp_path, SCALING)
    frame = pl.DataFrame(
        {
            "episode_id": [1, 2],
            "step": [0, 0],
            "action": [0, 1],
            "reward": [1.0, 0.0],
            "behaviour_propensity": [0.5, 0.5],
        }
    )
    data = TransitionsDataset(frame, {"feature_names": ["recency"], "gamma": 0.9}, tmp_path)
    with pytest.raises(EvaluationError, match="absent from the data: n_orders, monetary"):
        evaluate_candidates(data, [candidate])


def test_scaling_recorded_in_the_artifact_is_checked_without_its_training_manifest(
    tmp_path: Path,
) -> None:
    training = _artifact(tmp_path, SCALING)
    (tmp_path / "train_data" / "_manifest.json").unlink()  # the training dataset is gone
    recorded = {**training, "scaling": SCALING}
    other = {**SCALING, "recency": {"mean": 9.0, "std": 1.0}}
    with pytest.raises(EvaluationError, match=r"recency mean 0 -> 9"):
        check_artifact_data("artifact:a", recorded, {"feature_names": FEATURES, "scaling": other})
    check_artifact_data("artifact:a", recorded, {"feature_names": FEATURES, "scaling": SCALING})
