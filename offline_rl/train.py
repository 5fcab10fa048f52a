"""Training runs: agent choice, seeded fast loop, checkpoints, resume, the artifact.

``train(data_dir, out_dir, config)`` is what ``ecomrl train`` calls. Layout under ``out_dir``::

    <agent>/                 the policy artifact (see ``offline_rl.artifacts``)
    checkpoints/<agent>/step_00005000/{model.pt, state.json, rng.pt}

A checkpoint holds d3rlpy's ``save_model`` (weights *and* optimizer states), the step counter,
the minibatch sampler's and torch's random states and the loss curves so far. ``resume=True``
restores all of them, so the target-network sync schedule (``grad_step % interval``) continues
where it stopped and the resumed run draws the minibatches the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import structlog
import torch
from tqdm import tqdm

from etl.manifest import ContinuousActionSpace
from offline_rl.agents import AGENT_CONFIGS, AgentConfig
from offline_rl.artifacts import (
    code_version,
    export_onnx,
    write_checksums,
    write_json,
)
from offline_rl.config import TrainConfig
from offline_rl.data import (
    TransitionArrays,
    TransitionManifest,
    load_transitions,
    to_arrays,
    to_mdp_dataset,
    validate_transitions,
)
from offline_rl.errors import TrainingError
from offline_rl.fast_loop import (
    COMPILE_AUTO_MIN_STEPS,
    FastTrainer,
    compile_update,
    to_tensors,
)
from offline_rl.response import crossfit_expected_rewards
from offline_rl.safe_io import load_training_state, save_agent
from offline_rl.splits import split

log = structlog.get_logger(__name__)

EXPECTED_REWARD_FOLDS = 2
"""Folds of episodes of ``reward_source = "expected"``: each half predicted by the other's
response model (more folds fit more models for a little more data each)."""

CHECKPOINTS = "checkpoints"


@dataclasses.dataclass
class TrainResult:
    """What a training run produced."""

    artifact: Path
    agent: str
    n_steps: int
    final_losses: dict[str, float]
    validation: dict[str, float]
    updates_per_second: float
    resumed_from: int | None = None
    algo: Any = dataclasses.field(default=None, repr=False)
    """The trained d3rlpy algo, still in memory."""


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda:0`` when torch sees a GPU, else ``cpu:0``; others pass through."""
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu:0"
    if device == "cpu":
        return "cpu:0"
    if device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {device!r} requested but torch sees no CUDA device")
    return device


def resolve_agent(config: TrainConfig, manifest: TransitionManifest) -> AgentConfig:
    """The configured agent (``auto``: CQL of the dataset's action space), checked against it."""
    name = config.agent
    if name == "auto":
        name = "discrete_cql" if manifest.discrete else "cql"
    agent: AgentConfig = getattr(config, name)
    if type(agent) is not AGENT_CONFIGS[name]:  # pragma: no cover - config model guarantees it
        raise TrainingError(f"unknown agent {name}")
    if agent.discrete != manifest.discrete:
        kind = "discrete" if manifest.discrete else "continuous"
        other = "continuous" if manifest.discrete else "discrete"
        raise TrainingError(
            f"agent {name} is for {other} actions but the dataset's action space is {kind}"
        )
    return agent


def reward_multiplier(
    config: TrainConfig, arrays: TransitionArrays, agent: AgentConfig | None = None
) -> float:
    """The configured reward scale: a number, 1 / std (``"std"``) or 1 / max |reward| (``"max"``)
    of the training rewards, and for ``"auto"`` the one that suits ``agent``'s critic loss
    (``"max"`` for a Huber critic, else ``"std"``); 1.0 when the rewards are all 0."""
    scale = config.reward_scale
    if isinstance(scale, float | int):
        return float(scale)
    if scale == "auto":
        scale = "max" if agent is not None and agent.huber_critic else "std"
    rewards = arrays.rewards[arrays.transition_rows]
    if not len(rewards):
        return 1.0
    size = float(np.abs(rewards).max()) if scale == "max" else float(np.std(rewards))
    return 1.0 / size if size > 1e-12 else 1.0


def reward_source(config: TrainConfig, agent: AgentConfig) -> Literal["logged", "expected"]:
    """The reward ``agent`` trains on: ``logged`` or ``expected`` (``[train] reward_source``,
    ``auto`` resolved per agent; always ``logged`` for an agent without a Q-function)."""
    if not agent.learns_values:
        return "logged"
    if config.reward_source == "auto":
        return agent.auto_reward_source
    return config.reward_source


def warm_start(algo: Any, artifact: Path, agent: str, manifest: TransitionManifest) -> None:
    """Load the weights of ``artifact`` into ``algo`` (built for ``agent`` on ``manifest``).

    Refuses an artifact whose files fail their hashes, of another agent, or trained on other
    features: its weights would not mean the same thing. d3rlpy's ``load_model`` restores the
    optimizer states too, so training continues with the artifact's Adam moments and learning
    rate.
    """
    from offline_rl.artifacts import verify_checksums

    if not artifact.is_dir():
        raise TrainingError(f"warm start: artifact not found: {artifact}")
    verify_checksums(artifact)
    config = json.loads((artifact / "config.json").read_text(encoding="utf-8"))
    data = json.loads((artifact / "data.json").read_text(encoding="utf-8"))
    if config.get("agent") != agent:
        raise TrainingError(
            f"warm start: {artifact} is a {config.get('agent')} policy, not {agent}"
        )
    if data.get("feature_names") != manifest.feature_names:
        raise TrainingError(f"warm start: {artifact} was trained on other features")
    load_training_state(algo, artifact / "model.pt")
    log.info("warm_start", artifact=str(artifact))


def _wants_compile(config: TrainConfig, steps_left: int) -> bool:
    """Whether to compile the update on the CPU (see ``TrainConfig.compile``)."""
    if config.compile == "auto":
        return steps_left >= COMPILE_AUTO_MIN_STEPS
    return config.compile


def build_algo(
    agent: AgentConfig,
    manifest: TransitionManifest,
    *,
    gamma: float,
    multiplier: float,
    device: str,
    compile_graph: bool = False,
    n_steps: int | None = None,
) -> Any:
    """Create the d3rlpy algo with explicit scalers and build its networks (``create_impl``)."""
    from d3rlpy.preprocessing import MinMaxActionScaler, MultiplyRewardScaler

    action_scaler = None
    if not manifest.discrete:
        action_scaler = MinMaxActionScaler(
            minimum=manifest.action_low, maximum=manifest.action_high
        )
    reward_scaler = MultiplyRewardScaler(multiplier=multiplier)
    algo = agent.create(
        gamma=gamma,
        device=device,
        action_scaler=action_scaler,
        reward_scaler=reward_scaler,
        compile_graph=compile_graph,
        n_steps=n_steps,
    )
    algo.create_impl((manifest.n_features,), manifest.action_size)
    return algo


def validation_metrics(
    algo: Any,
    arrays: TransitionArrays,
    gamma: float,
    multiplier: float,
    limit: int = 5_000,
    *,
    learns_values: bool = True,
) -> dict[str, float]:
    """Cheap checks on held-out episodes (vectorised, at most ``limit`` transitions).

    ``action_match``: share of decisions where the greedy action is the logged one (discrete) or
    mean absolute gap to the logged action (continuous, ``action_mae``). For Q-learning agents:
    ``td_error`` (mean squared TD error with the greedy next action, d3rlpy's
    ``TDErrorEvaluator`` definition, scaled rewards) and ``initial_value`` (mean
    Q(s0, pi(s0)) over the episodes' first steps, in currency units); not for an agent without a
    Q-function (``learns_values`` False: behaviour cloning).
    """
    if arrays.n_rows == 0:
        return {}
    out: dict[str, float] = {}
    rows = arrays.transition_rows[:limit]
    obs = arrays.observations[rows]
    greedy = algo.predict(obs)
    if arrays.discrete:
        out["action_match"] = float(np.mean(greedy.reshape(-1) == arrays.actions[rows]))
    else:
        out["action_mae"] = float(np.mean(np.abs(greedy - arrays.actions[rows])))
    if not learns_values:
        return out
    nxt = arrays.next_rows[:limit]
    terminal = nxt < 0
    next_obs = arrays.observations[np.where(terminal, rows, nxt)]
    next_act = algo.predict(next_obs)
    q = algo.predict_value(obs, arrays.actions[rows]).reshape(-1)
    q_next = algo.predict_value(next_obs, next_act).reshape(-1)
    target = arrays.rewards[rows] * multiplier + gamma * np.where(terminal, 0.0, q_next)
    out["td_error"] = float(np.mean((q - target) ** 2))
    first = np.flatnonzero(arrays.steps == 0)[:limit]
    if first.size:
        s0 = arrays.observations[first]
        v0 = algo.predict_value(s0, algo.predict(s0)).reshape(-1)
        out["initial_value"] = float(np.mean(v0) / multiplier)
    return out


class _Curves:
    """Loss curves: the mean of each loss over every ``log_every`` steps."""

    def __init__(self, log_every: int, points: list[dict[str, float]] | None = None) -> None:
        self.log_every = log_every
        self.points: list[dict[str, float]] = points or []
        self._sums: dict[str, float] = {}
        self._count = 0

    def add(self, step: int, losses: dict[str, float]) -> None:
        for key, value in losses.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1
        if step % self.log_every == 0:
            self.flush(step)

    def flush(self, step: int) -> None:
        if self._count:
            point = {k: v / self._count for k, v in self._sums.items()}
            point["step"] = float(step)
            self.points.append(point)
        self._sums, self._count = {}, 0

    @property
    def last(self) -> dict[str, float]:
        return {k: v for k, v in self.points[-1].items() if k != "step"} if self.points else {}


def _checkpoint_dir(out: Path, agent: str) -> Path:
    return out / CHECKPOINTS / agent


def latest_checkpoint(out: Path, agent: str) -> Path | None:
    """The newest complete checkpoint of ``agent`` under ``out``, if any."""
    folder = _checkpoint_dir(out, agent)
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.glob("step_*") if (p / "state.json").is_file())
    return done[-1] if done else None


def _save_checkpoint(
    out: Path,
    agent: str,
    algo: Any,
    trainer: FastTrainer | None,
    curves: _Curves,
    fingerprint: dict[str, Any],
    keep: int = 2,
) -> Path:
    folder = _checkpoint_dir(out, agent)
    folder.mkdir(parents=True, exist_ok=True)
    step = int(algo.grad_step)
    final = folder / f"step_{step:09d}"
    tmp = folder / f".tmp_step_{step:09d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    algo.save_model(str(tmp / "model.pt"))
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if trainer is not None:
        rng["sampler"] = trainer.generator.get_state()
    torch.save(rng, tmp / "rng.pt")
    np_state: Any = np.random.get_state()
    state = {
        "step": step,
        "curves": curves.points,
        "fingerprint": fingerprint,
        "numpy_rng": [np_state[0], np.asarray(np_state[1]).tolist(), *np_state[2:]],
    }
    # state.json last: its presence marks the checkpoint complete
    write_json(tmp / "state.json", state)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(folder.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint_saved", step=step, path=str(final))
    return final


def _load_checkpoint(
    path: Path, algo: Any, trainer: FastTrainer | None, fingerprint: dict[str, Any]
) -> tuple[int, list[dict[str, float]]]:
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if state["fingerprint"] != fingerprint:
        diff = sorted(k for k in fingerprint if state["fingerprint"].get(k) != fingerprint[k])
        raise TrainingError(
            f"checkpoint {path} was made with another dataset or config (differs in {diff}); "
            "train without --resume or into another --out"
        )
    load_training_state(algo, path / "model.pt")
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if trainer is not None and "sampler" in rng:
        trainer.generator.set_state(rng["sampler"])
    np_rng = state["numpy_rng"]
    np.random.set_state((np_rng[0], np.asarray(np_rng[1], dtype=np.uint32), *np_rng[2:]))
    algo.set_grad_step(int(state["step"]))
    return int(state["step"]), list(state["curves"])


def _fingerprint(
    config: TrainConfig, agent: AgentConfig, manifest: TransitionManifest, n_rows: int
) -> dict[str, Any]:
    """What must be equal for a checkpoint to be resumed (not ``n_steps``: a run may extend,
    unless its learning rate is annealed over ``n_steps``)."""
    fingerprint: dict[str, Any] = {
        "agent": agent.name,
        "agent_config": agent.model_dump(),
        "seed": config.seed,
        "reward_scale": config.reward_scale,
        "reward_source": reward_source(config, agent),
        "gamma": config.gamma,
        "split": [config.split, config.valid_fraction],
        "fast_loop": config.fast_loop,
        "data_sha256": manifest.sha256,
        "n_rows": n_rows,
    }
    if agent.lr_schedule != "constant":  # the schedule's length is part of the optimizer state
        fingerprint["n_steps"] = config.n_steps
    return fingerprint


def train(
    data: Path | str,
    out: Path | str,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
) -> TrainResult:
    """Train on the ETL output folder ``data``; write the artifact under ``out``."""
    frame, manifest = load_transitions(data)
    return train_on_frame(frame, manifest, out, config, resume=resume, progress=progress)


def train_on_frame(
    frame: pl.DataFrame,
    manifest: TransitionManifest,
    out: Path | str,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    init_from: Path | str | None = None,
) -> TrainResult:
    """Train on an in-memory transitions frame and its manifest (sorted and validated here).

    ``init_from``: warm-start from the weights of a trained artifact (same agent, same
    features; its hashes are verified first). Ignored when resuming from a checkpoint.
    """
    config = config or TrainConfig()
    out = Path(out)
    frame = frame.sort(["episode_id", "step"], maintain_order=True)
    validate_transitions(frame, manifest)
    torch.set_num_threads(config.torch_threads)
    agent = resolve_agent(config, manifest)
    data = _training_data(frame, manifest, config, agent)
    run = _start_run(data, manifest, config, agent, out, resume=resume, init_from=init_from)
    began = time.perf_counter()
    if run.trainer is not None:
        _run_fast(run.trainer, run.algo, run.start, config, run.curves, out, agent,
                  data.fingerprint, progress)
    else:
        _run_stock(run.algo, data.train_arrays, run.start, config, run.curves, out, agent,
                   data.fingerprint)
    speed = (config.n_steps - run.start) / max(time.perf_counter() - began, 1e-9)
    validation = (
        validation_metrics(run.algo, data.valid_arrays, data.gamma, data.multiplier,
                           learns_values=agent.learns_values)
        if data.valid_arrays
        else {}
    )
    artifact = _write_trained(run, data, manifest, config, agent, out, validation)
    log.info("trained", artifact=str(artifact), updates_per_second=round(speed, 1), **validation)
    return TrainResult(
        artifact=artifact,
        agent=agent.name,
        n_steps=int(run.algo.grad_step),
        final_losses=run.curves.last,
        validation=validation,
        updates_per_second=speed,
        resumed_from=run.resumed_from,
        algo=run.algo,
    )


@dataclasses.dataclass(frozen=True)
class _TrainingData:
    """The split, the arrays the agent learns from and the numbers fixed before training."""

    train_frame: pl.DataFrame
    valid_frame: pl.DataFrame
    train_arrays: TransitionArrays
    valid_arrays: TransitionArrays | None
    reward_info: dict[str, Any]
    gamma: float
    multiplier: float
    fingerprint: dict[str, Any]


@dataclasses.dataclass
class _Run:
    """The agent being trained and where its training starts (0, or a checkpoint's step)."""

    algo: Any
    trainer: FastTrainer | None
    curves: _Curves
    start: int
    resumed_from: int | None


def _training_data(
    frame: pl.DataFrame, manifest: TransitionManifest, config: TrainConfig, agent: AgentConfig
) -> _TrainingData:
    gamma = config.gamma if config.gamma is not None else manifest.gamma
    train_frame, valid_frame = split(frame, config.split, config.valid_fraction, config.seed)
    reward_info: dict[str, Any] = {"source": "logged"}
    if reward_source(config, agent) == "expected":
        train_frame, reward_info = _expected_rewards(train_frame, manifest, config)
    train_arrays = to_arrays(train_frame, manifest)
    if train_arrays.n_transitions == 0:
        raise TrainingError("no training transitions (every episode is a one-step timeout?)")
    valid_arrays = to_arrays(valid_frame, manifest) if valid_frame.height else None
    return _TrainingData(
        train_frame, valid_frame, train_arrays, valid_arrays, reward_info, gamma,
        reward_multiplier(config, train_arrays, agent),
        _fingerprint(config, agent, manifest, frame.height),
    )


def _start_run(
    data: _TrainingData,
    manifest: TransitionManifest,
    config: TrainConfig,
    agent: AgentConfig,
    out: Path,
    *,
    resume: bool,
    init_from: Path | str | None,
) -> _Run:
    """Build the agent (warm-started, or resumed from the last checkpoint under ``out``)."""
    from offline_rl._quiet import import_d3rlpy  # torch-free imports of offline_rl stay light

    import_d3rlpy().seed(config.seed)
    device = resolve_device(config.device)
    on_cuda = device.startswith("cuda")
    algo = build_algo(
        agent, manifest, gamma=data.gamma, multiplier=data.multiplier, device=device,
        compile_graph=config.compile is True and on_cuda, n_steps=config.n_steps,
    )
    if init_from is not None and not resume:
        warm_start(algo, Path(init_from), agent.name, manifest)
    trainer = (
        FastTrainer(algo, to_tensors(data.train_arrays, algo, device), seed=config.seed)
        if config.fast_loop
        else None
    )
    run = _Run(algo, trainer, _Curves(config.log_every), 0, None)
    if resume:
        _resume(run, out, agent, config, data.fingerprint)
    if run.start > config.n_steps:
        raise TrainingError(
            f"the checkpoint is at step {run.start}, beyond n_steps={config.n_steps}"
        )
    compiled = False
    if _wants_compile(config, config.n_steps - run.start) and not on_cuda and trainer is not None:
        compiled = compile_update(algo)
    log.info(
        "training", agent=agent.name, device=device, steps=config.n_steps, start=run.start,
        transitions=data.train_arrays.n_transitions, episodes=data.train_arrays.n_episodes,
        valid_episodes=data.valid_arrays.n_episodes if data.valid_arrays else 0,
        gamma=data.gamma, reward_multiplier=data.multiplier, compiled=compiled,
    )
    return run


def _resume(
    run: _Run, out: Path, agent: AgentConfig, config: TrainConfig, fingerprint: dict[str, Any]
) -> None:
    ckpt = latest_checkpoint(out, agent.name)
    if ckpt is None:
        log.warning("resume_without_checkpoint_starting_fresh", out=str(out))
        return
    run.start, points = _load_checkpoint(ckpt, run.algo, run.trainer, fingerprint)
    run.curves = _Curves(config.log_every, points)
    run.resumed_from = run.start
    log.info("resumed", step=run.start, checkpoint=str(ckpt))


def _write_trained(
    run: _Run,
    data: _TrainingData,
    manifest: TransitionManifest,
    config: TrainConfig,
    agent: AgentConfig,
    out: Path,
    validation: dict[str, float],
) -> Path:
    behaviour = _behaviour_check(data.train_frame, data.valid_frame, manifest, config)
    return write_artifact(
        out / agent.name,
        run.algo,
        config=config,
        agent=agent,
        manifest=manifest,
        gamma=data.gamma,
        multiplier=data.multiplier,
        metrics={
            "curves": run.curves.points,
            "validation": validation,
            "train_transitions": data.train_arrays.n_transitions,
            "train_episodes": data.train_arrays.n_episodes,
            "valid_episodes": data.valid_arrays.n_episodes if data.valid_arrays else 0,
            "behaviour_check": behaviour,
            "reward_source": data.reward_info,
        },
        split_info={
            "split": config.split,
            "valid_fraction": config.valid_fraction,
            "train_rows": data.train_frame.height,
            "valid_rows": data.valid_frame.height,
        },
    )


def _expected_rewards(
    frame: pl.DataFrame, manifest: TransitionManifest, config: TrainConfig
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """``frame`` with its rewards replaced by the out-of-fold expected rewards, and what the
    artifact's metrics record of them (the spread before and after, the out-of-fold R^2)."""
    if frame.height == 0:  # nothing to fit; the caller refuses an empty training split
        return frame, {"source": "expected", "folds": EXPECTED_REWARD_FOLDS}
    began = time.perf_counter()
    logged = frame["reward"].to_numpy().astype(np.float64)
    expected = crossfit_expected_rewards(
        frame, manifest, config.response, n_folds=EXPECTED_REWARD_FOLDS, seed=config.seed
    )
    spread = float(np.var(logged))
    info: dict[str, Any] = {
        "source": "expected",
        "folds": EXPECTED_REWARD_FOLDS,
        "logged_mean": float(logged.mean()),
        "expected_mean": float(expected.mean()),
        "logged_std": float(np.sqrt(spread)),
        "expected_std": float(np.std(expected)),
        "expected_max_abs": float(np.abs(expected).max()),
        "out_of_fold_r2": (
            float(1.0 - np.mean((logged - expected) ** 2) / spread) if spread > 0 else 0.0
        ),
    }
    log.info("expected_rewards", seconds=round(time.perf_counter() - began, 1), **info)
    dtype = frame.schema["reward"]
    return frame.with_columns(pl.Series("reward", expected).cast(dtype)), info


def _behaviour_check(
    train_frame: pl.DataFrame,
    valid_frame: pl.DataFrame,
    manifest: TransitionManifest,
    config: TrainConfig,
) -> dict[str, float]:
    """The behaviour model beside the logged propensities (``metrics.json``); never fatal."""
    from offline_rl.behaviour import behaviour_report

    if not config.behaviour.check:
        return {}
    try:
        report = behaviour_report(train_frame, valid_frame, manifest, config.behaviour)
    except (ValueError, TrainingError) as exc:
        log.warning("behaviour_check_skipped", reason=str(exc)[:200])
        return {}
    if report:
        log.info("behaviour_check", **{k: round(v, 4) for k, v in report.items()})
    return report


def _run_fast(
    trainer: FastTrainer,
    algo: Any,
    start: int,
    config: TrainConfig,
    curves: _Curves,
    out: Path,
    agent: AgentConfig,
    fingerprint: dict[str, Any],
    progress: bool | None,
) -> None:
    bar = tqdm(
        total=config.n_steps,
        initial=start,
        desc=f"train {agent.name}",
        disable=(not progress) if progress is not None else None,
        mininterval=1.0,
    )
    with bar:
        for step in range(start + 1, config.n_steps + 1):
            curves.add(step, trainer.step())
            if step % config.checkpoint_every == 0 and step < config.n_steps:
                curves.flush(step)  # so that a resumed run has the same curve points
                _save_checkpoint(out, agent.name, algo, trainer, curves, fingerprint)
            if step % 100 == 0:
                bar.update(100)
        bar.update(config.n_steps - bar.n)
    curves.flush(config.n_steps)
    _save_checkpoint(out, agent.name, algo, trainer, curves, fingerprint)


def _run_stock(
    algo: Any,
    arrays: TransitionArrays,
    start: int,
    config: TrainConfig,
    curves: _Curves,
    out: Path,
    agent: AgentConfig,
    fingerprint: dict[str, Any],
) -> None:
    """d3rlpy's own ``fit()``, in chunks of ``checkpoint_every`` steps (each chunk one epoch, so
    no step is lost to d3rlpy's epoch rounding)."""
    from d3rlpy.logging import NoopAdapterFactory

    dataset = to_mdp_dataset(arrays)
    step = start
    while step < config.n_steps:
        chunk = min(config.checkpoint_every - step % config.checkpoint_every, config.n_steps - step)
        results = algo.fit(
            dataset,
            n_steps=chunk,
            n_steps_per_epoch=chunk,
            logger_adapter=NoopAdapterFactory(),
            show_progress=False,
            save_interval=10**9,
        )
        step += chunk
        for _, metrics in results:
            point = {k: float(v) for k, v in metrics.items() if not k.startswith("time_")}
            point["step"] = float(step)
            curves.points.append(point)
        _save_checkpoint(out, agent.name, algo, None, curves, fingerprint)
    if int(algo.grad_step) != config.n_steps:  # pragma: no cover - guards d3rlpy's rounding
        raise TrainingError(f"d3rlpy trained {algo.grad_step} steps, expected {config.n_steps}")


def write_artifact(
    folder: Path,
    algo: Any,
    *,
    config: TrainConfig,
    agent: AgentConfig,
    manifest: TransitionManifest,
    gamma: float,
    multiplier: float,
    metrics: dict[str, Any],
    split_info: dict[str, Any],
) -> Path:
    """Write the artifact folder (built beside it, then swapped in) and its ``SHA256SUMS``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_agent(algo, tmp)
    algo.save_model(str(tmp / "model.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # d3rlpy's scalers trip the tracer's shape warnings
        algo.save_policy(str(tmp / "policy.pt"))
    onnx = bool(config.onnx) and export_onnx(algo, tmp / "policy.onnx")
    resolved = config.model_dump(mode="json")
    for name in AGENT_CONFIGS:
        resolved.pop(name, None)
    resolved.update(agent=agent.name, agent_config=agent.model_dump(mode="json"), gamma=gamma)
    write_json(tmp / "config.json", resolved)
    space = manifest.action_space
    write_json(
        tmp / "scalers.json",
        {
            "observation": None,
            "action": (
                {"type": "min_max", "minimum": list(space.low), "maximum": list(space.high)}
                if isinstance(space, ContinuousActionSpace)
                else None
            ),
            "reward_multiplier": multiplier,
        },
    )
    write_json(
        tmp / "data.json",
        {
            "manifest_sha256": manifest.sha256,
            "manifest_path": str(manifest.path) if manifest.path else None,
            "action_space": manifest.action_space.model_dump(mode="json", exclude_unset=True),
            "feature_names": manifest.feature_names,
            "scaling": {n: f.model_dump() for n, f in manifest.spec.scaling.items()},
            "scenario": manifest.data.get("scenario"),
            "gamma": manifest.gamma,
            **split_info,
        },
    )
    write_json(tmp / "metrics.json", {**metrics, "onnx_exported": onnx})
    write_json(tmp / "version.json", code_version())
    write_checksums(tmp)
    if folder.exists():
        old = folder.parent / f".{folder.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(folder)
    return folder
