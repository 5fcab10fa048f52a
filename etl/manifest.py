"""The transition dataset's manifest (``_manifest.json``): the one typed contract every stage reads.

The ETL (``ecomrl etl``) and the step importer (``ecomrl import``) write it beside
``transitions/``; training, evaluation and the report read it with :meth:`Manifest.read` (or
:meth:`Manifest.from_dict`), which validates it and names the key that is wrong. Keys a newer
writer adds are kept (``extra="allow"``) so that an older reader still loads the file.

Fields:

* ``schema_version``: 1 (the transition schema of ``etl.schema``);
* ``scenario``, ``episode_mode``: how the episodes were cut (``promotion``, ``recommendation``,
  ``one_step``, ``imported``, ...);
* ``gamma``: the discount the returns use;
* ``feature_names``: the observation vector's features, in order; ``scaling``: the mean and
  standard deviation each was standardised with;
* ``action_space``: :class:`DiscreteActionSpace` (``n`` actions with their labels, in index
  order) or :class:`ContinuousActionSpace` (per-dimension bounds);
* ``reward``: what the reward is (kind and, for ``weighted``, its weights);
* ``inputs``, ``counts``, ``counts_by_date``, ``date_range``, ``config``: where the rows came
  from and how every input row was accounted for (``etl.output.tally``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from etl.errors import EtlError

MANIFEST_NAME = "_manifest.json"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DiscreteActionSpace(_Frozen):
    """``n`` actions, indices ``0..n-1``; ``labels[i]`` is the logs' name of action ``i``."""

    type: Literal["discrete"] = "discrete"
    n: int = 0
    labels: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _labels_fit(self) -> DiscreteActionSpace:
        if self.n < 2:
            raise ValueError("a discrete action space needs 'n' >= 2")
        if self.labels and len(self.labels) != self.n:
            raise ValueError(f"{len(self.labels)} labels for n = {self.n} actions")
        return self

    @property
    def is_discrete(self) -> bool:
        return True

    @property
    def size(self) -> int:
        """The number of actions."""
        return self.n


class ContinuousActionSpace(_Frozen):
    """A box: ``low[i] < high[i]`` per dimension."""

    type: Literal["continuous"] = "continuous"
    low: tuple[float, ...] = Field(min_length=1)
    high: tuple[float, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _box(self) -> ContinuousActionSpace:
        if len(self.low) != len(self.high):
            raise ValueError("'low' and 'high' need one value per action dimension")
        if any(h <= lo for lo, h in zip(self.low, self.high, strict=True)):
            raise ValueError("every 'high' must exceed its 'low'")
        return self

    @property
    def is_discrete(self) -> bool:
        return False

    @property
    def size(self) -> int:
        """The action's dimension."""
        return len(self.low)


ActionSpaceSpec = Annotated[
    DiscreteActionSpace | ContinuousActionSpace, Field(discriminator="type")
]


ActionSpace = DiscreteActionSpace | ContinuousActionSpace
_ACTION_SPACE: TypeAdapter[ActionSpace] = TypeAdapter(ActionSpaceSpec)


def as_action_space(value: ActionSpace | Mapping[str, Any]) -> ActionSpace:
    """A typed action space from a manifest's ``action_space`` object (or one already typed)."""
    if isinstance(value, DiscreteActionSpace | ContinuousActionSpace):
        return value
    try:
        return _ACTION_SPACE.validate_python(dict(value))
    except ValidationError as exc:
        raise EtlError(f"action_space {dict(value)!r}: {exc.errors()[0]['msg']}") from exc


class FeatureScale(_Frozen):
    """How a feature was standardised: ``(raw - mean) / std``."""

    mean: float
    std: float


class Manifest(BaseModel):
    """The manifest of one transition dataset (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    schema_version: int = 1
    scenario: str | None = None
    episode_mode: str | None = None
    gamma: float = Field(0.9, gt=0.0, le=1.0)
    feature_names: tuple[str, ...] = Field(min_length=1)
    scaling: dict[str, FeatureScale] = Field(default_factory=dict)
    action_space: ActionSpaceSpec
    reward: dict[str, Any] = Field(default_factory=dict)
    inputs: list[dict[str, Any]] = Field(default_factory=list)
    counts: dict[str, Any] = Field(default_factory=dict)
    counts_by_date: dict[str, Any] = Field(default_factory=dict)
    date_range: tuple[str, str] | None = None
    config: dict[str, Any] = Field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "manifest") -> Manifest:
        """Validate a parsed manifest; ``EtlError`` names the first wrong key."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "<root>"
            raise EtlError(
                f"{source}: key '{key}': {first['msg']}; regenerate the dataset with `ecomrl etl` "
                "(or `ecomrl import`)"
            ) from exc

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Read and validate ``_manifest.json`` (or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EtlError(f"cannot read the manifest {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise EtlError(f"{path}: a manifest is a JSON object")
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``_manifest.json``: the keys it was given (extra keys
        kept), so that reading and writing a manifest back changes nothing."""
        return self.model_dump(mode="json", exclude_unset=True)
