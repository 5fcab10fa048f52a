"""An artifact must be evaluated on data with its training features and scaling.

A trained policy reads observations as the features it was trained on, scaled as they were
then. ``data.json`` in the artifact folder records the training manifest's feature names,
action space, scaling and path (``offline_rl.train``); artifacts written before the scaling was
recorded there are checked against that training manifest when it is still there. Evaluating
on a dataset whose manifest differs would feed the policy other numbers than it learned on,
without a word: :func:`check_artifact_data` refuses it (``EvaluationError``, exit 2) and names
every difference.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import structlog

from evaluation.errors import EvaluationError

log = structlog.get_logger(__name__)

_MAX_NAMED = 5


def read_training_data(folder: Path) -> dict[str, Any] | None:
    """The artifact's ``data.json`` (None when absent or unreadable: nothing to check)."""
    path = folder / "data.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _training_scaling(training: dict[str, Any]) -> dict[str, Any] | None:
    """The scaling the artifact was trained with: its ``data.json`` (artifacts since the scaling
    is recorded there), else the training manifest it names, if that still exists."""
    recorded = training.get("scaling")
    if isinstance(recorded, dict) and recorded:
        return recorded
    path = training.get("manifest_path")
    if not isinstance(path, str):
        return None
    manifest = Path(path)
    if manifest.is_dir():
        manifest = manifest / "_manifest.json"
    try:
        scaling = json.loads(manifest.read_text(encoding="utf-8")).get("scaling")
    except (OSError, ValueError, AttributeError):
        return None
    return scaling if isinstance(scaling, dict) else None


def _names(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    more = f" and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else ""
    return f"{label}: {shown}{more}"


def feature_differences(trained: list[str], evaluated: list[str]) -> list[str]:
    """Named differences between two feature lists (missing, extra, order)."""
    out: list[str] = []
    missing = [f for f in trained if f not in evaluated]
    extra = [f for f in evaluated if f not in trained]
    if missing:
        out.append(_names("features the artifact was trained on, absent from the data", missing))
    if extra:
        out.append(_names("features of the data the artifact was not trained on", extra))
    if not missing and not extra and trained != evaluated:
        moved = [
            f"{f} (#{trained.index(f)} -> #{i})" for i, f in enumerate(evaluated) if trained[i] != f
        ]
        out.append(_names("features in another order", moved))
    return out


def scaling_differences(trained: dict[str, Any], evaluated: dict[str, Any]) -> list[str]:
    """Features whose fitted mean or standard deviation differ (relative 1e-6)."""
    changed: list[str] = []
    for name, stats in trained.items():
        other = evaluated.get(name)
        if not isinstance(stats, dict) or not isinstance(other, dict):
            continue
        for key in ("mean", "std"):
            a, b = stats.get(key), other.get(key)
            if (
                isinstance(a, int | float)
                and isinstance(b, int | float)
                and not math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
            ):
                changed.append(f"{name} {key} {float(a):.6g} -> {float(b):.6g}")
    return [_names("feature scaling differs (trained -> data)", changed)] if changed else []


def check_artifact_data(name: str, training: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Refuse to evaluate artifact ``name`` on data whose manifest differs from its training."""
    problems: list[str] = []
    trained, evaluated = training.get("feature_names"), manifest.get("feature_names")
    if isinstance(trained, list) and isinstance(evaluated, list):
        problems += feature_differences([str(f) for f in trained], [str(f) for f in evaluated])
    t_space, e_space = training.get("action_space"), manifest.get("action_space")
    if isinstance(t_space, dict) and isinstance(e_space, dict) and t_space != e_space:
        problems.append(f"action space {t_space} -> {e_space}")
    t_scaling, e_scaling = _training_scaling(training), manifest.get("scaling")
    if t_scaling is not None and isinstance(e_scaling, dict):
        problems += scaling_differences(t_scaling, e_scaling)
    elif isinstance(e_scaling, dict):
        log.warning("artifact scaling not checked: its training manifest is gone", policy=name)
    if problems:
        raise EvaluationError(
            f"{name} was trained on data that differs from the evaluated data: "
            + "; ".join(problems)
            + " (evaluate it on data built with its training manifest's features and scaling: "
            "[etl] scaling_from)"
        )
