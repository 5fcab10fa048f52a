"""Logs that are already steps -> the transition dataset (``ecomrl import``).

Some sources do not log raw clickstream but decision steps: another team's RL logs, a d3rlpy
``MDPDataset`` (``offline_rl.steps_from_mdp_dataset``), a Minari-style dataset flattened to one
row per step. :func:`import_steps` writes them as the ETL's own output: date partitions
``transitions/date=YYYY-MM-DD/part-00000.parquet`` in the transition schema
(:func:`etl.schema.transition_schema`) and ``_manifest.json`` (gamma, action space, feature names,
scaling, row accounting), so that ``ecomrl train`` and ``ecomrl evaluate`` run on them unchanged.

Input, one row per step (column names set by :class:`StepColumns`): an episode id, the step
index (0, 1, ... within the episode), the observation (one list/array column, or several numeric
columns), the action (an integer index, a label, or a number for continuous actions), the reward,
``terminal`` (the episode ended there: absorbing), optionally ``timeout`` (cut there; the last
step of an episode that is not terminal is a timeout anyway), the logged propensity, a timestamp
and a user id.

A transition means something only inside its episode, so an episode is used whole or quarantined
whole: each bad row is quarantined with its reason and column (``bad_observation``,
``bad_action``, ``bad_reward``, ...), and the other rows of its episode as ``bad_episode``; rows
in = rows used + rows quarantined, and a quarantined share above
``max_quarantine_share`` stops the import (exit 2) with the counts.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from etl.errors import EtlError
from etl.features import Scaling
from etl.manifest import Manifest
from etl.output import swap_dir, write_json, write_parquet
from etl.schema import QUARANTINE_SCHEMA, SCHEMA_VERSION, TS, transition_schema

_REASON = "_reason"
_ROW = "_row_nr"
_OBS = "_obs"
_ACT = "_act"


class StepColumns(BaseModel):
    """Which input column holds each part of a step."""

    model_config = ConfigDict(extra="forbid")

    episode: str = "episode"
    step: str = "step"
    observation: str | list[str] = Field(
        "observation", description="A list/array column, or the names of numeric columns."
    )
    action: str = "action"
    reward: str = "reward"
    terminal: str = "terminal"
    timeout: str | None = None
    propensity: str | None = Field(
        None, description="Probability (density, continuous) of the logged action."
    )
    timestamp: str | None = Field(None, description="When the decision was taken (datetime).")
    user: str | None = Field(None, description="User id (default: the episode id).")
    categorical: list[str] = Field(
        default_factory=list,
        description="Columns of categories, one-hot encoded after the observation's numbers.",
    )


class StepImportConfig(BaseModel):
    """``[steps]``: how step-level logs map onto transitions."""

    model_config = ConfigDict(extra="forbid")

    columns: StepColumns = Field(default_factory=StepColumns)
    action_space: Literal["auto", "discrete", "continuous"] = Field(
        "auto", description="auto: continuous when the action column is floating point or a list."
    )
    action_labels: list[str] | None = Field(
        None,
        description=(
            "Discrete labels in index order. None: integer actions 0..max, or the sorted "
            "distinct string labels."
        ),
    )
    continuous_low: list[float] | None = Field(None, description="None: the observed minimum.")
    continuous_high: list[float] | None = Field(None, description="None: the observed maximum.")
    gamma: float = Field(0.9, gt=0.0, le=1.0)
    date: dt.date | None = Field(
        None, description="The decision date of every step when there is no timestamp column."
    )
    one_step: bool = Field(
        False, description="Every row is an episode of one terminal step (a bandit log); the "
        "episode, step and terminal columns are then not read."
    )
    standardise: bool = Field(True, description="Scale observations to mean 0, std 1.")
    max_categories: int = Field(
        20, ge=1, description="Per categorical column: the most frequent values kept, the rest "
        "one '<other>' feature."
    )
    max_quarantine_share: float = Field(0.05, ge=0.0, le=1.0)


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_steps` wrote."""

    transitions: pl.DataFrame
    quarantine: pl.DataFrame
    manifest: dict[str, Any]
    out: Path


def read_steps(path: Path) -> pl.DataFrame:
    """A Parquet file, a folder of Parquet files or a CSV file, with errors naming the file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise EtlError(f"{path}: no Parquet files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise EtlError(f"{path}: no such file or folder")
    frames = [_read_one(f) for f in files]
    try:
        return pl.concat(frames, how="vertical")
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise EtlError(f"{path}: the files' columns differ: {exc}") from exc


def _read_one(file: Path) -> pl.DataFrame:
    try:
        if file.suffix.lower() == ".csv":
            return pl.read_csv(file, try_parse_dates=True)
        return pl.read_parquet(file)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise EtlError(f"{file}: cannot read it as {file.suffix or 'Parquet'}: {exc}") from exc


def import_steps(
    steps: pl.DataFrame, out: Path, config: StepImportConfig, *, source: str = "<frame>"
) -> ImportResult:
    """Validate ``steps``, write transitions and manifest to ``out`` (atomically), return them."""
    steps, cols = _one_step(steps, config)
    _check_columns(steps, cols, source)
    vocabulary = _categories(steps, cols, config.max_categories)
    frame = steps.with_row_index(_ROW).with_columns(
        _observation(steps, cols, vocabulary, source), _action(steps, cols, config, source)
    )
    labels, low, high = _action_space(frame, config, source)
    frame = frame.with_columns(_row_reason(frame, cols, config, labels, low, high))
    frame = frame.with_columns(_episode_reason(cols))
    quarantine = _quarantine(frame, source)
    used = frame.filter(pl.col(_REASON).is_null())
    _check_share(frame.height, quarantine, config, source)
    if used.height == 0:
        raise EtlError(f"{source}: no valid steps in {frame.height} rows")
    width = _width(used)
    names = _feature_names(cols, width, vocabulary)
    raw = np.asarray(used[_OBS].to_list(), dtype=np.float64).reshape(-1, width)
    scaling = Scaling.fit(names, raw) if config.standardise else Scaling.identity(names)
    trans = _transitions(used, cols, config, labels, scaling.apply(raw))
    manifest = _manifest(config, scaling, labels, low, high, trans, quarantine, source)
    manifest["categories"] = vocabulary
    Manifest.from_dict(manifest, source="the manifest being written")
    _write(trans, quarantine, manifest, Path(out))
    return ImportResult(trans, quarantine, manifest, Path(out))


def _one_step(
    steps: pl.DataFrame, config: StepImportConfig
) -> tuple[pl.DataFrame, StepColumns]:
    """With ``one_step``, each row is an episode of one terminal step (its row number)."""
    cols = config.columns
    if not config.one_step:
        return steps, cols
    names = {"episode": "_episode", "step": "_step", "terminal": "_terminal"}
    steps = steps.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(names["episode"]),
        pl.lit(0, dtype=pl.Int64).alias(names["step"]),
        pl.lit(True).alias(names["terminal"]),
    )
    return steps, cols.model_copy(update=names)


def _check_columns(steps: pl.DataFrame, cols: StepColumns, source: str) -> None:
    wanted = [cols.episode, cols.step, cols.action, cols.reward, cols.terminal]
    wanted += [cols.observation] if isinstance(cols.observation, str) else cols.observation
    wanted += [c for c in (cols.timeout, cols.propensity, cols.timestamp, cols.user) if c]
    wanted += cols.categorical
    missing = [c for c in wanted if c not in steps.columns]
    if missing:
        raise EtlError(
            f"{source}: missing columns {missing} (found {steps.columns}); set them in "
            "[steps.columns]"
        )


_NULL, _OTHER = "<null>", "<other>"


def _categories(steps: pl.DataFrame, cols: StepColumns, keep: int) -> dict[str, list[str]]:
    """Per categorical column, the ``keep`` most frequent values (ties by value), sorted, plus
    ``<other>`` when some were left out; nulls count as the value ``<null>``."""
    vocabulary: dict[str, list[str]] = {}
    for name in cols.categorical:
        counts = steps.select(_category(name).value_counts()).unnest(name)
        ordered = counts.sort(["count", name], descending=[True, False])[name].to_list()
        kept = sorted(ordered[:keep])
        vocabulary[name] = kept + ([_OTHER] if len(ordered) > keep else [])
    return vocabulary


def _category(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.String).fill_null(_NULL)


def _one_hot(vocabulary: dict[str, list[str]]) -> list[pl.Expr]:
    out: list[pl.Expr] = []
    for name, values in vocabulary.items():
        kept = [v for v in values if v != _OTHER]
        out += [(_category(name) == v).cast(pl.Float64) for v in kept]
        if len(kept) < len(values):
            out.append((~_category(name).is_in(kept)).cast(pl.Float64))
    return out


def _observation(
    steps: pl.DataFrame, cols: StepColumns, vocabulary: dict[str, list[str]], source: str
) -> pl.Expr:
    """The observation as a list of float64 (its numbers, then the one-hot categories)."""
    numbers = _numbers(steps, cols, source)
    parts = ([] if numbers is None else [numbers]) + _one_hot(vocabulary)
    if not parts:
        raise EtlError(f"{source}: no observation: name numeric or categorical columns")
    return pl.concat_list(parts).alias(_OBS)


def _numbers(steps: pl.DataFrame, cols: StepColumns, source: str) -> pl.Expr | None:
    if isinstance(cols.observation, list):
        for name in cols.observation:
            if not steps.schema[name].is_numeric():
                raise EtlError(f"{source}: observation column '{name}' is {steps.schema[name]}")
        if not cols.observation:
            return None
        return pl.concat_list([pl.col(c).cast(pl.Float64) for c in cols.observation])
    dtype = steps.schema[cols.observation]
    if not isinstance(dtype, pl.List | pl.Array) or not dtype.inner.is_numeric():
        raise EtlError(
            f"{source}: column '{cols.observation}' must be a list of numbers, got {dtype} "
            "(or name several numeric columns in [steps.columns] observation)"
        )
    obs = pl.col(cols.observation)
    if isinstance(dtype, pl.Array):
        obs = obs.arr.to_list()
    return obs.cast(pl.List(pl.Float64))


def _continuous(steps: pl.DataFrame, cols: StepColumns, config: StepImportConfig) -> bool:
    if config.action_space != "auto":
        return config.action_space == "continuous"
    dtype = steps.schema[cols.action]
    return dtype.is_float() or isinstance(dtype, pl.List | pl.Array)


def _action(
    steps: pl.DataFrame, cols: StepColumns, config: StepImportConfig, source: str
) -> pl.Expr:
    """Continuous: a list of float64; discrete: the label as a string (indexed later)."""
    dtype = steps.schema[cols.action]
    act = pl.col(cols.action)
    if _continuous(steps, cols, config):
        if isinstance(dtype, pl.Array):
            return act.arr.to_list().cast(pl.List(pl.Float64)).alias(_ACT)
        if isinstance(dtype, pl.List):
            return act.cast(pl.List(pl.Float64)).alias(_ACT)
        if not dtype.is_numeric():
            raise EtlError(f"{source}: continuous action column '{cols.action}' is {dtype}")
        return pl.concat_list(act.cast(pl.Float64)).alias(_ACT)
    if dtype.is_float():
        raise EtlError(f"{source}: discrete action column '{cols.action}' is {dtype}")
    return act.cast(pl.String).alias(_ACT)


def _action_space(
    frame: pl.DataFrame, config: StepImportConfig, source: str
) -> tuple[list[str] | None, list[float], list[float]]:
    """Discrete labels (None when continuous), and the continuous bounds."""
    if frame.schema[_ACT] == pl.String:
        if config.action_labels is not None:
            return list(config.action_labels), [], []
        found = frame[_ACT].drop_nulls().unique()
        if found.str.contains(r"^\d+$").all():
            top = int(found.cast(pl.Int64).to_numpy().max())
            return [str(i) for i in range(top + 1)], [], []
        return sorted(found.to_list()), [], []
    values = np.asarray(frame[_ACT].drop_nulls().to_list(), dtype=np.float64)
    if values.size == 0:
        raise EtlError(f"{source}: no action values")
    finite = np.where(np.isfinite(values), values, np.nan)
    low = config.continuous_low or np.nanmin(finite, axis=0).tolist()
    high = config.continuous_high or np.nanmax(finite, axis=0).tolist()
    if len(low) != values.shape[1] or len(high) != values.shape[1]:
        raise EtlError(f"{source}: continuous bounds need {values.shape[1]} values each")
    return None, [float(v) for v in low], [float(v) for v in high]


def _row_reason(
    frame: pl.DataFrame,
    cols: StepColumns,
    config: StepImportConfig,
    labels: list[str] | None,
    low: list[float],
    high: list[float],
) -> pl.Expr:
    """The first thing wrong with a row (None when nothing is)."""
    width = frame[_OBS].list.len().mode().sort().first() if frame.height else 0
    obs_ok = (pl.col(_OBS).list.len() == width) & pl.col(_OBS).list.eval(
        pl.element().is_finite()
    ).list.all()
    checks: list[tuple[pl.Expr, str]] = [
        (pl.col(cols.episode).is_null(), f"null_episode:{cols.episode}"),
        (~(pl.col(cols.step).cast(pl.Int64, strict=False) >= 0).fill_null(False),
         f"bad_step:{cols.step}"),
        (~obs_ok.fill_null(False), f"bad_observation:{_name(cols.observation)}"),
        (~_action_ok(labels, low, high), f"bad_action:{cols.action}"),
        (~pl.col(cols.reward).cast(pl.Float64, strict=False).is_finite().fill_null(False),
         f"bad_reward:{cols.reward}"),
        (pl.col(cols.terminal).cast(pl.Boolean, strict=False).is_null(),
         f"bad_terminal:{cols.terminal}"),
    ]
    checks += _optional_checks(cols, discrete=labels is not None)
    reason = pl.lit(None, dtype=pl.String)
    for bad, name in reversed(checks):
        reason = pl.when(bad).then(pl.lit(name)).otherwise(reason)
    return reason.alias(_REASON)


def _name(observation: str | list[str]) -> str:
    return observation if isinstance(observation, str) else ",".join(observation)


def _action_ok(labels: list[str] | None, low: list[float], high: list[float]) -> pl.Expr:
    if labels is not None:
        return pl.col(_ACT).is_in(labels).fill_null(False)
    ok = pl.col(_ACT).list.len() == len(low)
    for i, (lo, hi) in enumerate(zip(low, high, strict=True)):
        value = pl.col(_ACT).list.get(i, null_on_oob=True)
        ok = ok & value.is_finite() & (value >= lo) & (value <= hi)
    return ok.fill_null(False)


def _optional_checks(cols: StepColumns, discrete: bool) -> list[tuple[pl.Expr, str]]:
    checks: list[tuple[pl.Expr, str]] = []
    if cols.timeout:
        checks.append((pl.col(cols.timeout).cast(pl.Boolean, strict=False).is_null(),
                       f"bad_timeout:{cols.timeout}"))
        checks.append((pl.col(cols.timeout).cast(pl.Boolean, strict=False)
                       & pl.col(cols.terminal).cast(pl.Boolean, strict=False),
                       f"terminal_and_timeout:{cols.timeout}"))
    if cols.propensity:
        p = pl.col(cols.propensity).cast(pl.Float64, strict=False)
        upper = (p <= 1) if discrete else pl.lit(True)
        ok = p.is_finite() & (p > 0) & upper
        checks.append((p.is_not_null() & ~ok.fill_null(False), f"bad_propensity:{cols.propensity}"))
    if cols.timestamp:
        checks.append((pl.col(cols.timestamp).is_null(), f"bad_timestamp:{cols.timestamp}"))
    return checks


def _episode_reason(cols: StepColumns) -> pl.Expr:
    """Episode-level faults (duplicate or missing steps, an early terminal), then ``bad_episode``
    on the clean rows of an episode that has any bad row."""
    ep, step = pl.col(cols.episode), pl.col(cols.step).cast(pl.Int64, strict=False)
    terminal = pl.col(cols.terminal).cast(pl.Boolean, strict=False)
    duplicate = step.is_duplicated().over(ep)
    gap = (step.max().over(ep) + 1 != pl.len().over(ep)) | (step.min().over(ep) != 0)
    early = terminal.fill_null(False) & (step < step.max().over(ep))
    own = (
        pl.when(pl.col(_REASON).is_not_null()).then(pl.col(_REASON))
        .when(duplicate).then(pl.lit(f"duplicate_step:{cols.step}"))
        .when(gap).then(pl.lit(f"broken_step_sequence:{cols.step}"))
        .when(early).then(pl.lit(f"terminal_before_end:{cols.terminal}"))
    )
    any_bad = own.is_not_null().any().over(ep)
    return (
        pl.when(own.is_not_null()).then(own)
        .when(any_bad).then(pl.lit(f"bad_episode:{cols.episode}"))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias(_REASON)
    )


def _quarantine(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Quarantined rows in the ETL's quarantine schema (reason and column apart)."""
    bad = frame.filter(pl.col(_REASON).is_not_null())
    shown = bad.drop(_OBS, _ACT, _REASON, _ROW)
    raw = [json.dumps(r, default=str, sort_keys=True) for r in shown.iter_rows(named=True)]
    parts = bad[_REASON].str.split_exact(":", 1)
    columns: dict[str, Any] = {
        "source_table": ["steps"] * bad.height,
        "source_file": [source] * bad.height,
        "row_number": bad[_ROW].cast(pl.Int64),
        "partition_date": [None] * bad.height,
        "reason": parts.struct.field("field_0"),
        "column": parts.struct.field("field_1"),
        "raw": raw,
    }
    return pl.DataFrame({k: columns[k] for k in QUARANTINE_SCHEMA}, schema=QUARANTINE_SCHEMA)


def _check_share(rows_in: int, quarantine: pl.DataFrame, config: StepImportConfig,
                 source: str) -> None:
    if rows_in == 0 or quarantine.height / rows_in <= config.max_quarantine_share:
        return
    counts = quarantine.group_by("reason").len().sort("reason")
    detail = ", ".join(f"{r}: {n}" for r, n in counts.iter_rows())
    first = quarantine.sort("row_number").row(0, named=True)
    raise EtlError(
        f"{source}: {quarantine.height} of {rows_in} rows "
        f"({quarantine.height / rows_in:.1%}) failed validation, above "
        f"max_quarantine_share {config.max_quarantine_share:.0%} ({detail}); first: row "
        f"{first['row_number']}, {first['reason']} in column '{first.get('column')}'"
    )


def _width(used: pl.DataFrame) -> int:
    return int(used[_OBS].list.len().to_numpy()[0])


def _feature_names(cols: StepColumns, width: int, vocabulary: dict[str, list[str]]) -> list[str]:
    one_hot = [f"{name}={v}" for name, values in vocabulary.items() for v in values]
    if isinstance(cols.observation, list):
        return [*cols.observation, *one_hot]
    return [f"{cols.observation}_{i}" for i in range(width - len(one_hot))] + one_hot


def _transitions(
    used: pl.DataFrame,
    cols: StepColumns,
    config: StepImportConfig,
    labels: list[str] | None,
    obs: np.ndarray,
) -> pl.DataFrame:
    """The transition rows of the used steps; ``obs``: their scaled float32 observations."""
    width = obs.shape[1]
    episode = pl.col(cols.episode).cast(pl.String)
    step = pl.col(cols.step).cast(pl.Int32)
    last = step == step.max().over(episode)
    terminal = pl.col(cols.terminal).cast(pl.Boolean)
    timeout = last & ~terminal
    if cols.timeout:
        timeout = timeout | pl.col(cols.timeout).cast(pl.Boolean)
    out = used.with_columns(
        episode.alias("episode_id"),
        step.alias("step"),
        pl.concat_str(episode, pl.lit("-"), step.cast(pl.String)).alias("decision_id"),
        (pl.col(cols.user).cast(pl.String) if cols.user else episode).alias("user_id"),
        episode.alias("session_id"),
        _decision_ts(used, cols, config).alias("decision_ts"),
        pl.Series("observation", obs, dtype=pl.Array(pl.Float32, width)),
        _action_column(labels),
        pl.col(cols.reward).cast(pl.Float64).alias("reward"),
        terminal.alias("terminal"),
        timeout.alias("timeout"),
        *_propensity(cols),
        *(pl.lit(None, dtype=pl.Float64).alias(c)
          for c in ("revenue", "margin", "discount_cost", "returns")),
    )
    schema = transition_schema(width, labels is None)
    if labels is None:
        schema["action"] = pl.Array(pl.Float32, len(out["action"][0]))
    return out.select([pl.col(c).cast(t) for c, t in schema.items()]).sort("episode_id", "step")


def _decision_ts(used: pl.DataFrame, cols: StepColumns, config: StepImportConfig) -> pl.Expr:
    """Timestamps in UTC (naive ones are taken as UTC), or midnight of ``config.date``."""
    if cols.timestamp:
        dtype = used.schema[cols.timestamp]
        ts = pl.col(cols.timestamp)
        if isinstance(dtype, pl.Date):
            return ts.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        if not isinstance(dtype, pl.Datetime):
            raise EtlError(
                f"timestamp column '{cols.timestamp}' is {dtype}: give a datetime or a date "
                "(CSV: ISO 8601 text)"
            )
        ts = ts.cast(pl.Datetime("us", dtype.time_zone))
        if dtype.time_zone is None:
            return ts.dt.replace_time_zone("UTC")
        return ts.dt.convert_time_zone("UTC")
    if config.date is None:
        raise EtlError(
            "the steps have no timestamp column: set [steps.columns] timestamp, or [steps] date "
            "(the decision date of every step)"
        )
    start = dt.datetime.combine(config.date, dt.time(), tzinfo=dt.UTC)
    return pl.lit(start, dtype=TS)


def _action_column(labels: list[str] | None) -> pl.Expr:
    if labels is None:
        return pl.col(_ACT).cast(pl.List(pl.Float32)).alias("action")
    index = pl.Series(labels).to_frame("label").with_row_index("i")
    mapping = dict(zip(index["label"], index["i"], strict=True))
    return pl.col(_ACT).replace_strict(mapping, return_dtype=pl.Int32).alias("action")


def _propensity(cols: StepColumns) -> list[pl.Expr]:
    if not cols.propensity:
        return [pl.lit(None, dtype=pl.Float64).alias("behaviour_propensity"),
                pl.lit("missing").alias("propensity_source")]
    p = pl.col(cols.propensity).cast(pl.Float64)
    return [p.alias("behaviour_propensity"),
            pl.when(p.is_null()).then(pl.lit("missing")).otherwise(pl.lit("logged"))
            .alias("propensity_source")]


def _manifest(
    config: StepImportConfig,
    scaling: Scaling,
    labels: list[str] | None,
    low: list[float],
    high: list[float],
    trans: pl.DataFrame,
    quarantine: pl.DataFrame,
    source: str,
) -> dict[str, Any]:
    space: dict[str, Any] = (
        {"type": "continuous", "low": low, "high": high} if labels is None
        else {"type": "discrete", "n": len(labels), "labels": labels}
    )
    dates = trans["decision_ts"].dt.date()
    reasons = quarantine.group_by("reason").len().sort("reason")
    return {
        "schema_version": SCHEMA_VERSION,
        "scenario": "imported",
        "episode_mode": "imported",
        "gamma": config.gamma,
        "feature_names": list(scaling.names),
        "scaling": scaling.to_manifest(),
        "action_space": space,
        "reward": {"kind": "imported", "column": config.columns.reward},
        "inputs": [{"path": source}],
        "counts": {
            "steps": {
                "rows_in": trans.height + quarantine.height,
                "used": trans.height,
                "quarantined": dict(reasons.iter_rows()),
                "dropped": {},
            },
        },
        "date_range": [str(dates.min()), str(dates.max())],
        "config": config.model_dump(mode="json"),
    }


def _write(trans: pl.DataFrame, quarantine: pl.DataFrame, manifest: dict[str, Any],
           out: Path) -> None:
    """Build the whole dataset beside ``out`` and swap it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.import-{uuid.uuid4().hex}")
    try:
        by_day = trans.with_columns(pl.col("decision_ts").dt.date().alias("_day"))
        for (day,), part in by_day.partition_by("_day", as_dict=True, maintain_order=True).items():
            write_parquet(part.drop("_day"),
                          tmp / "transitions" / f"date={day}" / "part-00000.parquet")
        if quarantine.height:
            write_parquet(quarantine, tmp / "quarantine" / "steps.parquet")
        tmp.mkdir(parents=True, exist_ok=True)
        write_json(manifest, tmp / "_manifest.json")
        swap_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
