"""The typed manifest (``etl.manifest.Manifest``) against every manifest the writers produce."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from etl import EtlConfig, StepImportConfig, build_transitions, import_steps
from etl.errors import EtlError
from etl.manifest import ContinuousActionSpace, DiscreteActionSpace, Manifest
from offline_rl.testing.synthetic import make_transitions
from simulator import SimulatorConfig, simulate


@pytest.mark.parametrize("space", ["discrete", "continuous"])
def test_etl_manifests_validate_and_round_trip(space: str) -> None:
    logs = simulate(SimulatorConfig(n_users=60, seed=3, action_space=space))  # type: ignore[arg-type]
    written = build_transitions(logs.events, logs.orders, EtlConfig()).manifest
    data = json.loads(json.dumps(written))  # as read back from the file
    manifest = Manifest.from_dict(data)
    assert manifest.to_dict() == data
    expected = DiscreteActionSpace if space == "discrete" else ContinuousActionSpace
    assert isinstance(manifest.action_space, expected)
    assert manifest.n_features == len(data["feature_names"]) == len(manifest.scaling)


def test_imported_and_synthetic_manifests_validate(tmp_path: Path) -> None:
    steps = pl.DataFrame(
        {
            "episode": [0, 0, 1],
            "step": [0, 1, 0],
            "observation": [[0.0], [1.0], [2.0]],
            "action": ["a", "b", "a"],
            "reward": [1.0, 0.0, 2.0],
            "terminal": [False, True, True],
        }
    )
    import_steps(steps, tmp_path / "d", StepImportConfig(date=dt.date(2026, 1, 1)))
    imported = Manifest.read(tmp_path / "d")
    assert imported.action_space == DiscreteActionSpace(n=2, labels=("a", "b"))
    _, synthetic = make_transitions(20, seed=0)
    assert (
        Manifest.from_dict(synthetic.data).action_space.size == synthetic.data["action_space"]["n"]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"action_space": {"type": "discrete", "n": 1}}, "needs 'n' >= 2"),
        ({"action_space": {"type": "discrete", "n": 3, "labels": ["a"]}}, "1 labels for n = 3"),
        ({"action_space": {"type": "continuous", "low": [1.0], "high": [0.5]}}, "must exceed"),
        ({"action_space": {"type": "box"}}, "action_space"),
        ({"feature_names": []}, "feature_names"),
        ({"gamma": 1.5}, "gamma"),
    ],
)
def test_a_wrong_key_is_named_with_how_to_regenerate(
    change: dict[str, object], message: str
) -> None:
    base = {"feature_names": ["f"], "action_space": {"type": "discrete", "n": 2}}
    with pytest.raises(EtlError, match=message) as info:
        Manifest.from_dict({**base, **change})
    assert "regenerate the dataset" in str(info.value)
