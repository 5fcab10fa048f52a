"""The logged data OPE works on: episodes of decisions, held as flat vectorised arrays.

:class:`EpisodeData` holds one row per decision, sorted by (episode, step), exactly like the
ETL's transitions (docs/architecture.md). Episodes may have different lengths; every estimator
sums over each episode's own decisions. Row ``i`` belongs to episode ``episode[i]`` (0..N-1)
and is discounted by ``gamma ** step[i]`` where ``step`` counts from 0 at the episode's first
decision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import structlog

from etl.errors import EtlError
from etl.manifest import MANIFEST_NAME, DiscreteActionSpace, as_action_space
from evaluation.errors import EvaluationError

log = structlog.get_logger(__name__)

# Plain aliases: they document intent (float64 / int64 / bool vectors) without fighting numpy's
# dtype inference in mypy.
FloatArray = np.ndarray
IntArray = np.ndarray
BoolArray = np.ndarray

REQUIRED_COLUMNS = ("episode_id", "step", "action", "reward")


@dataclass(frozen=True)
class ActionSpace:
    """Discrete (``n`` actions, indices 0..n-1) or continuous (one dimension, [low, high])."""

    type: Literal["discrete", "continuous"]
    n: int = 0
    low: float = 0.0
    high: float = 1.0
    labels: tuple[str, ...] = ()

    @property
    def is_discrete(self) -> bool:
        return self.type == "discrete"

    @classmethod
    def from_manifest(cls, spec: dict[str, Any]) -> ActionSpace:
        """The evaluation's view of the manifest's ``action_space``, validated by the typed
        contract (:func:`etl.manifest.as_action_space`)."""
        try:
            space = as_action_space(spec)
        except EtlError as exc:
            raise EvaluationError(f"manifest {exc}") from exc
        if isinstance(space, DiscreteActionSpace):
            return cls(type="discrete", n=space.n, labels=space.labels)
        if space.size != 1:
            raise EvaluationError("continuous action spaces of one dimension only")
        return cls(type="continuous", low=space.low[0], high=space.high[0])


@dataclass(frozen=True, eq=False)
class EpisodeData:
    """Logged decisions grouped into episodes, as flat arrays in (episode, step) order.

    Attributes:
        episode: episode index per decision, 0..N-1, non-decreasing.
        step: 0-based position of the decision in its episode (discount exponent).
        action: logged action: int index (discrete) or float (continuous).
        reward: reward of the decision (delayed orders already attributed by the ETL).
        behaviour_propensity: probability (density, continuous) of the logged action under the
            logging policy; NaN where unknown.
        terminal, timeout: how the episode ended (on its last row).
        observation: ``(n, d)`` float32 state features, if known.
        decision_id: the platform's decision ids (needed for table candidates).
        episode_id: the original episode ids, one per episode.
        gamma: discount factor.
        action_space: discrete with ``n`` actions or continuous.
        propensity_source: ``logged``, ``estimated`` or ``missing`` per decision.
    """

    episode: IntArray
    step: IntArray
    action: np.ndarray
    reward: FloatArray
    behaviour_propensity: FloatArray
    terminal: BoolArray
    timeout: BoolArray
    gamma: float
    action_space: ActionSpace
    observation: np.ndarray | None = None
    decision_id: np.ndarray | None = None
    episode_id: np.ndarray | None = None
    propensity_source: np.ndarray | None = None
    behaviour_action_probabilities: FloatArray | None = field(default=None)

    def __post_init__(self) -> None:
        n = len(self.reward)
        if n == 0:
            raise EvaluationError("no decisions to evaluate: the transitions are empty")
        for name in ("episode", "step", "action", "behaviour_propensity", "terminal", "timeout"):
            if len(getattr(self, name)) != n:
                raise EvaluationError(
                    f"column '{name}' has {len(getattr(self, name))} rows, reward has {n}"
                )
        if not 0.0 <= self.gamma <= 1.0:
            raise EvaluationError(f"gamma must be in [0, 1], got {self.gamma}")
        if not np.all(np.isfinite(self.reward)):
            raise EvaluationError("reward contains NaN or infinite values")
        ep, st = self.episode, self.step
        if ep[0] != 0 or np.any(np.diff(ep) < 0) or np.any(np.diff(ep) > 1):
            raise EvaluationError(
                "episode index must run 0..N-1 in sorted order (sort by episode, step)"
            )
        first = self.first_row
        if np.any(st[first] != 0):
            bad = int(np.flatnonzero(st[first] != 0)[0])
            raise EvaluationError(f"episode #{bad} does not start at step 0")
        same = ep[1:] == ep[:-1]
        if np.any(st[1:][same] <= st[:-1][same]):
            raise EvaluationError("steps must increase within each episode (sort by step)")
        p = self.behaviour_propensity
        known = ~np.isnan(p)
        if np.any(p[known] <= 0):
            raise EvaluationError(
                "behaviour_propensity must be > 0 where given: the logged action had probability 0"
            )
        if self.action_space.is_discrete:
            if np.any(p[known] > 1 + 1e-9):
                raise EvaluationError("behaviour_propensity above 1 for a discrete action space")
            a = self.action
            if a.dtype.kind not in "iu":
                raise EvaluationError("discrete actions must be integer indices")
            if np.any(a < 0) or np.any(a >= self.action_space.n):
                raise EvaluationError(
                    f"action index out of range 0..{self.action_space.n - 1} for the action space"
                )
        if self.observation is not None and self.observation.shape[0] != n:
            raise EvaluationError("observation rows do not match the number of decisions")
        bp = self.behaviour_action_probabilities
        if bp is not None and bp.shape != (n, self.action_space.n):
            raise EvaluationError("behaviour_action_probabilities must have shape (n, n_actions)")

    # ------------------------------------------------------------------ derived structure
    @property
    def n_decisions(self) -> int:
        return len(self.reward)

    @cached_property
    def n_episodes(self) -> int:
        return int(self.episode[-1]) + 1

    @cached_property
    def first_row(self) -> IntArray:
        """Row index of each episode's first decision."""
        starts = np.flatnonzero(np.r_[True, self.episode[1:] != self.episode[:-1]])
        return starts.astype(np.int64)

    @cached_property
    def last_row(self) -> IntArray:
        """Row index of each episode's last decision."""
        return np.r_[self.first_row[1:] - 1, self.n_decisions - 1].astype(np.int64)

    @cached_property
    def is_first(self) -> BoolArray:
        out = np.zeros(self.n_decisions, dtype=bool)
        out[self.first_row] = True
        return out

    @cached_property
    def lengths(self) -> IntArray:
        return (self.last_row - self.first_row + 1).astype(np.int64)

    @cached_property
    def horizon(self) -> int:
        """One plus the largest step: the number of per-step groups."""
        return int(self.step.max()) + 1

    @cached_property
    def discount(self) -> FloatArray:
        """``gamma ** step`` per decision."""
        return np.power(self.gamma, self.step.astype(np.float64))

    @cached_property
    def returns(self) -> FloatArray:
        """Discounted return of each episode: ``sum_t gamma^t r_t`` over its own decisions."""
        return np.bincount(
            self.episode, weights=self.discount * self.reward, minlength=self.n_episodes
        )

    @property
    def propensities_known(self) -> bool:
        return bool(np.all(~np.isnan(self.behaviour_propensity)))

    @property
    def propensity_estimated(self) -> bool:
        src = self.propensity_source
        return src is not None and bool(np.any(src == "estimated"))

    def with_propensities(
        self,
        propensity: FloatArray,
        *,
        source: np.ndarray,
        action_probabilities: FloatArray | None = None,
    ) -> EpisodeData:
        """A copy with the behaviour propensities (and optionally full distributions) replaced."""
        return replace(
            self,
            behaviour_propensity=propensity,
            propensity_source=source,
            behaviour_action_probabilities=(
                action_probabilities
                if action_probabilities is not None
                else self.behaviour_action_probabilities
            ),
        )

    def subset_episodes(self, episodes: IntArray) -> EpisodeData:
        """The decisions of the given episodes (sorted, re-indexed 0..k-1)."""
        keep_ep = np.zeros(self.n_episodes, dtype=bool)
        keep_ep[episodes] = True
        return self.take_episodes(np.flatnonzero(keep_ep))[0]

    def take_episodes(self, episodes: IntArray) -> tuple[EpisodeData, IntArray]:
        """The given episodes' decisions in the given order, repeats allowed (a bootstrap
        resample), renumbered 0..k-1; and, per new row, its row here (to carry other
        per-decision arrays along)."""
        episodes = np.asarray(episodes, dtype=np.int64)
        lengths = self.lengths[episodes]
        ends = np.cumsum(lengths)
        shift = self.first_row[episodes] - (ends - lengths)  # old row - new row, per episode
        rows = np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(shift, lengths)
        opt = {
            name: (None if getattr(self, name) is None else getattr(self, name)[rows])
            for name in (
                "observation",
                "decision_id",
                "propensity_source",
                "behaviour_action_probabilities",
            )
        }
        taken = EpisodeData(
            episode=np.repeat(np.arange(len(episodes), dtype=np.int64), lengths),
            step=self.step[rows],
            action=self.action[rows],
            reward=self.reward[rows],
            behaviour_propensity=self.behaviour_propensity[rows],
            terminal=self.terminal[rows],
            timeout=self.timeout[rows],
            gamma=self.gamma,
            action_space=self.action_space,
            episode_id=None if self.episode_id is None else self.episode_id[episodes],
            **opt,
        )
        return taken, rows

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        *,
        episode: np.ndarray,
        step: np.ndarray | None = None,
        action: np.ndarray,
        reward: np.ndarray,
        behaviour_propensity: np.ndarray | None = None,
        gamma: float = 0.9,
        n_actions: int | None = None,
        continuous: bool = False,
        action_low: float = 0.0,
        action_high: float = 1.0,
        terminal: np.ndarray | None = None,
        timeout: np.ndarray | None = None,
        observation: np.ndarray | None = None,
        decision_id: np.ndarray | None = None,
    ) -> EpisodeData:
        """Build from plain arrays; ``episode`` may hold any ids (rows must be grouped by it).

        ``step`` defaults to the position within the episode; ``terminal`` to True on each
        episode's last row.
        """
        episode = np.asarray(episode)
        n = len(episode)
        change = np.r_[True, episode[1:] != episode[:-1]] if n else np.zeros(0, bool)
        index = (np.cumsum(change) - 1).astype(np.int64)
        if n and len(np.unique(episode)) != int(index[-1]) + 1:
            raise EvaluationError("rows of an episode must be contiguous (sort by episode, step)")
        if step is None:
            starts = np.flatnonzero(change)
            step = np.arange(n) - starts[index]
        last = np.r_[change[1:], True] if n else np.zeros(0, bool)
        act = np.asarray(action)
        if continuous:
            space = ActionSpace(type="continuous", low=action_low, high=action_high)
            act = act.astype(np.float64).reshape(n)
        else:
            k = int(n_actions) if n_actions is not None else int(act.max()) + 1
            space = ActionSpace(type="discrete", n=k)
            if (act.dtype.kind == "f" and np.all(act == np.round(act))) or act.dtype.kind in "iu":
                act = act.astype(np.int64)
        prop = (
            np.full(n, np.nan)
            if behaviour_propensity is None
            else np.asarray(behaviour_propensity, dtype=np.float64)
        )
        return cls(
            episode=index,
            step=np.asarray(step, dtype=np.int64),
            action=act,
            reward=np.asarray(reward, dtype=np.float64),
            behaviour_propensity=prop,
            terminal=last.copy() if terminal is None else np.asarray(terminal, dtype=bool),
            timeout=np.zeros(n, bool) if timeout is None else np.asarray(timeout, dtype=bool),
            gamma=float(gamma),
            action_space=space,
            observation=None if observation is None else np.asarray(observation),
            decision_id=None if decision_id is None else np.asarray(decision_id),
            propensity_source=np.where(np.isnan(prop), "missing", "logged"),
        )

    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame | pl.LazyFrame,
        *,
        gamma: float = 0.9,
        action_space: ActionSpace | None = None,
    ) -> EpisodeData:
        """Build from a transitions frame (docs/architecture.md schema), sorting it if needed."""
        df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise EvaluationError(f"transitions lack required column(s): {', '.join(missing)}")
        df = df.sort(["episode_id", "step"], maintain_order=True)
        action, action_space = _actions(df, action_space)
        prop, source = _propensities(df)
        ids = df.get_column("episode_id")
        change = (ids != ids.shift(1)).fill_null(True).to_numpy()
        episode = (np.cumsum(change) - 1).astype(np.int64)
        observation = _observations(df)

        def _bool(name: str, default: np.ndarray) -> np.ndarray:
            if name not in df.columns:
                return default
            return df.get_column(name).fill_null(False).to_numpy().astype(bool)

        last = np.r_[change[1:], True]
        return cls(
            episode=episode,
            step=df.get_column("step").to_numpy().astype(np.int64),
            action=action,
            reward=df.get_column("reward").cast(pl.Float64).to_numpy(),
            behaviour_propensity=prop,
            terminal=_bool("terminal", last.copy()),
            timeout=_bool("timeout", np.zeros(df.height, bool)),
            gamma=float(gamma),
            action_space=action_space,
            observation=observation,
            decision_id=(
                df.get_column("decision_id").cast(pl.String).to_numpy()
                if "decision_id" in df.columns
                else None
            ),
            episode_id=ids.filter(pl.Series(change)).to_numpy(),
            propensity_source=source,
        )


def _actions(
    df: pl.DataFrame, action_space: ActionSpace | None
) -> tuple[np.ndarray, ActionSpace]:
    """The logged actions (float64 continuous: the first dimension; int64 discrete) and the
    action space (inferred from them when not given; it must agree with their type)."""
    action_dtype = df.schema["action"]
    continuous = isinstance(action_dtype, pl.Array | pl.List) or action_dtype.is_float()
    if isinstance(action_dtype, pl.Array):
        action = df.get_column("action").arr.first().to_numpy().astype(np.float64)
    elif isinstance(action_dtype, pl.List):
        action = df.get_column("action").list.first().to_numpy().astype(np.float64)
    elif continuous:
        action = df.get_column("action").to_numpy().astype(np.float64)
    else:
        action = df.get_column("action").to_numpy().astype(np.int64)
    if action_space is None:
        action_space = (
            ActionSpace(type="continuous", low=float(action.min()), high=float(action.max()))
            if continuous
            else ActionSpace(type="discrete", n=int(action.max()) + 1)
        )
    if action_space.is_discrete == continuous:
        raise EvaluationError(
            f"the action column is {'continuous' if continuous else 'discrete'} but the "
            f"action space is {action_space.type}"
        )
    return action, action_space


def _propensities(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Logged propensities (NaN where unknown) and their source per row."""
    if "behaviour_propensity" in df.columns:
        prop = df.get_column("behaviour_propensity").cast(pl.Float64).to_numpy()
        prop = np.where(np.isnan(prop), np.nan, prop).astype(np.float64)
    else:
        prop = np.full(df.height, np.nan)
    source = (
        df.get_column("propensity_source").to_numpy().astype(str)
        if "propensity_source" in df.columns
        else np.where(np.isnan(prop), "missing", "logged")
    )
    return prop, np.where(np.isnan(prop), "missing", source)


def _observations(df: pl.DataFrame) -> np.ndarray | None:
    """(n, d) float32 observations from a list or fixed-size array column, if there is one."""
    if "observation" not in df.columns:
        return None
    obs_col = df.get_column("observation")
    if isinstance(obs_col.dtype, pl.List):
        width = obs_col.list.len().max()
        obs_col = obs_col.list.to_array(int(width or 0))  # type: ignore[arg-type]
    observation = obs_col.to_numpy().astype(np.float32)
    return observation.reshape(-1, 1) if observation.ndim == 1 else observation


@dataclass(frozen=True)
class TransitionsDataset:
    """Transitions read from an ETL output folder, with its manifest."""

    frame: pl.DataFrame
    manifest: dict[str, Any]
    path: Path

    @property
    def gamma(self) -> float:
        return float(self.manifest.get("gamma", 0.9))

    @property
    def action_space(self) -> ActionSpace | None:
        spec = self.manifest.get("action_space")
        return ActionSpace.from_manifest(spec) if isinstance(spec, dict) else None

    def to_episode_data(self, gamma: float | None = None) -> EpisodeData:
        return EpisodeData.from_frame(
            self.frame, gamma=self.gamma if gamma is None else gamma, action_space=self.action_space
        )


def load_transitions(path: Path | str) -> TransitionsDataset:
    """Read transitions: an ETL output folder (``transitions/date=.../*.parquet`` and
    ``_manifest.json``), a folder of Parquet files or a single Parquet file.

    Evaluation needs less than training: observations are optional (importance sampling of a
    table policy needs none), and so is the manifest (gamma then defaults to 0.9 and the action
    space is inferred from the actions). Raw logs and unreadable files are refused with the
    path named (``EvaluationError``, exit 2).
    """
    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"transitions not found: {path}")
    if path.is_dir() and ((path / "events").is_dir() or (path / "orders").is_dir()):
        raise EvaluationError(
            f"{path} holds raw logs (events/, orders/), not transitions: run "
            f"`ecomrl etl --input {path} --out DATA` and evaluate DATA"
        )
    manifest: dict[str, Any] = {}
    files = [path]
    if path.is_dir():
        manifest = _read_manifest(path / MANIFEST_NAME)
        root = path / "transitions" if (path / "transitions").is_dir() else path
        files = sorted(root.rglob("*.parquet"))
        if not files:
            raise EvaluationError(f"no Parquet transitions under {root}")
    frame = pl.concat([_read_parquet(f) for f in files], how="vertical_relaxed")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise EvaluationError(f"{path}: not transitions, the columns {missing} are missing")
    log.info("transitions loaded", path=str(path), rows=frame.height)
    return TransitionsDataset(frame=frame, manifest=manifest, path=path)


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{path}: cannot read the manifest: {exc}") from exc
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: a manifest is a JSON object")
    return data


def _read_parquet(file: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(file, hive_partitioning=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise EvaluationError(f"{file}: cannot read it as Parquet: {exc}") from exc
