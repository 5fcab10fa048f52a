"""Candidate policies to evaluate: rules, tables of action probabilities, trained artifacts.

A policy SPEC (the ``--policy`` option of ``ecomrl evaluate``) is one of:

* ``rule:constant=K``    always action K (an index, or a label such as ``pct_10``; a discount rate
  such as ``0.1`` for a continuous action space);
* ``rule:uniform``       every action with equal probability (discrete);
* ``rule:behaviour``     the logging policy itself (its on-policy value is the truth to recover);
* ``table:PATH.parquet`` long form ``decision_id, action, probability`` for every logged decision
  (a policy computed elsewhere). Rows whose decision_id is not a decision of the data are
  ignored with a warning that counts them, up to a share of the table's decision_ids
  (``DEFAULT_MAX_UNKNOWN_SHARE``, 1 %; ``table:PATH.parquet#max_unknown_share=0.05``); beyond
  it the table is refused (a table for other data, or a mangled id column);
* ``artifact:PATH``      a trained policy folder from ``ecomrl train`` (loaded through
  ``offline_rl.load_policy``: hashes verified first); greedy, or epsilon-soft with
  ``artifact:PATH#epsilon=0.05``.

Each candidate turns into :class:`CandidateProbabilities` on the logged data: its probability of
every action per decision (discrete) or its action per decision (continuous).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import structlog

from evaluation.artifact_check import read_training_data
from evaluation.config import KernelConfig
from evaluation.data import EpisodeData, FloatArray
from evaluation.errors import EvaluationError
from evaluation.estimators.continuous import kernel_target_probability

log = structlog.get_logger(__name__)

DEFAULT_MAX_UNKNOWN_SHARE = 0.01
"""Largest share of a policy table's decision_ids that may be unknown to the data (ignored with
a warning); beyond it the table is refused."""


@dataclass(frozen=True)
class CandidateProbabilities:
    """What the estimators need from a candidate on one dataset.

    ``logged``: probability of each logged action (discrete) or kernel value
    ``K_h(pi(s) - a)`` (continuous); ``distribution``: (n, K) probabilities when known;
    ``action``: the candidate's continuous action per decision; ``bandwidth``: the kernel's h;
    ``act``: observation -> action function for d3rlpy's FQE, when the candidate has one.
    """

    logged: FloatArray
    distribution: FloatArray | None = None
    action: FloatArray | None = None
    bandwidth: float | None = None
    act: Callable[[np.ndarray], np.ndarray] | None = None


class Candidate(ABC):
    """A policy to evaluate off-policy."""

    name: str = "candidate"
    is_behaviour: bool = False

    @abstractmethod
    def probabilities(
        self, data: EpisodeData, kernel: KernelConfig | None = None
    ) -> CandidateProbabilities:
        """The candidate's probabilities (or actions) on the logged decisions."""


def _from_distribution(
    data: EpisodeData, dist: FloatArray, act: Callable[[np.ndarray], np.ndarray] | None = None
) -> CandidateProbabilities:
    dist = np.asarray(dist, dtype=np.float64)
    return CandidateProbabilities(
        logged=dist[np.arange(data.n_decisions), data.action], distribution=dist, act=act
    )


def _from_actions(
    data: EpisodeData,
    actions: FloatArray,
    kernel: KernelConfig | None,
    act: Callable[[np.ndarray], np.ndarray] | None = None,
) -> CandidateProbabilities:
    actions = np.clip(
        np.asarray(actions, dtype=np.float64).reshape(-1),
        data.action_space.low,
        data.action_space.high,
    )
    value, h = kernel_target_probability(data, actions, kernel)
    return CandidateProbabilities(logged=value, action=actions, bandwidth=h, act=act)


class ConstantPolicy(Candidate):
    """Always the same action (index or label for discrete, a rate for continuous)."""

    def __init__(self, action: int | float | str, name: str | None = None) -> None:
        self.action = action
        self.name = name or f"rule:constant={action}"

    def _index(self, data: EpisodeData) -> int:
        labels = data.action_space.labels
        if isinstance(self.action, str):
            if self.action in labels:
                return labels.index(self.action)
            try:
                value = float(self.action)
            except ValueError:
                raise EvaluationError(
                    f"{self.name}: unknown action {self.action!r}; labels are {list(labels)}"
                ) from None
        else:
            value = float(self.action)
        if value != int(value) or not 0 <= value < data.action_space.n:
            raise EvaluationError(
                f"{self.name}: action must be an index 0..{data.action_space.n - 1} or a label"
            )
        return int(value)

    def probabilities(
        self, data: EpisodeData, kernel: KernelConfig | None = None
    ) -> CandidateProbabilities:
        if data.action_space.is_discrete:
            k = self._index(data)
            dist = np.zeros((data.n_decisions, data.action_space.n))
            dist[:, k] = 1.0
            return _from_distribution(data, dist, act=lambda obs: np.full(len(obs), k))
        try:
            rate = float(self.action)
        except ValueError:
            raise EvaluationError(f"{self.name}: a continuous action must be a number") from None
        low, high = data.action_space.low, data.action_space.high
        if not low - 1e-12 <= rate <= high + 1e-12:
            raise EvaluationError(
                f"{self.name}: {rate} is outside the action range [{low}, {high}]"
            )
        return _from_actions(
            data, np.full(data.n_decisions, rate), kernel, act=lambda obs: np.full(len(obs), rate)
        )


class UniformPolicy(Candidate):
    """Every discrete action with the same probability."""

    name = "rule:uniform"

    def probabilities(
        self, data: EpisodeData, kernel: KernelConfig | None = None
    ) -> CandidateProbabilities:
        if not data.action_space.is_discrete:
            raise EvaluationError("rule:uniform is for discrete action spaces")
        k = data.action_space.n
        rng = np.random.default_rng(0)
        return _from_distribution(
            data,
            np.full((data.n_decisions, k), 1.0 / k),
            act=lambda obs: rng.integers(0, k, size=len(obs)),
        )


class BehaviourPolicy(Candidate):
    """The logging policy itself: ratio 1 on every logged decision."""

    name = "rule:behaviour"
    is_behaviour = True

    def probabilities(
        self, data: EpisodeData, kernel: KernelConfig | None = None
    ) -> CandidateProbabilities:
        if np.any(np.isnan(data.behaviour_propensity)):
            raise EvaluationError("rule:behaviour needs the behaviour propensities (estimate them)")
        return CandidateProbabilities(
            logged=data.behaviour_propensity.copy(),
            distribution=(
                data.behaviour_action_probabilities if data.action_space.is_discrete else None
            ),
        )


class TablePolicy(Candidate):
    """Action probabilities per decision_id, long form: ``decision_id, action, probability``."""

    def __init__(
        self,
        table: pl.DataFrame | Path | str,
        name: str | None = None,
        *,
        max_unknown_share: float = DEFAULT_MAX_UNKNOWN_SHARE,
    ) -> None:
        self.max_unknown_share = max_unknown_share
        if isinstance(table, pl.DataFrame):
            self.table = table
            self.name = name or "table"
        else:
            path = Path(table)
            if not path.is_file():
                raise EvaluationError(f"policy table not found: {path}")
            self.table = pl.read_parquet(path) if path.suffix != ".csv" else pl.read_csv(path)
            self.name = name or f"table:{path.name}"
        missing = {"decision_id", "action", "probability"} - set(self.table.columns)
        if missing:
            raise EvaluationError(f"{self.name}: table lacks column(s) {sorted(missing)}")

    def probabilities(
        self, data: EpisodeData, kernel: KernelConfig | None = None
    ) -> CandidateProbabilities:
        if not data.action_space.is_discrete:
            raise EvaluationError(f"{self.name}: tables are supported for discrete actions only")
        if data.decision_id is None:
            raise EvaluationError(f"{self.name}: the transitions have no decision_id to join on")
        k = data.action_space.n
        table = self.table.select(
            pl.col("decision_id").cast(pl.String),
            pl.col("action"),
            pl.col("probability").cast(pl.Float64),
        )
        if table.schema["action"] == pl.String:
            labels = list(data.action_space.labels)
            table = table.with_columns(
                pl.col("action")
                .replace_strict(labels, list(range(len(labels))), default=None)
                .alias("action")
            )
        table = table.with_columns(pl.col("action").cast(pl.Int64))
        bad = table.filter(
            pl.col("action").is_null() | (pl.col("action") < 0) | (pl.col("action") >= k)
        )
        if bad.height:
            raise EvaluationError(f"{self.name}: {bad.height} rows with an unknown action")
        if table.filter(pl.col("probability").is_null() | (pl.col("probability") < 0)).height:
            raise EvaluationError(f"{self.name}: probabilities must be >= 0 and not null")
        if table.select(pl.struct("decision_id", "action").is_duplicated().any()).item():
            raise EvaluationError(f"{self.name}: duplicate (decision_id, action) rows")
        ids = pl.DataFrame({"decision_id": data.decision_id.astype(str)}).with_row_index("row")
        self._check_unknown_ids(table, ids)
        joined = ids.join(table, on="decision_id", how="inner")
        dist = np.zeros((data.n_decisions, k))
        rows = joined.get_column("row").to_numpy().astype(np.int64)
        dist[rows, joined.get_column("action").to_numpy()] = joined.get_column(
            "probability"
        ).to_numpy()
        sums = dist.sum(axis=1)
        absent = int(np.sum(sums == 0))
        if absent:
            raise EvaluationError(
                f"{self.name}: {absent} logged decisions have no probabilities in the table"
            )
        if not np.allclose(sums, 1.0, atol=1e-4):
            worst = float(np.max(np.abs(sums - 1.0)))
            raise EvaluationError(
                f"{self.name}: probabilities of a decision must sum to 1 (off by {worst:.3g})"
            )
        return _from_distribution(data, dist / sums[:, None])

    def _check_unknown_ids(self, table: pl.DataFrame, ids: pl.DataFrame) -> None:
        """Count the table's decision_ids that are not decisions of the data (a null id counts
        as one): a warning up to ``max_unknown_share`` of the table's ids, an error beyond."""
        unknown = table.join(ids, on="decision_id", how="anti").get_column("decision_id")
        n_unknown = unknown.n_unique()
        if n_unknown == 0:
            return
        n_ids = table.get_column("decision_id").n_unique()
        share = n_unknown / n_ids
        examples = ", ".join(repr(v) for v in unknown.unique(maintain_order=True).head(3))
        if share > self.max_unknown_share:
            raise EvaluationError(
                f"{self.name}: {n_unknown} of the table's {n_ids} decision_ids ({share:.1%}) are "
                f"not decisions of the data (e.g. {examples}), more than the allowed "
                f"{self.max_unknown_share:.1%}: is the table for this data? (raise the limit "
                "with table:PATH#max_unknown_share=S)"
            )
        log.warning(
            "policy table rows with unknown decision_ids ignored",
            policy=self.name,
            unknown_decision_ids=n_unknown,
            table_decision_ids=n_ids,
            share=round(share, 6),
            examples=examples,
        )


class ModelPolicy(Candidate):
    """Any object with ``predict(observations)``; ``action_probabilities(observations)`` if any.

    A discrete policy without ``action_probabilities`` is taken as greedy (one-hot), or
    epsilon-soft when ``epsilon`` > 0.
    """

    training_data: dict[str, Any] | None = None
    """An artifact's ``data.json`` (its training manifest's features), checked against the data."""

    def __init__(self, policy: Any, name: str = "model", epsilon: float = 0.0) -> None:
        if not hasattr(policy, "predict"):
            raise EvaluationError(f"{name}: the policy object has no predict(observations)")
        self.policy = policy
        self.name = name
        self.epsilon = epsilon

    def _distribution(self, obs: np.ndarray, k: int) -> FloatArray:
        if hasattr(self.policy, "action_probabilities"):
            try:
                return np.asarray(
                    self.policy.action_probabilities(obs, epsilon=self.epsilon), dtype=np.float64
                )
            except TypeError:
                return np.asarray(self.policy.action_probabilities(obs), dtype=np.float64)
        greedy = np.asarray(self.policy.predict(obs), dtype=np.int64).reshape(-1)
        dist = np.full((len(obs), k), self.epsilon / k)
        dist[np.arange(len(obs)), greedy] += 1.0 - self.epsilon
        return dist

    def probabilities(
        self, data: EpisodeData, kernel: KernelConfig | None = None
    ) -> CandidateProbabilities:
        if data.observation is None:
            raise EvaluationError(f"{self.name}: the transitions have no observations")
        obs = np.asarray(data.observation, dtype=np.float32)
        if data.action_space.is_discrete:
            dist = self._distribution(obs, data.action_space.n)
            if dist.shape != (data.n_decisions, data.action_space.n):
                raise EvaluationError(
                    f"{self.name}: action probabilities have shape {dist.shape}, expected "
                    f"({data.n_decisions}, {data.action_space.n})"
                )

            def act(o: np.ndarray) -> np.ndarray:
                return np.asarray(self.policy.predict(o), dtype=np.int64).reshape(-1)

            deterministic = self.epsilon == 0 and not getattr(self.policy, "stochastic", False)
            return _from_distribution(data, dist, act=act if deterministic else None)
        actions = np.asarray(self.policy.predict(obs), dtype=np.float64).reshape(-1)

        def act_c(o: np.ndarray) -> np.ndarray:
            return np.asarray(self.policy.predict(o), dtype=np.float64).reshape(-1)

        return _from_actions(data, actions, kernel, act=act_c)


def load_artifact(
    path: Path | str, epsilon: float = 0.0, *, name: str | None = None
) -> ModelPolicy:
    """A trained policy artifact (``offline_rl.load_policy``) as a candidate.

    ``name`` labels it in the results (default ``artifact:<folder name>``).
    """
    if not Path(path).is_dir():
        raise EvaluationError(f"artifact:{path}: policy artifact folder not found")
    try:
        from offline_rl.certified import load_policy
    except ImportError as exc:  # pragma: no cover - offline_rl ships with ecomrl
        raise EvaluationError(f"cannot load artifacts: {exc}") from exc
    from offline_rl.errors import TrainingError

    try:
        policy = load_policy(path)
    except TrainingError as exc:
        raise EvaluationError(f"artifact:{path}: {exc}") from exc
    suffix = f"#epsilon={epsilon}" if epsilon else ""
    label = name if name is not None else f"artifact:{Path(path).name}{suffix}"
    candidate = ModelPolicy(policy, name=label, epsilon=epsilon)
    candidate.training_data = read_training_data(Path(path))
    return candidate


def _spec_share(spec: str, fragment: str, key: str, default: float) -> float:
    """The number in [0, 1] of a spec's ``#key=value`` option (``default`` without one)."""
    if not fragment:
        return default
    name, _, value = fragment.partition("=")
    if name != key:
        raise EvaluationError(f"policy spec {spec!r}: unknown option {name!r} (only {key})")
    try:
        number = float(value)
    except ValueError:
        raise EvaluationError(f"policy spec {spec!r}: {key} must be a number") from None
    if not 0 <= number <= 1:
        raise EvaluationError(f"policy spec {spec!r}: {key} must be in [0, 1]")
    return number


def parse_policy_spec(spec: str) -> Candidate:
    """Turn a ``--policy`` SPEC into a candidate (see the module docstring for the forms)."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise EvaluationError(
            f"policy spec {spec!r}: expected rule:constant=K, rule:uniform, rule:behaviour, "
            "table:PATH.parquet or artifact:PATH"
        )
    if kind == "rule":
        if rest in ("behaviour", "behavior", "logging"):
            return BehaviourPolicy()
        if rest == "uniform":
            return UniformPolicy()
        key, eq, value = rest.partition("=")
        if key == "constant" and eq and value:
            try:
                number = float(value)
            except ValueError:
                return ConstantPolicy(value, name=spec)
            return ConstantPolicy(int(number) if number == int(number) else number, name=spec)
        raise EvaluationError(f"policy spec {spec!r}: unknown rule {rest!r}")
    if kind == "table":
        path, _, frag = rest.partition("#")
        share = _spec_share(spec, frag, "max_unknown_share", DEFAULT_MAX_UNKNOWN_SHARE)
        return TablePolicy(Path(path), name=spec, max_unknown_share=share)
    if kind == "artifact":
        path, _, frag = rest.partition("#")
        epsilon = _spec_share(spec, frag, "epsilon", 0.0)
        return load_artifact(Path(path), epsilon=epsilon)
    raise EvaluationError(f"policy spec {spec!r}: unknown kind {kind!r} (rule, table, artifact)")
