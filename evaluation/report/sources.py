"""Read the report's side inputs: the ETL manifest, the transition data and a training artifact.

Each reader is tolerant about optional parts (a report with a section marked "not available"
beats no report) but strict about what it cannot do without: a file that is not JSON, or a
manifest that is not an object, is a :class:`ReportError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import structlog

from evaluation.report.errors import ReportError
from evaluation.report.model import DataSummary, TrainingCurves

log = structlog.get_logger(__name__)

_ROWS_IN_KEYS = ("rows_in", "in", "input_rows", "rows")
_ROWS_USED_KEYS = ("rows_used", "used", "output_rows", "transitions", "decisions")
_QUARANTINE_KEYS = ("quarantined", "quarantined_by_reason", "quarantine")
_DROPPED_KEYS = ("dropped", "dropped_by_reason")


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file, turning a missing or broken file into a one-line user error."""
    if not path.is_file():
        raise ReportError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{what} is not valid JSON: {path}: {exc}") from exc


def _total(value: Any) -> int | None:
    """An int, or the sum of the ints in a (nested) mapping (e.g. per table)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, Mapping):
        parts = [_total(v) for v in value.values()]
        numbers = [p for p in parts if p is not None]
        return sum(numbers) if numbers else None
    return None


def _reasons(value: Any, prefix: str = "") -> dict[str, int]:
    """Flatten ``{reason: n}`` or ``{table: {reason: n}}`` into ``{"table: reason": n}``."""
    out: dict[str, int] = {}
    if isinstance(value, Mapping):
        for key, inner in value.items():
            name = f"{prefix}{key}"
            if isinstance(inner, Mapping):
                out.update(_reasons(inner, prefix=f"{name}: "))
            elif isinstance(inner, int | float) and not isinstance(inner, bool):
                out[name] = int(inner)
    return out


def _first(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in mapping:
            return mapping[key]
    return None


def _date_range(value: Any) -> tuple[str, str] | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return str(value[0]), str(value[1])
    if isinstance(value, Mapping):
        start = _first(value, ("start", "min", "from", "first"))
        end = _first(value, ("end", "max", "to", "last"))
        if start is not None and end is not None:
            return str(start), str(end)
    return None


def _by_reason(counts: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, int]:
    value = _first(counts, keys)
    if isinstance(value, Mapping):
        inner = _first(value, ("by_reason", "reasons"))
        return _reasons(inner if isinstance(inner, Mapping) else value)
    reasons = counts.get(f"{keys[0]}_by_reason")
    return _reasons(reasons) if isinstance(reasons, Mapping) else {}


def _per_table(counts: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The ETL's per-table accounting: ``{table: {rows_in, used, quarantined, dropped}}``."""
    return {
        str(name): entry
        for name, entry in counts.items()
        if isinstance(entry, Mapping) and "rows_in" in entry
    }


def data_summary_from_manifest(manifest: Mapping[str, Any]) -> DataSummary:
    """The manifest's facts: date range, rows in/used, quarantine and drop reasons, features.

    ``counts`` is the ETL's accounting per input table (``{"events": {"rows_in", "used",
    "quarantined": {reason: n}, "dropped": {reason: n}}, "orders": {...}, "decisions":
    {"excluded": {reason: n}}}``); reasons are shown as ``"table: reason"``. A flat form
    (``rows_in``, ``rows_used``, ``quarantined``, ``dropped`` at the top) is read too.
    """
    counts = manifest.get("counts") or {}
    if not isinstance(counts, Mapping):
        counts = {}
    tables = _per_table(counts)
    by_table: dict[str, dict[str, int]] = {}
    if tables:
        quarantined: dict[str, int] = {}
        dropped: dict[str, int] = {}
        for name, entry in tables.items():
            q = _reasons(entry.get("quarantined"), prefix=f"{name}: ")
            d = _reasons(entry.get("dropped"), prefix=f"{name}: ")
            quarantined.update(q)
            dropped.update(d)
            by_table[name] = {
                "rows in": int(entry.get("rows_in") or 0),
                "used": int(entry.get("used") or 0),
                "quarantined": sum(q.values()),
                "dropped": sum(d.values()),
            }
        rows_in: int | None = sum(t["rows in"] for t in by_table.values())
        rows_used: int | None = sum(t["used"] for t in by_table.values())
    else:
        rows_in = _total(_first(counts, _ROWS_IN_KEYS))
        rows_used = _total(_first(counts, _ROWS_USED_KEYS))
        quarantined = _by_reason(counts, _QUARANTINE_KEYS)
        dropped = _by_reason(counts, _DROPPED_KEYS)
    decisions = counts.get("decisions")
    excluded = _reasons(decisions.get("excluded")) if isinstance(decisions, Mapping) else {}
    names = manifest.get("feature_names") or []
    gamma = manifest.get("gamma")
    return DataSummary(
        date_range=_date_range(manifest.get("date_range")),
        scenario=str(manifest["scenario"]) if manifest.get("scenario") else None,
        action_space=describe_action_space(manifest.get("action_space")),
        gamma=float(gamma) if isinstance(gamma, int | float) else None,
        rows_in=rows_in,
        rows_used=rows_used,
        quarantined=quarantined,
        dropped=dropped,
        excluded_decisions=excluded,
        rows_by_table=by_table,
        feature_names=[str(n) for n in names] if isinstance(names, list) else [],
    )


def describe_action_space(space: object) -> str | None:
    """The manifest's ``action_space`` in words (None when the manifest has none)."""
    if not isinstance(space, Mapping):
        return None
    if space.get("type") == "continuous":
        low, high = space.get("low") or [], space.get("high") or []
        bounds = ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in zip(low, high, strict=False))
        return f"continuous: {len(low)}-dimensional, bounds {bounds}"
    labels = [str(label) for label in space.get("labels") or []]
    n = int(space.get("n") or len(labels))
    return f"discrete: {n} actions ({', '.join(labels)})" if labels else f"discrete: {n} actions"


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "min": float(values.min()),
        "median": float(np.median(values)),
        "p95": float(np.quantile(values, 0.95)),
        "max": float(values.max()),
    }


def transition_summary(data_dir: Path, gamma: float) -> dict[str, Any]:
    """Episode and reward summaries of ``<data_dir>/transitions`` (the ETL's Parquet dataset).

    Returns the :class:`DataSummary` fields it fills: ``n_episodes``, ``n_decisions``,
    ``episode_length``, ``reward``, ``episode_return`` (``sum_t gamma^t r_t`` per episode),
    ``propensity_source`` and ``reward_histogram``.
    """
    root = Path(data_dir) / "transitions"
    files = sorted(root.glob("date=*/*.parquet"))
    if not files:
        raise ReportError(f"no transition files under {root}")
    scan = pl.scan_parquet(files)
    columns = scan.collect_schema().names()
    select = [c for c in ("episode_id", "step", "reward", "propensity_source") if c in columns]
    if not {"episode_id", "step", "reward"} <= set(select):
        raise ReportError(f"transitions under {root} lack episode_id, step or reward")
    # sorted, and groups kept in that order: the summaries' float sums then do not depend on
    # thread scheduling, and a rerun of the nightly job writes the same report
    frame = scan.select(select).collect().sort("episode_id", "step")
    episodes = (
        frame.lazy()
        .group_by("episode_id", maintain_order=True)
        .agg(
            length=pl.len(),
            ret=(pl.col("reward") * pl.lit(gamma).pow(pl.col("step").cast(pl.Float64))).sum(),
        )
        .collect()
    )
    reward = frame.get_column("reward").to_numpy().astype(np.float64)
    summary_reward = _summary(reward)
    if reward.size:
        summary_reward["share non-zero"] = float(np.mean(reward != 0))
    sources: dict[str, int] = {}
    if "propensity_source" in frame.columns:
        counted = frame.group_by("propensity_source").len().sort("propensity_source")
        sources = {
            str(k): int(n)
            for k, n in zip(counted["propensity_source"], counted["len"], strict=True)
        }
    edges: list[float] = []
    hist: list[int] = []
    if reward.size and float(reward.max()) > float(reward.min()):
        counts, bin_edges = np.histogram(reward, bins=30)
        edges, hist = [float(e) for e in bin_edges], [int(c) for c in counts]
    lengths = episodes.get_column("length").to_numpy().astype(np.float64)
    length_summary = _summary(lengths)
    length_summary.pop("std", None)
    return {
        "n_episodes": episodes.height,
        "n_decisions": frame.height,
        "episode_length": length_summary,
        "reward": summary_reward,
        "episode_return": _summary(episodes.get_column("ret").to_numpy().astype(np.float64)),
        "propensity_source": sources,
        "reward_histogram": (edges, hist) if hist else None,
    }


def training_curves_from_artifact(artifact_dir: Path) -> TrainingCurves | None:
    """Loss curves and checks from an artifact's ``metrics.json``.

    Reads ``curves`` (points with a ``step``), ``validation``, ``behaviour_check`` and a few
    training facts; the algorithm's name comes from ``config.json`` (``agent``). Returns
    ``None`` when the artifact has no ``metrics.json``.
    """
    folder = Path(artifact_dir)
    if not folder.is_dir():
        raise ReportError(f"artifact folder not found: {folder}")
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        log.warning("report.no_metrics", artifact=str(folder))
        return None
    metrics = read_json(metrics_path, "artifact metrics")
    if not isinstance(metrics, Mapping):
        raise ReportError(f"{metrics_path}: expected a JSON object")
    points = metrics.get("curves")
    rows = [p for p in points if isinstance(p, Mapping)] if isinstance(points, list) else []
    frame = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
    if rows and "step" not in frame.columns:
        frame = frame.with_row_index("step", offset=1)
    series: dict[str, list[tuple[float, float]]] = {}
    for name in frame.columns:
        if name == "step" or not frame.schema[name].is_numeric():
            continue
        pairs = frame.select(
            pl.col("step").cast(pl.Float64), pl.col(name).cast(pl.Float64)
        ).drop_nulls()
        series[name] = [(float(s), float(v)) for s, v in pairs.iter_rows()]
    algorithm = None
    config_path = folder / "config.json"
    if config_path.is_file():
        config = read_json(config_path, "artifact config")
        if isinstance(config, Mapping) and config.get("agent"):
            algorithm = str(config["agent"])
    facts = {
        key.replace("_", " "): float(metrics[key])
        for key in _TRAINING_FACTS
        if isinstance(metrics.get(key), int | float) and not isinstance(metrics.get(key), bool)
    }
    return TrainingCurves(
        algorithm=algorithm,
        series=series,
        facts=facts,
        validation=_numbers(metrics.get("validation")),
        behaviour_check=_numbers(metrics.get("behaviour_check")),
    )


# Facts of the data, not of the machine: a timing would make reruns differ (see ecomrl run).
_TRAINING_FACTS = ("train_transitions", "train_episodes", "valid_episodes")


def _numbers(value: Any) -> dict[str, float]:
    """The numeric entries of a mapping (others dropped)."""
    if not isinstance(value, Mapping):
        return {}
    return {
        str(k): float(v)
        for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
