"""Policy artifacts: one folder per trained policy, hashed, verified before anything is loaded.

Layout of an artifact folder::

    agent.json          d3rlpy's config with the observation shape and action size (JSON): the
                        agent is rebuilt from it (``offline_rl.safe_io``)
    weights.safetensors the networks' weights (safetensors: no code in it, nothing unpickled)
    model.pt            d3rlpy's ``save_model()``: weights and optimizer states, read only to
                        warm-start training, with ``torch.load(weights_only=True)``
    policy.pt           TorchScript greedy policy (d3rlpy ``save_policy``): raw observation in,
                        unscaled action out (for serving elsewhere; ecomrl never loads it)
    policy.onnx         the same traced policy through the classic ONNX exporter (when it works)
    config.json         our resolved training config (agent, its d3rlpy fields, gamma, seed ...)
    scalers.json        action bounds (MinMaxActionScaler) and reward multiplier
    data.json           the data manifest's SHA-256, action space, feature names, rows used, split
    metrics.json        loss curves (means per ``log_every`` steps) and validation metrics
    version.json        ecomrl version, git commit when available, d3rlpy / torch versions
    SHA256SUMS          ``<sha256>  <file>`` for every other file (``sha256sum -c`` format)
    SIGNATURE           only with ``ECOMRL_ARTIFACT_KEY`` set: HMAC-SHA256 of ``SHA256SUMS``

``load_policy`` checks the signature (when a key is set) and ``SHA256SUMS`` against every file,
refuses an artifact with a missing, extra or changed file, then rebuilds the agent from JSON and
safetensors: loading an artifact never unpickles, so a planted file cannot run code. Folders of
earlier versions (``learnable.d3``, d3rlpy's pickle) are refused: retrain them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from numpy.typing import NDArray

from etl.manifest import ContinuousActionSpace, as_action_space
from offline_rl.errors import TrainingError
from offline_rl.safe_io import (
    LEGACY_NAME,
    SIGNATURE_NAME,
    load_agent,
    refuse_legacy,
    sign,
    verify_signature,
)

log = structlog.get_logger(__name__)

SUMS_NAME = "SHA256SUMS"
LEARNABLE_NAME = LEGACY_NAME
"""d3rlpy's pickled agent, the format of earlier versions: refused when loading."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hashed_files(folder: Path) -> list[Path]:
    """The files ``SHA256SUMS`` covers: all but the sums files and the folder's own signature."""
    own_signature = folder / SIGNATURE_NAME
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.name != SUMS_NAME and p != own_signature
    )


def write_checksums(folder: Path) -> None:
    """Write ``SHA256SUMS`` for every regular file of ``folder`` (recursively), and ``SIGNATURE``
    over it when ``ECOMRL_ARTIFACT_KEY`` is set."""
    lines = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}" for p in _hashed_files(folder)]
    (folder / SUMS_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    sign(folder, SUMS_NAME)


def verify_checksums(folder: Path) -> None:
    """Raise ``TrainingError`` unless every file matches ``SHA256SUMS`` and none is extra (and,
    with ``ECOMRL_ARTIFACT_KEY`` set, unless ``SIGNATURE`` is the key's HMAC of the sums)."""
    sums = folder / SUMS_NAME
    if not sums.is_file():
        raise TrainingError(f"{folder}: no {SUMS_NAME}; not an ecomrl artifact")
    verify_signature(folder, SUMS_NAME)
    expected: dict[str, str] = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        expected[name] = digest
    present = {p.relative_to(folder).as_posix() for p in _hashed_files(folder)}
    if present != set(expected):
        extra = sorted(present - set(expected))
        missing = sorted(set(expected) - present)
        raise TrainingError(
            f"{folder}: artifact files differ from {SUMS_NAME} (missing {missing}, extra {extra})"
        )
    for name, digest in expected.items():
        if sha256_file(folder / name) != digest:
            raise TrainingError(f"{folder}: {name} does not match its SHA-256: artifact tampered")


def code_version() -> dict[str, Any]:
    """Package version, git commit (when the code runs from a checkout) and library versions."""
    info: dict[str, Any] = {}
    for dist in ("ecomrl", "d3rlpy", "torch", "scikit-learn", "numpy", "polars"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", "utf-8")


def export_onnx(algo: Any, path: Path) -> bool:
    """Trace the greedy policy and export it with the classic (TorchScript) ONNX exporter.

    d3rlpy's ``save_policy('x.onnx')`` fails with torch 2.13 (the new exporter is the default and
    cannot take a traced function); the classic exporter (``dynamo=False``) can. Returns
    ``False`` (and logs why) when the exporter is unavailable, e.g. without the ``onnx`` package.
    """
    if importlib.util.find_spec("onnx") is None:
        log.info("onnx_export_skipped", reason="the onnx package is not installed")
        return False
    impl = algo.impl
    dummy = torch.rand(1, *impl.observation_shape, device=algo._device)
    cfg = algo.config

    def _policy(x: torch.Tensor) -> Any:
        if cfg.observation_scaler:
            x = cfg.observation_scaler.transform(x)
        action = impl.predict_best_action(x)
        if cfg.action_scaler:
            action = cfg.action_scaler.reverse_transform(action)
        return action

    impl.modules.freeze()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(_policy, dummy, check_trace=False)
            torch.onnx.export(
                traced,
                (dummy,),
                str(path),
                export_params=True,
                opset_version=17,
                input_names=["observation"],
                output_names=["action"],
                dynamic_axes={"observation": {0: "batch"}, "action": {0: "batch"}},
                dynamo=False,
            )
        return True
    except Exception as exc:  # the exporter's failures are many and not ours to type
        log.warning("onnx_export_failed", reason=f"{type(exc).__name__}: {exc}"[:300])
        if path.exists():
            path.unlink()
        return False
    finally:
        impl.modules.unfreeze()


class TrainedPolicy:
    """A trained policy loaded from a verified artifact.

    ``predict(observations)`` returns greedy actions: int64 action indices for a discrete action
    space, unscaled actions (discount rates) for a continuous one (shape ``(n,)`` when the action
    has one dimension, else ``(n, A)``), clipped to the manifest's bounds.
    """

    def __init__(self, folder: Path, algo: Any, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.algo = algo
        self.config: dict[str, Any] = meta["config"]
        self.data: dict[str, Any] = meta["data"]
        self.scalers: dict[str, Any] = meta["scalers"]
        self.metrics: dict[str, Any] = meta["metrics"]
        self.version: dict[str, Any] = meta["version"]
        self.action_space = as_action_space(self.data["action_space"])
        self.discrete = self.action_space.is_discrete
        self.n_actions = self.action_space.size
        self.agent: str = self.config["agent"]

    def __repr__(self) -> str:
        return f"TrainedPolicy(agent={self.agent!r}, folder={str(self.folder)!r})"

    def _obs(self, observations: Any) -> NDArray[np.float32]:
        obs = np.ascontiguousarray(observations, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != len(self.data["feature_names"]):
            raise TrainingError(
                f"observations must be (n, {len(self.data['feature_names'])}), got {obs.shape}"
            )
        return obs

    def predict(self, observations: Any) -> NDArray[Any]:
        obs = self._obs(observations)
        if obs.shape[0] == 0:
            empty: NDArray[Any] = (
                np.zeros(0, dtype=np.int64) if self.discrete else np.zeros(0, dtype=np.float64)
            )
            return empty
        actions = self.algo.predict(obs)
        if self.discrete:
            return np.asarray(actions, dtype=np.int64).reshape(-1)
        space = self.action_space
        if not isinstance(space, ContinuousActionSpace):  # discrete returned above
            raise TrainingError("unreachable: a discrete policy has no action bounds")
        clipped = np.clip(
            np.asarray(actions, dtype=np.float64),
            np.asarray(space.low, dtype=np.float64),
            np.asarray(space.high, dtype=np.float64),
        )
        return clipped.reshape(-1) if clipped.shape[1] == 1 else clipped

    def action_probabilities(self, observations: Any, epsilon: float = 0.0) -> NDArray[np.float64]:
        """(n, K) probabilities of the discrete policy: greedy one-hot, or epsilon-soft
        (``1 - epsilon + epsilon/K`` on the greedy action, ``epsilon/K`` elsewhere)."""
        if not self.discrete:
            raise TrainingError("action_probabilities is defined for discrete action spaces")
        if not 0.0 <= epsilon <= 1.0:
            raise TrainingError("epsilon must be in [0, 1]")
        greedy = self.predict(observations)
        probs = np.full((greedy.shape[0], self.n_actions), epsilon / self.n_actions)
        probs[np.arange(greedy.shape[0]), greedy] += 1.0 - epsilon
        return probs

    def predict_value(self, observations: Any, actions: Any) -> NDArray[np.float64]:
        """Q(s, a) of the trained critic, in the training reward units (``reward_scale`` applied:
        divide by ``scalers['reward_multiplier']`` for currency)."""
        obs = self._obs(observations)
        acts = np.asarray(actions)
        if self.discrete:
            acts = acts.astype(np.int64).reshape(-1)
        else:
            acts = acts.astype(np.float32).reshape(obs.shape[0], -1)
        return np.asarray(self.algo.predict_value(obs, acts), dtype=np.float64)


def load_policy(folder: Path | str, device: str = "cpu:0") -> TrainedPolicy:
    """Verify an artifact (signature, hashes), then rebuild its agent; see ``TrainedPolicy``.

    Raises ``TrainingError`` for a folder that is not an artifact, whose files do not match
    ``SHA256SUMS`` or its signature, or that holds an agent of the earlier pickled format.
    Nothing is ever unpickled (``offline_rl.safe_io``).
    """
    path = Path(folder)
    if not path.is_dir():
        raise TrainingError(f"policy artifact not found: {path}")
    if (path / "certified.json").is_file():
        raise TrainingError(
            f"{path} is a certified candidate around an agent: load it with "
            "offline_rl.load_policy (offline_rl.certified.load_policy)"
        )
    refuse_legacy(path)
    verify_checksums(path)
    meta: dict[str, Any] = {}
    for name in ("config", "data", "scalers", "metrics", "version"):
        meta[name] = json.loads((path / f"{name}.json").read_text(encoding="utf-8"))
    expected = _d3rlpy_config_name(path, meta["config"])
    algo = load_agent(path, device=device, expected_config=expected)
    _check_shapes(path, algo, meta["data"])
    return TrainedPolicy(path, algo, meta)


def _d3rlpy_config_name(path: Path, config: dict[str, Any]) -> str:
    """The d3rlpy config class of the artifact's agent (``config.json``'s ``agent``)."""
    from offline_rl.agents import AGENT_CONFIGS

    agent = AGENT_CONFIGS.get(str(config.get("agent")))
    if agent is None:
        raise TrainingError(f"{path / 'config.json'}: unknown agent {config.get('agent')!r}")
    return agent.d3rlpy_name


def _check_shapes(path: Path, algo: Any, data: dict[str, Any]) -> None:
    """The rebuilt agent must take the artifact's features and act in its action space."""
    actions = as_action_space(data["action_space"]).size
    shape = tuple(algo.impl.observation_shape)
    if shape != (len(data["feature_names"]),) or int(algo.impl.action_size) != actions:
        raise TrainingError(
            f"{path}: agent.json's shapes ({shape}, {algo.impl.action_size} actions) do not "
            f"match data.json ({len(data['feature_names'])} features, {actions} actions)"
        )
