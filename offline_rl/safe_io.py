"""Agent files that cannot run code when loaded, and the optional HMAC signature of an artifact.

d3rlpy's own ``save()`` / ``load_learnable`` pickle the agent, and unpickling a file can run any
code its author chose: SHA-256 sums kept beside the file stop accidents, not someone who can
write the folder (they recompute the sums). An artifact therefore stores the agent as

* ``agent.json``: d3rlpy's config with the shapes (``LearnableConfigWithShape``, JSON), the
  d3rlpy version and our format tag; loading rebuilds the networks from it (``create``);
* ``weights.safetensors``: the state of every network (parameters and buffers), one tensor per
  ``<module>.<parameter>`` key, in the safetensors format (a JSON header and raw little-endian
  numbers: there is no code in it to run); loading copies them into the rebuilt networks.

Nothing is unpickled on the way. ``model.pt`` (d3rlpy's weights *and* optimizer states, used
only to warm-start training) is read with ``torch.load(weights_only=True)``, which refuses
anything but tensors and plain containers (``load_training_state``).

Signature: with ``ECOMRL_ARTIFACT_KEY`` set, every artifact written gets ``SIGNATURE``, an
HMAC-SHA256 of its ``SHA256SUMS`` under that key (the sums cover every other file), and loading
refuses an artifact without a valid one, so a deployment loads only artifacts written with its
key. Without the variable, signatures are neither written nor checked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
from pathlib import Path
from typing import Any

import structlog
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from offline_rl._quiet import import_d3rlpy
from offline_rl.errors import TrainingError

log = structlog.get_logger(__name__)

AGENT_NAME = "agent.json"
WEIGHTS_NAME = "weights.safetensors"
SIGNATURE_NAME = "SIGNATURE"
LEGACY_NAME = "learnable.d3"
KEY_ENV = "ECOMRL_ARTIFACT_KEY"
AGENT_FORMAT = "ecomrl-agent/1"
_SIGNATURE_SCHEME = "hmac-sha256"


# --- the agent: config as JSON, weights as safetensors -----------------------------------------


def _torch_modules(algo: Any) -> dict[str, torch.nn.Module]:
    """The agent's networks by d3rlpy's module name (optimizers left out)."""
    if algo.impl is None:
        raise TrainingError("the agent has no networks yet (build it before saving)")
    modules = algo.impl.modules.create_checkpointer(algo.impl.device).modules
    return {name: m for name, m in modules.items() if isinstance(m, torch.nn.Module)}


def save_agent(algo: Any, folder: Path) -> None:
    """Write ``agent.json`` and ``weights.safetensors`` of a built d3rlpy agent into ``folder``."""
    d3rlpy = import_d3rlpy()
    from d3rlpy.base import LearnableConfigWithShape

    modules = _torch_modules(algo)
    shaped = LearnableConfigWithShape(
        observation_shape=algo.impl.observation_shape,
        action_size=algo.impl.action_size,
        config=algo.config,
    )
    document = {
        "format": AGENT_FORMAT,
        "d3rlpy_version": d3rlpy.__version__,
        "algorithm": type(algo).__name__,
        "learnable": json.loads(shaped.serialize()),
    }
    (folder / AGENT_NAME).write_text(
        json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    # clones: safetensors refuses tensors that share memory (DiscreteBCQ's imitator shares the
    # Q-network's encoder); loading copies each into the rebuilt network, sharing restored
    tensors = {
        f"{name}.{key}": value.detach().to("cpu").contiguous().clone()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": AGENT_FORMAT})


def _read_agent_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{path}: unreadable agent description ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != AGENT_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise TrainingError(f"{path}: format {found!r} is not {AGENT_FORMAT!r}")
    return document


def _rebuild(document: dict[str, Any], path: Path, device: str, expected: str | None) -> Any:
    """The d3rlpy agent described by ``agent.json``, networks built, weights untrained."""
    d3rlpy_version = import_d3rlpy().__version__
    from d3rlpy.base import LearnableConfigWithShape

    if document.get("d3rlpy_version") != d3rlpy_version:
        log.warning(
            "artifact_d3rlpy_version_differs",
            artifact=str(path),
            saved=document.get("d3rlpy_version"),
            installed=d3rlpy_version,
        )
    try:
        shaped = LearnableConfigWithShape.deserialize_from_dict(document["learnable"])
    except (KeyError, TypeError, ValueError, AttributeError, AssertionError) as exc:
        raise TrainingError(f"{path}: not a d3rlpy config ({type(exc).__name__}: {exc})") from exc
    config_class = type(shaped.config).__name__
    if expected is not None and config_class != expected:
        raise TrainingError(
            f"{path}: the agent is a {config_class}, its config.json says {expected}"
        )
    return shaped.create(device=device)


def _load_weights(algo: Any, path: Path) -> None:
    """Copy ``weights.safetensors`` into the rebuilt networks; every key must match exactly."""
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise TrainingError(f"{path}: not a safetensors file ({exc})") from exc
    modules = _torch_modules(algo)
    grouped: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}
    for key, tensor in tensors.items():
        name, _, param = key.partition(".")
        if name not in grouped:
            raise TrainingError(f"{path}: tensor {key!r} belongs to no network of the agent")
        grouped[name][param] = tensor
    for name, module in modules.items():
        try:
            module.load_state_dict(grouped[name], strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise TrainingError(f"{path}: weights do not fit network {name!r} ({first})") from exc


def load_agent(folder: Path, device: str = "cpu:0", expected_config: str | None = None) -> Any:
    """The d3rlpy agent of an artifact folder (already verified), rebuilt from JSON, no pickle.

    ``expected_config``: the d3rlpy config class the artifact's ``config.json`` names
    (e.g. ``DiscreteCQLConfig``); another one in ``agent.json`` is refused.
    """
    document = _read_agent_document(folder / AGENT_NAME)
    algo = _rebuild(document, folder / AGENT_NAME, device, expected_config)
    _load_weights(algo, folder / WEIGHTS_NAME)
    return algo


def load_training_state(algo: Any, path: Path) -> None:
    """Load d3rlpy's ``save_model`` file (weights and optimizer states) without running code.

    d3rlpy's ``load_model`` relies on torch's default for ``weights_only``, which an environment
    variable can turn off; this reads the file with ``weights_only=True`` whatever the setting.
    """
    import_d3rlpy()
    from d3rlpy.torch_utility import map_location

    if algo.impl is None:
        raise TrainingError("the agent has no networks yet (build it before loading weights)")
    try:
        state = torch.load(path, map_location=map_location(algo.impl.device), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainingError(f"{path}: refused: not a plain tensor file ({first})") from exc
    checkpointer = algo.impl.modules.create_checkpointer(algo.impl.device)
    if not isinstance(state, dict) or set(state) != set(checkpointer.modules):
        raise TrainingError(f"{path}: its networks are not the agent's")
    for name, part in checkpointer.modules.items():
        try:
            part.load_state_dict(state[name])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise TrainingError(f"{path}: state does not fit {name!r} ({exc})") from exc


def refuse_legacy(folder: Path) -> None:
    """Refuse a folder holding ``learnable.d3`` (d3rlpy's pickle), whatever its checksums say."""
    if (folder / LEGACY_NAME).exists():
        raise TrainingError(
            f"{folder}: holds {LEGACY_NAME}, a pickled d3rlpy agent (the artifact format of "
            "earlier ecomrl versions); unpickling can run code, so it is not loaded. Retrain the "
            "policy (ecomrl train, or ecomrl run) to write it as agent.json + weights.safetensors"
        )


# --- the signature: HMAC-SHA256 of SHA256SUMS ---------------------------------------------------


def artifact_key() -> bytes | None:
    """The signing key from ``ECOMRL_ARTIFACT_KEY`` (``None`` when unset; empty is an error)."""
    value = os.environ.get(KEY_ENV)
    if value is None:
        return None
    if not value:
        raise TrainingError(
            f"{KEY_ENV} is set but empty: set it to the deployment's key, or unset it to load "
            "and write unsigned artifacts"
        )
    return value.encode("utf-8")


def _mac(key: bytes, sums: bytes) -> str:
    return hmac.new(key, sums, hashlib.sha256).hexdigest()


def sign(folder: Path, sums_name: str) -> None:
    """Write ``SIGNATURE`` over ``folder/sums_name`` when a key is set (else drop a stale one)."""
    key = artifact_key()
    target = folder / SIGNATURE_NAME
    if key is None:
        target.unlink(missing_ok=True)
        return
    mac = _mac(key, (folder / sums_name).read_bytes())
    target.write_text(f"{_SIGNATURE_SCHEME} {mac}\n", encoding="utf-8")


def verify_signature(folder: Path, sums_name: str) -> None:
    """With a key set: refuse ``folder`` unless ``SIGNATURE`` is the HMAC of its sums file."""
    key = artifact_key()
    if key is None:
        return
    target = folder / SIGNATURE_NAME
    if not target.is_file():
        raise TrainingError(
            f"{folder}: unsigned artifact, and {KEY_ENV} is set: only artifacts written with the "
            "deployment's key are loaded (retrain it with the key set, or unset the key)"
        )
    scheme, _, mac = target.read_text(encoding="utf-8", errors="replace").strip().partition(" ")
    expected = _mac(key, (folder / sums_name).read_bytes())
    if scheme != _SIGNATURE_SCHEME or not hmac.compare_digest(mac.encode(), expected.encode()):
        raise TrainingError(
            f"{folder}: bad {SIGNATURE_NAME}: the artifact was changed or signed with another key "
            f"than {KEY_ENV}"
        )
