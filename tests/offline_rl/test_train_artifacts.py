"""Every agent trains, saves, reloads, predicts the same, exports, resumes; tampering is refused."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from offline_rl.artifacts import load_policy
from offline_rl.config import TrainConfig
from offline_rl.data import TransitionManifest, to_arrays
from offline_rl.errors import TrainingError
from offline_rl.train import latest_checkpoint, train, train_on_frame

SMALL = {"hidden_units": [32, 32], "batch_size": 32}
CONTINUOUS = ("cql", "bcq", "bc")


def _config(agent: str, n_steps: int, **extra: Any) -> TrainConfig:
    table = dict(SMALL)
    if agent == "bcq":
        table["n_action_samples"] = 10
    return TrainConfig.model_validate(
        {
            "agent": agent,
            "n_steps": n_steps,
            "checkpoint_every": max(n_steps // 2, 1),
            "log_every": 10,
            agent: table,
            **extra,
        }
    )


def _params(algo: Any) -> torch.Tensor:
    modules = algo.impl.modules.get_torch_modules()
    return torch.cat([p.detach().flatten() for m in modules.values() for p in m.parameters()])


def _learned(algo: Any) -> torch.Tensor:
    modules = algo.impl.modules.get_torch_modules()
    return torch.cat([p.detach().flatten() for name, m in modules.items()
                      if not name.startswith("targ") for p in m.parameters()])


@pytest.mark.parametrize(
    "agent", ["discrete_cql", "discrete_bcq", "discrete_bc", "cql", "bcq", "bc"]
)
def test_agent_trains_saves_reloads_and_exports(
    agent: str,
    tmp_path: Path,
    discrete_dir: Path,
    continuous_dir: Path,
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
    continuous_data: tuple[pl.DataFrame, TransitionManifest],
) -> None:
    continuous = agent in CONTINUOUS
    data_dir = continuous_dir if continuous else discrete_dir
    frame, manifest = continuous_data if continuous else discrete_data
    n_steps = 30 if continuous else 120
    result = train(data_dir, tmp_path / "out", _config(agent, n_steps), progress=False)
    assert result.n_steps == n_steps and result.algo.grad_step == n_steps
    assert result.artifact == tmp_path / "out" / agent
    names = {p.name for p in result.artifact.iterdir()}
    assert {
        "agent.json",
        "weights.safetensors",
        "model.pt",
        "policy.pt",
        "config.json",
        "scalers.json",
        "data.json",
        "metrics.json",
        "version.json",
        "SHA256SUMS",
    } <= names

    obs = np.asarray(frame["observation"].to_numpy(), dtype=np.float32)[:64]
    policy = load_policy(result.artifact)
    # continuous BCQ samples candidate actions from its VAE: same torch seed, same draws
    torch.manual_seed(0)
    before = result.algo.predict(obs)
    torch.manual_seed(0)
    after = policy.predict(obs)
    script = torch.jit.load(str(result.artifact / "policy.pt"))
    torch.manual_seed(0)
    with torch.no_grad():
        exported = script(torch.from_numpy(obs.copy())).numpy()
    if continuous:
        low, high = manifest.action_low[0], manifest.action_high[0]
        assert after.shape == (64,)
        assert np.all((after >= low) & (after <= high))
        np.testing.assert_allclose(after, np.clip(before.reshape(-1), low, high), rtol=0, atol=0)
        np.testing.assert_array_equal(exported.reshape(-1), before.reshape(-1))
    else:
        assert after.dtype == np.int64
        np.testing.assert_array_equal(after, before)
        np.testing.assert_array_equal(exported, before)
        probs = policy.action_probabilities(obs, epsilon=0.2)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        np.testing.assert_allclose(probs[np.arange(64), after], 0.8 + 0.2 / 4)
    assert policy.data["manifest_sha256"] == manifest.sha256 or policy.data["manifest_sha256"]
    assert policy.metrics["curves"][-1]["step"] == n_steps


def test_resume_restores_the_step_counter_and_continues_identically(
    tmp_path: Path, discrete_data: tuple[pl.DataFrame, TransitionManifest]
) -> None:
    frame, manifest = discrete_data
    # a constant rate, so that the resumed run may extend n_steps (25 -> 60)
    extra = {"discrete_cql": dict(SMALL, target_update_interval=7, lr_schedule="constant")}
    straight = train_on_frame(
        frame,
        manifest,
        tmp_path / "a",
        _config("discrete_cql", 60, **{k: v for k, v in extra.items()}),
        progress=False,
    )
    first = train_on_frame(
        frame, manifest, tmp_path / "b", _config("discrete_cql", 25, **extra), progress=False
    )
    assert latest_checkpoint(tmp_path / "b", "discrete_cql") is not None
    resumed = train_on_frame(
        frame,
        manifest,
        tmp_path / "b",
        _config("discrete_cql", 60, **extra),
        resume=True,
        progress=False,
    )
    assert first.n_steps == 25
    assert resumed.resumed_from == 25 and resumed.algo.grad_step == 60
    # same minibatches, same target syncs (step counter restored) -> same weights
    assert torch.equal(_params(straight.algo), _params(resumed.algo))
    steps = [p["step"] for p in resumed.algo and load_policy(resumed.artifact).metrics["curves"]]
    assert steps[-1] == 60


def test_resume_refuses_another_dataset(
    tmp_path: Path,
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
) -> None:
    frame, manifest = discrete_data
    train_on_frame(frame, manifest, tmp_path, _config("discrete_bc", 10), progress=False)
    with pytest.raises(TrainingError, match="another dataset"):
        train_on_frame(
            frame.head(200),
            manifest,
            tmp_path,
            _config("discrete_bc", 20),
            resume=True,
            progress=False,
        )


def test_stock_fit_trains_every_step(
    tmp_path: Path, discrete_data: tuple[pl.DataFrame, TransitionManifest]
) -> None:
    frame, manifest = discrete_data
    # 23 steps with checkpoints every 10: d3rlpy's fit() alone would round epochs
    config = _config("discrete_cql", 23, fast_loop=False)
    config = config.model_copy(update={"checkpoint_every": 10})
    result = train_on_frame(frame, manifest, tmp_path, config, progress=False)
    assert result.algo.grad_step == 23


class _Bomb:
    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(_Bomb.marker),))

    marker = ""


def test_tampered_artifact_is_refused_before_unpickling(
    tmp_path: Path, discrete_data: tuple[pl.DataFrame, TransitionManifest]
) -> None:
    frame, manifest = discrete_data
    result = train_on_frame(frame, manifest, tmp_path, _config("discrete_bc", 10), progress=False)
    folder = result.artifact
    load_policy(folder)  # intact: loads

    _Bomb.marker = str(tmp_path / "pwned")
    (folder / "weights.safetensors").write_bytes(pickle.dumps(_Bomb()))
    with pytest.raises(TrainingError, match="does not match its SHA-256"):
        load_policy(folder)
    assert not (tmp_path / "pwned").exists()


def test_extra_or_missing_files_are_refused(
    tmp_path: Path, discrete_data: tuple[pl.DataFrame, TransitionManifest]
) -> None:
    frame, manifest = discrete_data
    folder = train_on_frame(
        frame, manifest, tmp_path, _config("discrete_bc", 10), progress=False
    ).artifact
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(TrainingError, match="extra"):
        load_policy(folder)
    (folder / "extra.bin").unlink()
    (folder / "metrics.json").unlink()
    with pytest.raises(TrainingError, match="missing"):
        load_policy(folder)


def test_agent_must_match_the_action_space(
    tmp_path: Path, discrete_data: tuple[pl.DataFrame, TransitionManifest]
) -> None:
    frame, manifest = discrete_data
    with pytest.raises(TrainingError, match="continuous|discrete"):
        train_on_frame(frame, manifest, tmp_path, _config("cql", 5), progress=False)
    assert to_arrays(frame, manifest).discrete


@pytest.mark.parametrize("agent", ["discrete_cql", "cql"])
def test_onnx_export_matches_predict(
    agent: str,
    tmp_path: Path,
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
    continuous_data: tuple[pl.DataFrame, TransitionManifest],
) -> None:
    onnx = pytest.importorskip("onnx")  # not in the venv: the exporter is skipped there
    from onnx.reference import ReferenceEvaluator

    frame, manifest = continuous_data if agent == "cql" else discrete_data
    result = train_on_frame(frame, manifest, tmp_path, _config(agent, 10), progress=False)
    model = onnx.load(str(result.artifact / "policy.onnx"))
    onnx.checker.check_model(model)
    obs = np.asarray(frame["observation"].to_numpy(), dtype=np.float32)[:32]
    out = ReferenceEvaluator(model).run(None, {"observation": obs})[0]
    expected = result.algo.predict(obs)
    np.testing.assert_allclose(out.reshape(expected.shape), expected, rtol=0, atol=1e-6)
    assert load_policy(result.artifact).metrics["onnx_exported"] is True


def test_warm_start_loads_the_artifact_weights_and_refuses_a_mismatch(
    tmp_path: Path, discrete_data: tuple[pl.DataFrame, TransitionManifest]
) -> None:
    from offline_rl.train import build_algo, resolve_agent, warm_start

    frame, manifest = discrete_data
    config = _config("discrete_cql", 20)
    first = train_on_frame(frame, manifest, tmp_path / "a", config, progress=False)
    trained = _params(load_policy(first.artifact).algo)

    agent = resolve_agent(config, manifest)
    fresh = build_algo(agent, manifest, gamma=0.9, multiplier=1.0, device="cpu:0", n_steps=20)
    assert not torch.equal(_params(fresh), trained)
    warm_start(fresh, first.artifact, agent.name, manifest)
    assert torch.equal(_params(fresh), trained)

    # train_on_frame(init_from=...) starts from there: one step later its Q network is much
    # closer to the artifact's than a cold start's (the target network is synced at the first
    # update, so only the learned networks are compared)
    one = config.model_copy(update={"n_steps": 1})
    warm = train_on_frame(frame, manifest, tmp_path / "b", one, progress=False,
                          init_from=first.artifact)
    cold = train_on_frame(frame, manifest, tmp_path / "c", one, progress=False)
    reference = _learned(load_policy(first.artifact).algo)
    dist_warm = float((_learned(warm.algo) - reference).norm())
    dist_cold = float((_learned(cold.algo) - reference).norm())
    assert dist_warm < 0.5 * dist_cold

    with pytest.raises(TrainingError, match="not discrete_bc"):
        train_on_frame(frame, manifest, tmp_path / "d", _config("discrete_bc", 1),
                       progress=False, init_from=first.artifact)
    (first.artifact / "model.pt").write_bytes(b"tampered")
    with pytest.raises(TrainingError):
        warm_start(fresh, first.artifact, agent.name, manifest)


def test_cosine_schedule_anneals_to_zero_and_resumes_identically(
    tmp_path: Path, discrete_data: tuple[pl.DataFrame, TransitionManifest]
) -> None:
    frame, manifest = discrete_data
    table = dict(SMALL, target_update_interval=7, lr_schedule="cosine")
    config = _config("discrete_cql", 60, discrete_cql=table, checkpoint_every=25)
    straight = train_on_frame(frame, manifest, tmp_path / "a", config, progress=False)
    optim = straight.algo.impl.modules.optim.optim
    assert optim.param_groups[0]["lr"] < 1e-6 * 3e-4  # annealed to (about) zero at the end
    # the same run "killed" after its step-50 checkpoint, then resumed: the schedule continues
    train_on_frame(frame, manifest, tmp_path / "b", config, progress=False)
    last = latest_checkpoint(tmp_path / "b", "discrete_cql")
    assert last is not None and last.name.endswith("60")
    for path in (last, tmp_path / "b" / "discrete_cql"):
        for item in sorted(path.rglob("*"), reverse=True):
            item.rmdir() if item.is_dir() else item.unlink()
        path.rmdir()
    resumed = train_on_frame(frame, manifest, tmp_path / "b", config, resume=True, progress=False)
    assert resumed.resumed_from == 50
    assert torch.equal(_params(straight.algo), _params(resumed.algo))
    # a constant-rate run trains differently (the schedule acts)
    constant = _config("discrete_cql", 60, discrete_cql=dict(
        SMALL, target_update_interval=7, lr_schedule="constant"))
    plain = train_on_frame(frame, manifest, tmp_path / "c", constant, progress=False)
    assert not torch.equal(_params(straight.algo), _params(plain.algo))


def test_cosine_schedule_refuses_a_resume_with_another_length(
    tmp_path: Path, discrete_data: tuple[pl.DataFrame, TransitionManifest]
) -> None:
    frame, manifest = discrete_data
    table = dict(SMALL, lr_schedule="cosine")
    train_on_frame(frame, manifest, tmp_path, _config("discrete_bc", 20, discrete_bc=table),
                   progress=False)
    with pytest.raises(TrainingError, match="n_steps"):
        train_on_frame(frame, manifest, tmp_path, _config("discrete_bc", 40, discrete_bc=table),
                       resume=True, progress=False)
