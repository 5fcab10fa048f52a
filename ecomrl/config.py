"""The one configuration model of ecomrl, loaded from TOML and validated with pydantic.

Each stage package owns the model of its own table (``[simulator]``, ``[etl]``, ``[train]``,
``[evaluate]``, ``[approval]``); this module composes them and turns validation failures into
one-line messages that name the key and the expected type.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ecomrl.errors import ConfigError
from etl.config import EtlConfig
from etl.steps import StepImportConfig
from evaluation.config import ApprovalConfig, EvaluateConfig
from offline_rl.config import CertifyConfig, TrainConfig
from simulator.config import SimulatorConfig


class RunConfig(BaseModel):
    """The nightly job (``ecomrl run``): inputs, outputs, what the candidate is judged against."""

    model_config = ConfigDict(extra="forbid")

    input: Path | None = None
    """Root of the raw logs (``events/`` and ``orders/`` date partitions)."""
    dataset: Path | None = None
    """The transition dataset the nightly ETL keeps up to date (default: ``<runs_dir>/dataset``)."""
    runs_dir: Path = Path("runs")
    """One folder per run date (``runs/D/``), plus the approvals record and the lock."""
    holdout: Literal["users", "time"] = "users"
    """``users``: a fixed share of users (by a hash of ``user_id``) is never trained on and
    their complete first episodes are the held-out sample; ``time``: episodes starting in the
    last ``eval_days`` days are held out (cut at the run date)."""
    holdout_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    """``holdout = "users"``: the share of users held out."""
    eval_episodes: Literal["first", "all"] = "first"
    """Evaluate on each held-out user's first episode (the value per new user that deployment
    changes), or on every held-out episode."""
    eval_min_age_days: float | None = Field(None, ge=0.0)
    """``holdout = "users"``: only episodes that started at least this many days before the
    run date are evaluated, so that none is cut by the end of the data. None: the ETL's
    episode horizon (``[etl].horizon_days``)."""
    eval_days: int = Field(7, ge=1)
    """``holdout = "time"``: episodes starting in the last ``eval_days`` days are held out."""
    warm_start: bool = False
    """Start the candidate's training from the production policy's weights, when there is one."""
    bc_baseline: bool = True
    """Also train behaviour cloning on the same data and evaluate it as a baseline."""
    baselines: list[str] = Field(default_factory=lambda: ["rule:constant=0"])
    """Rule baselines (policy SPECs as ``ecomrl evaluate --policy`` takes them)."""


class EcomrlConfig(BaseModel):
    """Root of the configuration: one table per stage, every table optional."""

    model_config = ConfigDict(extra="forbid")

    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    etl: EtlConfig = Field(default_factory=EtlConfig)
    steps: StepImportConfig = Field(default_factory=StepImportConfig)
    """``ecomrl import``: step-level logs from other tools (``etl/steps.py``)."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)
    certify: CertifyConfig = Field(default_factory=CertifyConfig)
    run: RunConfig = Field(default_factory=RunConfig)


def _describe(error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "<root>"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{key}'"
    if kind == "missing":
        return f"missing required key '{key}'"
    got = error.get("input")
    return f"key '{key}': {error['msg']} (got {got!r})"


def config_from_dict(data: dict[str, Any], *, source: str = "<dict>") -> EcomrlConfig:
    """Validate a parsed TOML document; raise ``ConfigError`` naming the first bad key."""
    try:
        return EcomrlConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors()[:3])
        more = exc.error_count() - 3
        suffix = f" (and {more} more)" if more > 0 else ""
        raise ConfigError(f"{source}: {problems}{suffix}") from exc


def load_config(path: Path | str | None, overrides: Sequence[str] = ()) -> EcomrlConfig:
    """Load and validate a TOML config file; ``None`` gives the defaults.

    ``overrides`` are ``section.key=value`` strings (the CLI's ``--set``) applied on top of the
    file before validation; see :func:`apply_overrides`.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} with --set {' '.join(overrides)}"
    return config_from_dict(data, source=source)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the parsed TOML ``data`` with each ``section.key=value`` override set.

    The value is read as a TOML value (``3000``, ``0.5``, ``true``, ``"x"``, ``[1, 2]``); a
    value that is not valid TOML is taken as a string, so ``run.input=data/raw`` works unquoted.
    Dotted keys reach nested tables (``etl.reward_weights.click=2``).
    """
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        table = out
        for part in parts[:-1]:
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is a value, not a table")
            table = child
        table[parts[-1]] = value
    return out
