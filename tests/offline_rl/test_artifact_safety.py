"""Loading an artifact never runs code: agents round-trip through JSON + safetensors, planted
pickles (with their checksums recomputed, as an attacker would) are refused without running,
and with ``ECOMRL_ARTIFACT_KEY`` set only artifacts signed with that key load."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file

from ecomrl.cli import EXIT_USER_ERROR, main
from offline_rl.artifacts import load_policy, write_checksums
from offline_rl.certified import CertifiedPolicy, CertifiedSpec, LinearBehaviour
from offline_rl.certified import load_policy as load_any
from offline_rl.config import TrainConfig
from offline_rl.data import TransitionManifest
from offline_rl.errors import TrainingError
from offline_rl.safe_io import KEY_ENV, SIGNATURE_NAME, WEIGHTS_NAME
from offline_rl.train import TrainResult, build_algo, resolve_agent, train_on_frame, warm_start

CONTINUOUS = ("cql", "bcq", "bc")
CRITICS = ("discrete_cql", "discrete_bcq", "cql", "bcq")


def _config(agent: str, n_steps: int = 4) -> TrainConfig:
    table: dict[str, Any] = {"hidden_units": [16, 16], "batch_size": 16}
    if agent == "bcq":
        table["n_action_samples"] = 5
    return TrainConfig.model_validate(
        {"agent": agent, "n_steps": n_steps, "checkpoint_every": n_steps, agent: table}
    )


def _train(agent: str, data: tuple[pl.DataFrame, TransitionManifest], out: Path) -> TrainResult:
    frame, manifest = data
    return train_on_frame(frame, manifest, out, _config(agent), progress=False)


def _obs(frame: pl.DataFrame, n: int = 48) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.asarray(frame["observation"].to_numpy(), dtype=np.float32)[:n]


def _states(algo: Any) -> dict[str, torch.Tensor]:
    modules = algo.impl.modules.get_torch_modules()
    return {f"{n}.{k}": v for n, m in modules.items() for k, v in m.state_dict().items()}


class _Bomb:
    """Unpickling it creates ``marker``: proof that the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _bomb(marker: Path) -> bytes:
    payload = pickle.dumps(_Bomb(marker))
    pickle.loads(payload)  # control: unpickling the payload does create the marker
    assert marker.exists()
    marker.unlink()
    return payload


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("something tried to unpickle while loading an artifact")


def _forbid_unpickling(patch: pytest.MonkeyPatch) -> None:
    """Every route to an unpickler (``pickle``, ``torch.load``) fails loudly from now on."""
    for name in ("load", "loads", "Unpickler"):
        patch.setattr(pickle, name, _refuse)
    patch.setattr(torch, "load", _refuse)


@pytest.fixture(scope="module")
def bc_artifact(
    tmp_path_factory: pytest.TempPathFactory,
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
) -> Path:
    return _train("discrete_bc", discrete_data, tmp_path_factory.mktemp("bc")).artifact


@pytest.fixture
def artifact(bc_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of an unsigned discrete BC artifact (no key in the environment)."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    return Path(shutil.copytree(bc_artifact, tmp_path / "artifact"))


@pytest.mark.parametrize("agent", ["discrete_cql", "discrete_bcq", "discrete_bc", *CONTINUOUS])
def test_every_agent_round_trips_without_unpickling(
    agent: str,
    tmp_path: Path,
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
    continuous_data: tuple[pl.DataFrame, TransitionManifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    data = continuous_data if agent in CONTINUOUS else discrete_data
    result = _train(agent, data, tmp_path)
    names = {p.name for p in result.artifact.iterdir()}
    assert {"agent.json", WEIGHTS_NAME} <= names and "learnable.d3" not in names

    with monkeypatch.context() as patch:
        _forbid_unpickling(patch)
        policy = load_policy(result.artifact)

    before, after = _states(result.algo), _states(policy.algo)
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    obs = _obs(data[0])
    torch.manual_seed(0)  # continuous BCQ samples candidate actions from its VAE
    expected = result.algo.predict(obs)
    torch.manual_seed(0)
    got = policy.algo.predict(obs)
    np.testing.assert_array_equal(got, expected)
    if agent in CRITICS:
        actions: list[np.ndarray[Any, Any]]
        if agent in CONTINUOUS:
            actions = [np.asarray(expected, dtype=np.float32).reshape(len(obs), -1)]
        else:
            actions = [np.full(len(obs), k, dtype=np.int64) for k in range(4)]
        for act in actions:
            q = np.asarray(result.algo.predict_value(obs, act), dtype=np.float64)
            np.testing.assert_array_equal(policy.predict_value(obs, act), q)


def test_a_planted_legacy_pickle_is_refused_and_never_runs(artifact: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (artifact / "learnable.d3").write_bytes(_bomb(marker))
    write_checksums(artifact)  # the attacker recomputes the sums
    with pytest.raises(TrainingError, match=r"learnable\.d3.*Retrain"):
        load_policy(artifact)
    assert not marker.exists()


def test_a_pickle_in_place_of_the_weights_is_refused_and_never_runs(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    (artifact / WEIGHTS_NAME).write_bytes(_bomb(marker))
    write_checksums(artifact)
    _forbid_unpickling(monkeypatch)
    with pytest.raises(TrainingError, match="not a safetensors file"):
        load_policy(artifact)
    assert not marker.exists()


def test_a_pickled_model_pt_is_never_run_by_loading_or_warm_starting(
    artifact: Path,
    tmp_path: Path,
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
) -> None:
    marker = tmp_path / "pwned"
    with (artifact / "model.pt").open("wb") as f:
        torch.save({"q_funcs": _Bomb(marker)}, f)  # torch's own pickle container
    write_checksums(artifact)
    load_policy(artifact)  # serving never reads model.pt
    manifest = discrete_data[1]
    agent = resolve_agent(_config("discrete_bc"), manifest)
    fresh = build_algo(agent, manifest, gamma=0.9, multiplier=1.0, device="cpu:0", n_steps=4)
    with pytest.raises(TrainingError, match="not a plain tensor file"):
        warm_start(fresh, artifact, agent.name, manifest)
    assert not marker.exists()


def test_a_certified_folder_with_a_planted_agent_pickle_never_runs(
    artifact: Path, tmp_path: Path, discrete_data: tuple[pl.DataFrame, TransitionManifest]
) -> None:
    manifest = discrete_data[1]
    n_features = len(manifest.feature_names)
    behaviour = LinearBehaviour(
        np.zeros((4, n_features)), np.zeros(4), np.arange(4, dtype=np.int64), 4
    )
    member = CertifiedPolicy(CertifiedSpec("mixture", 0.5), behaviour, load_policy(artifact))
    folder = member.save(tmp_path / "certified", artifact)
    assert isinstance(load_any(folder), CertifiedPolicy)
    marker = tmp_path / "pwned"
    (folder / "agent" / "learnable.d3").write_bytes(_bomb(marker))
    write_checksums(folder / "agent")
    write_checksums(folder)
    with pytest.raises(TrainingError, match=r"learnable\.d3"):
        load_any(folder)
    assert not marker.exists()


def test_weights_that_do_not_fit_the_networks_are_refused(artifact: Path) -> None:
    tensors = load_file(str(artifact / WEIGHTS_NAME))
    key = next(iter(tensors))
    tensors[key] = torch.zeros(3)
    save_file(tensors, str(artifact / WEIGHTS_NAME))
    write_checksums(artifact)
    with pytest.raises(TrainingError, match="do not fit"):
        load_policy(artifact)


def test_an_agent_other_than_config_json_names_is_refused(artifact: Path) -> None:
    config = artifact / "config.json"
    config.write_text(config.read_text().replace('"discrete_bc"', '"discrete_cql"'))
    write_checksums(artifact)
    with pytest.raises(TrainingError, match="DiscreteBCConfig, its config.json says DiscreteCQL"):
        load_policy(artifact)


def test_signed_artifacts_load_and_tampered_or_unsigned_ones_are_refused(
    artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not (artifact / SIGNATURE_NAME).exists()
    load_policy(artifact)  # no key: unsigned artifacts load
    monkeypatch.setenv(KEY_ENV, "deployment-key")
    with pytest.raises(TrainingError, match="unsigned artifact, and ECOMRL_ARTIFACT_KEY is set"):
        load_policy(artifact)

    write_checksums(artifact)  # written with the key: signed
    signature = (artifact / SIGNATURE_NAME).read_bytes()
    load_policy(artifact)

    # someone without the key edits a file and recomputes SHA256SUMS; the signature stays
    scalers = artifact / "scalers.json"
    scalers.write_text(scalers.read_text().replace("reward_multiplier", "reward_multiplier "))
    monkeypatch.delenv(KEY_ENV)
    write_checksums(artifact)
    (artifact / SIGNATURE_NAME).write_bytes(signature)
    load_policy(artifact)  # the sums match: without a key this passes
    monkeypatch.setenv(KEY_ENV, "deployment-key")
    with pytest.raises(TrainingError, match="bad SIGNATURE"):
        load_policy(artifact)

    write_checksums(artifact)  # re-signed with the key
    load_policy(artifact)
    monkeypatch.setenv(KEY_ENV, "another-key")
    with pytest.raises(TrainingError, match="bad SIGNATURE"):
        load_policy(artifact)
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(TrainingError, match="ECOMRL_ARTIFACT_KEY is set but empty"):
        load_policy(artifact)


def test_training_with_a_key_signs_and_the_cli_refuses_unsigned_with_exit_2(
    artifact: Path,
    tmp_path: Path,
    discrete_dir: Path,
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(KEY_ENV, "deployment-key")
    signed = _train("discrete_bc", discrete_data, tmp_path / "signed").artifact
    assert (signed / SIGNATURE_NAME).is_file()
    load_policy(signed)

    args = ["evaluate", "--data", str(discrete_dir), "--out", str(tmp_path / "ope")]
    assert main([*args, "--policy", f"artifact:{artifact}"]) == EXIT_USER_ERROR
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("ecomrl: error:")
    assert "unsigned artifact" in errors[0] and str(artifact) in errors[0]
