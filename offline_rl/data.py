"""Reading the ETL's transitions and turning them into arrays and d3rlpy datasets.

The transitions contract (``docs/architecture.md``): one row per decision, sorted by
``(episode_id, step)``, the next observation of a row is the next row of the same episode,
``terminal`` (the user churned) and ``timeout`` (cut by the horizon or the data's end) never both
true. Beside the Parquet files, ``_manifest.json`` gives the action space, ``gamma`` and the
feature names.

The timeout convention, shared with d3rlpy and with OPE: the last step of an episode that ends
by **timeout** has no next observation, so it is *not* a training transition (d3rlpy drops it;
a one-step timeout episode therefore contributes no transition at all and is counted in the
log). The last step of a **terminal** episode is a transition whose next observation is zeros
and whose bootstrap is masked. An episode whose last row carries neither flag (a contract
breach) is treated as a timeout and counted.

Everything here is vectorised (polars expressions, numpy): no Python loop over rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import structlog
from numpy.typing import NDArray

from etl.errors import EtlError
from etl.manifest import MANIFEST_NAME, ContinuousActionSpace, DiscreteActionSpace, Manifest
from offline_rl.errors import TrainingError

log = structlog.get_logger(__name__)

REQUIRED_COLUMNS = (
    "episode_id",
    "step",
    "observation",
    "action",
    "reward",
    "terminal",
    "timeout",
)


@dataclasses.dataclass(frozen=True)
class TransitionManifest:
    """A dataset's typed manifest (:class:`etl.manifest.Manifest`), its raw JSON object and the
    SHA-256 that artifacts record (of the file's bytes, or of the canonical JSON)."""

    spec: Manifest
    data: dict[str, Any]
    sha256: str
    path: Path | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> TransitionManifest:
        """Validate with the typed contract; ``sha256`` is that of the canonical JSON."""
        try:
            spec = Manifest.from_dict(data, source=str(path or "manifest"))
        except EtlError as exc:
            raise TrainingError(str(exc)) from exc
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        return cls(spec=spec, data=data, sha256=digest, path=path)

    @classmethod
    def read(cls, path: Path) -> TransitionManifest:
        """Read ``_manifest.json``; the hash is that of the file's bytes."""
        try:
            raw = path.read_bytes()
            data = json.loads(raw)
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainingError(f"cannot read the manifest {path}: {exc}") from exc
        manifest = cls.from_dict(data, path)
        return dataclasses.replace(manifest, sha256=hashlib.sha256(raw).hexdigest())

    @property
    def action_space(self) -> DiscreteActionSpace | ContinuousActionSpace:
        return self.spec.action_space

    @property
    def discrete(self) -> bool:
        return self.spec.action_space.is_discrete

    @property
    def action_size(self) -> int:
        """Number of actions (discrete) or dimension of the action vector (continuous)."""
        return self.spec.action_space.size

    @property
    def action_low(self) -> NDArray[np.float32]:
        space = self.spec.action_space
        if not isinstance(space, ContinuousActionSpace):
            raise TrainingError("a discrete action space has no bounds")
        return np.asarray(space.low, dtype=np.float32)

    @property
    def action_high(self) -> NDArray[np.float32]:
        space = self.spec.action_space
        if not isinstance(space, ContinuousActionSpace):
            raise TrainingError("a discrete action space has no bounds")
        return np.asarray(space.high, dtype=np.float32)

    @property
    def action_labels(self) -> list[str]:
        space = self.spec.action_space
        if isinstance(space, DiscreteActionSpace) and space.labels:
            return list(space.labels)
        return [str(i) for i in range(self.action_size)]

    @property
    def feature_names(self) -> list[str]:
        return list(self.spec.feature_names)

    @property
    def n_features(self) -> int:
        return self.spec.n_features

    @property
    def gamma(self) -> float:
        return self.spec.gamma


@dataclasses.dataclass(frozen=True)
class TransitionArrays:
    """The dataset as contiguous numpy arrays, one row per decision (``N`` rows).

    ``transition_rows`` lists the rows that are training transitions (d3rlpy's convention, see the
    module docstring); ``next_rows`` gives, for each of them, the row of the next observation, or
    ``-1`` for the last step of a terminal episode (next observation = zeros).
    """

    observations: NDArray[np.float32]  # (N, F)
    actions: NDArray[Any]  # (N,) int64 discrete, (N, A) float32 continuous
    rewards: NDArray[np.float32]  # (N,)
    terminals: NDArray[np.float32]  # (N,) 1.0 on the last step of a terminal episode
    timeouts: NDArray[np.float32]  # (N,) 1.0 on the last step of any other episode
    episode_index: NDArray[np.int64]  # (N,) 0..E-1 in episode order
    steps: NDArray[np.int64]  # (N,)
    transition_rows: NDArray[np.int64]  # (T,)
    next_rows: NDArray[np.int64]  # (T,)
    discrete: bool
    action_size: int

    @property
    def n_rows(self) -> int:
        return int(self.observations.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(self.episode_index.max()) + 1 if self.n_rows else 0

    @property
    def n_transitions(self) -> int:
        return int(self.transition_rows.shape[0])

    @property
    def episode_lengths(self) -> NDArray[np.int64]:
        return np.bincount(self.episode_index, minlength=self.n_episodes).astype(np.int64)


def _transition_files(path: Path) -> tuple[Path, Path]:
    """Resolve ``path`` (the ETL output folder or its ``transitions`` folder) to both parts."""
    path = Path(path)
    if not path.exists():
        raise TrainingError(f"transition dataset not found: {path}")
    if (path / "transitions").is_dir():
        root, transitions = path, path / "transitions"
    elif path.name == "transitions" and path.is_dir():
        root, transitions = path.parent, path
    elif (path / MANIFEST_NAME).is_file():
        raise TrainingError(_no_transitions(path / MANIFEST_NAME))
    else:
        raise TrainingError(
            f"{path} is not an ETL output folder (expected {path}/transitions/ and "
            f"{path}/{MANIFEST_NAME}); run `ecomrl etl` first"
        )
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        raise TrainingError(f"no {MANIFEST_NAME} beside {transitions}")
    return transitions, manifest


def _no_transitions(manifest: Path) -> str:
    """Why an ETL output holds no transitions, from its manifest's row accounting."""
    try:
        counts = json.loads(manifest.read_text(encoding="utf-8")).get("counts") or {}
    except (OSError, json.JSONDecodeError):
        counts = {}
    rows = sum(int(c.get("rows_in") or 0) for c in counts.values()
               if isinstance(c, dict) and "rows_in" in c)
    return (
        f"{manifest.parent} holds no transitions: the ETL found no decisions in {rows} input "
        "rows. Map the events that record what the platform chose (a decision event with its "
        "action; see docs/mapping.md) and run `ecomrl etl` again"
    )


def load_transitions(path: Path | str) -> tuple[pl.DataFrame, TransitionManifest]:
    """Read the ETL's transitions (all date partitions) and its manifest.

    Returns the frame sorted by ``(episode_id, step)`` (the partitions are by decision date, so
    the files' concatenation is not) and the manifest. Raises ``TrainingError`` on a missing
    column, a wrong observation width, a step flagged both terminal and timeout, or a
    broken step sequence.
    """
    transitions, manifest_path = _transition_files(Path(path))
    manifest = TransitionManifest.read(manifest_path)
    files = sorted(transitions.rglob("*.parquet"))
    if not files:
        raise TrainingError(f"no Parquet files under {transitions}")
    frame = (
        pl.scan_parquet(files, hive_partitioning=False)
        .sort(["episode_id", "step"], maintain_order=True)
        .collect()
    )
    validate_transitions(frame, manifest)
    return frame, manifest


def validate_transitions(frame: pl.DataFrame, manifest: TransitionManifest) -> None:
    """Check a transitions frame against the contract and its manifest (vectorised)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise TrainingError(f"transitions lack the columns {missing}")
    if frame.height == 0:
        raise TrainingError("the transition dataset is empty")
    obs_dtype = frame.schema["observation"]
    width = getattr(obs_dtype, "size", None)
    if not isinstance(obs_dtype, pl.Array) or width != manifest.n_features:
        raise TrainingError(
            f"'observation' must be an array of {manifest.n_features} floats (the manifest's "
            f"feature_names), got {obs_dtype}"
        )
    act_dtype = frame.schema["action"]
    if manifest.discrete and not act_dtype.is_integer():
        raise TrainingError(f"discrete action space but the 'action' column is {act_dtype}")
    if not manifest.discrete and not (
        isinstance(act_dtype, pl.Array) and getattr(act_dtype, "size", None) == manifest.action_size
    ):
        raise TrainingError(
            f"continuous action space of dimension {manifest.action_size} but 'action' is "
            f"{act_dtype}"
        )
    checks = frame.select(
        both=(pl.col("terminal") & pl.col("timeout")).sum(),
        nulls=pl.sum_horizontal(
            [pl.col(c).null_count() for c in ("observation", "action", "reward")]
        ),
        bad_step=(pl.col("step") != pl.int_range(pl.len()).over("episode_id").cast(pl.Int64)).sum(),
        mid_end=(
            (pl.col("terminal") | pl.col("timeout"))
            & (pl.col("step") != pl.col("step").max().over("episode_id"))
        ).sum(),
    ).row(0, named=True)
    if checks["both"]:
        raise TrainingError(
            f"{checks['both']} steps are both terminal and timeout (the contract forbids it)"
        )
    if checks["nulls"]:
        raise TrainingError("null observation, action or reward in the transitions")
    if checks["bad_step"]:
        raise TrainingError(
            "steps are not 0, 1, 2, ... within each episode (rows missing or duplicated)"
        )
    if checks["mid_end"]:
        raise TrainingError(f"{checks['mid_end']} steps end an episode before its last step")
    if manifest.discrete:
        bad = frame.select(
            ((pl.col("action") < 0) | (pl.col("action") >= manifest.action_size)).sum()
        ).item()
        if bad:
            raise TrainingError(
                f"{bad} actions fall outside 0..{manifest.action_size - 1} (manifest n)"
            )


def to_arrays(frame: pl.DataFrame, manifest: TransitionManifest) -> TransitionArrays:
    """Contiguous arrays of a (validated, sorted) transitions frame; see ``TransitionArrays``."""
    flags = frame.select(
        episode_index=pl.col("episode_id").rle_id(),
        step=pl.col("step").cast(pl.Int64),
        reward=pl.col("reward").cast(pl.Float32),
        terminal=pl.col("terminal"),
        timeout=pl.col("timeout"),
        last=pl.col("episode_id") != pl.col("episode_id").shift(-1),
    ).with_columns(pl.col("last").fill_null(True))
    last = flags["last"].to_numpy()
    terminal = flags["terminal"].to_numpy() & last
    timeout = last & ~terminal
    unflagged = int((timeout & ~flags["timeout"].to_numpy()).sum())
    if unflagged:
        log.warning("episodes_without_end_flag_treated_as_timeout", count=unflagged)
    observations = np.ascontiguousarray(frame["observation"].to_numpy(), dtype=np.float32)
    if manifest.discrete:
        actions: NDArray[Any] = frame["action"].to_numpy().astype(np.int64)
    else:
        actions = np.ascontiguousarray(frame["action"].to_numpy(), dtype=np.float32)
        actions = actions.reshape(len(frame), manifest.action_size)
    rows = np.arange(len(frame), dtype=np.int64)
    transition_rows = rows[~timeout]
    next_rows = np.where(terminal[~timeout], -1, transition_rows + 1)
    episode_index = flags["episode_index"].to_numpy().astype(np.int64)
    one_step_timeouts = int((timeout & (flags["step"].to_numpy() == 0)).sum())
    if one_step_timeouts:
        log.info("one_step_timeout_episodes_have_no_transition", count=one_step_timeouts)
    return TransitionArrays(
        observations=observations,
        actions=actions,
        rewards=flags["reward"].to_numpy().astype(np.float32),
        terminals=terminal.astype(np.float32),
        timeouts=timeout.astype(np.float32),
        episode_index=episode_index,
        steps=flags["step"].to_numpy(),
        transition_rows=transition_rows,
        next_rows=next_rows.astype(np.int64),
        discrete=manifest.discrete,
        action_size=manifest.action_size,
    )


def to_mdp_dataset(arrays: TransitionArrays) -> Any:
    """d3rlpy ``MDPDataset`` of the arrays, with ``action_space`` and ``action_size`` explicit.

    d3rlpy would otherwise infer the action count from the largest action seen and call
    integer-valued continuous actions discrete. Episode boundaries come from the terminal and
    timeout flags (exactly one of them on each episode's last row).
    """
    from offline_rl._quiet import import_d3rlpy

    d3rlpy = import_d3rlpy()

    space = d3rlpy.ActionSpace.DISCRETE if arrays.discrete else d3rlpy.ActionSpace.CONTINUOUS
    return d3rlpy.dataset.MDPDataset(
        observations=arrays.observations,
        actions=arrays.actions,
        rewards=arrays.rewards,
        terminals=arrays.terminals,
        timeouts=arrays.timeouts,
        action_space=space,
        action_size=arrays.action_size,
    )
