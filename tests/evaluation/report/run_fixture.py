"""A tiny but real run on disk: ETL-shaped transitions and manifest, an artifact's metrics, and
the ``ope.json`` that the OPE package's own ``evaluate_candidates`` writes for it.

The logs come from a known softmax logging policy over 4 promotion tiers, with a reward that
favours tier 2 when the first feature is high, so a "always tier 2" rule beats the logging
policy and "always tier 0" does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from evaluation.config import ApprovalConfig, EvaluateConfig
from evaluation.evaluate import evaluate_candidates

FEATURES = ["recency_days", "frequency", "money"]
DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]
N_ACTIONS = 4


@dataclass(frozen=True)
class RunFiles:
    """Where the fixture put each input of the report."""

    data_dir: Path
    manifest: Path
    eval_dir: Path
    ope_json: Path
    artifact_dir: Path


def write_transitions(
    data_dir: Path, n_users: int = 300, seed: int = 0, *, log_propensities: bool = True
) -> pl.DataFrame:
    """Variable-length episodes (1-4 decisions), one partition per date; the propensities are
    logged, or null (``propensity_source`` = ``missing``) with ``log_propensities=False``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 5, size=n_users)
    episode = np.repeat(np.arange(n_users), lengths)
    step = np.concatenate([np.arange(k) for k in lengths])
    n = len(episode)
    obs = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    day = rng.integers(0, len(DATES), size=n)
    obs[day == len(DATES) - 1, 1] += 1.5  # the last day's "frequency" drifts
    logits = np.column_stack([np.zeros(n), 0.3 * obs[:, 0], 0.2 * obs[:, 1], -0.5 * np.ones(n)])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    action = (rng.random(n)[:, None] > probs.cumsum(axis=1)).sum(axis=1).clip(0, N_ACTIONS - 1)
    reward = (
        np.where(action == 2, 1.0 + 0.5 * obs[:, 0], 0.2)
        + np.where(action == 0, -0.5, 0.0)
        + 0.3 * rng.normal(size=n)
    )
    last = np.r_[episode[1:] != episode[:-1], True]
    frame = pl.DataFrame(
        {
            "episode_id": [f"u{e:04d}" for e in episode],
            "step": step.astype(np.int32),
            "decision_id": [f"d{i:05d}" for i in range(n)],
            "user_id": [f"u{e:04d}" for e in episode],
            "observation": obs,
            "action": action.astype(np.int32),
            "reward": reward,
            "terminal": last,
            "timeout": np.zeros(n, dtype=bool),
            "behaviour_propensity": (
                probs[np.arange(n), action] if log_propensities else np.full(n, np.nan)
            ),
            "propensity_source": ["logged" if log_propensities else "missing"] * n,
            "date": [DATES[d] for d in day],
        }
    ).with_columns(
        pl.col("observation").cast(pl.Array(pl.Float32, len(FEATURES))),
        pl.col("behaviour_propensity").fill_nan(None),
    )
    for date in DATES:
        folder = data_dir / "transitions" / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        frame.filter(pl.col("date") == date).drop("date").write_parquet(
            folder / "part-00000.parquet"
        )
    return frame


def write_manifest(data_dir: Path, n_rows: int, feature_names: list[str] | None = None) -> Path:
    """A ``_manifest.json`` in the shape docs/architecture.md describes."""
    manifest = {
        "schema_version": 1,
        "scenario": "promotion",
        "episode_mode": "user_horizon",
        "gamma": 0.9,
        "feature_names": feature_names or FEATURES,
        "scaling": {name: {"mean": 0.0, "std": 1.0} for name in FEATURES},
        "action_space": {
            "type": "discrete",
            "n": N_ACTIONS,
            "labels": ["none", "pct_5", "pct_10", "free_shipping"],
        },
        "reward": {"name": "net_margin"},
        "date_range": [DATES[0], DATES[-1]],
        "counts": {  # the shape etl.pipeline writes: per input table, reasons per outcome
            "decisions": {"excluded": {"bot_session": 7}},
            "events": {
                "rows_in": 5 * n_rows + 170,
                "used": 5 * n_rows,
                "quarantined": {"null_ids": 120, "unknown_event_type": 10},
                "dropped": {"duplicate_event_id": 40},
            },
            "orders": {
                "rows_in": 400,
                "used": 360,
                "quarantined": {"negative_quantity": 40},
                "dropped": {},
            },
        },
    }
    path = data_dir / "_manifest.json"
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path


def write_artifact_metrics(artifact_dir: Path) -> None:
    """The two files of a training artifact the report reads (metrics.json and config.json)."""
    artifact_dir.mkdir(parents=True, exist_ok=True)
    curves = [
        {"step": float(s), "loss": 2.0 / (1 + s / 50), "conservative_loss": 1.0 / (1 + s / 80)}
        for s in range(0, 500, 50)
    ]
    metrics = {  # the shape offline_rl.train writes
        "curves": curves,
        "validation": {"action_match": 0.47, "td_error": 1.93, "initial_value": 5.4},
        "behaviour_check": {"ece": 0.013, "mae": 0.04, "n": 1921.0, "relative_mae": 0.13},
        "train_transitions": 6461,
        "train_episodes": 1292,
        "valid_episodes": 470,
        "updates_per_second": 37.2,
        "onnx_exported": False,
    }
    (artifact_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (artifact_dir / "config.json").write_text(
        json.dumps({"agent": "discrete_cql"}), encoding="utf-8"
    )


def build_run(
    root: Path,
    *,
    candidates: tuple[str, ...] = ("rule:constant=2",),
    approval: ApprovalConfig | None = None,
    log_propensities: bool = True,
    primary_estimator: str = "dr",
) -> RunFiles:
    """Write everything and evaluate ``candidates`` with the OPE package (200 resamples).

    The default ``dr`` judges the deterministic rules on their trajectory weights, which fail
    the overlap checks here: the report is exercised on a rejection with failed checks.
    """
    data_dir = root / "etl"
    frame = write_transitions(data_dir, log_propensities=log_propensities)
    manifest = write_manifest(data_dir, frame.height)
    eval_dir = root / "eval"
    config = EvaluateConfig.model_validate(
        {"bootstrap": {"n_resamples": 200}, "primary_estimator": primary_estimator}
    )
    result = evaluate_candidates(
        data_dir, list(candidates), config, approval or ApprovalConfig(), data_path=data_dir
    )
    ope_json, _ = result.write(eval_dir)
    artifact_dir = root / "artifact"
    write_artifact_metrics(artifact_dir)
    return RunFiles(data_dir, manifest, eval_dir, ope_json, artifact_dir)
