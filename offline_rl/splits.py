"""Train / validation splits of a transitions frame: whole episodes only, never rows.

A row split would put the first steps of an episode in training and its last ones in
validation: the bootstrap targets of the validation rows would be trained on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import structlog
from numpy.typing import NDArray
from sklearn.model_selection import GroupKFold

from offline_rl.errors import TrainingError

log = structlog.get_logger(__name__)


def crossfit_folds(
    groups: NDArray[Any], n_folds: int
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """``(fit_rows, predict_rows)`` of each fold of cross-fitting, grouped by ``groups`` (episode
    ids: an episode never lies on both sides). With fewer than two groups there is no held-out
    fold: one fold fits and predicts every row, and a warning is logged."""
    g = np.asarray(groups)
    k = min(n_folds, len(np.unique(g)))
    if k < 2:
        log.warning("crossfit_single_group_fitting_in_sample")
        rows = np.arange(len(g), dtype=np.int64)
        return [(rows, rows)]
    return [
        (np.asarray(fit, dtype=np.int64), np.asarray(pred, dtype=np.int64))
        for fit, pred in GroupKFold(n_splits=k).split(g, groups=g)
    ]


def split_by_episode(
    frame: pl.DataFrame, valid_fraction: float = 0.2, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Random episodes (seeded) go to validation, about ``valid_fraction`` of them."""
    if not 0.0 <= valid_fraction < 1.0:
        raise TrainingError("valid_fraction must be in [0, 1)")
    episodes = frame.select(pl.col("episode_id").unique(maintain_order=True)).to_series()
    rng = np.random.default_rng(seed)
    n_valid = round(valid_fraction * len(episodes))
    if valid_fraction > 0 and len(episodes) > 1:
        n_valid = min(max(n_valid, 1), len(episodes) - 1)
    chosen = rng.permutation(len(episodes))[:n_valid]
    valid_ids = episodes.gather(np.sort(chosen))
    in_valid = pl.col("episode_id").is_in(valid_ids.implode())
    return frame.filter(~in_valid), frame.filter(in_valid)


def split_by_time(
    frame: pl.DataFrame, valid_fraction: float = 0.2
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Episodes that start on the newest days validate, older ones train.

    An episode goes wholly to the side of the (UTC) date of its first decision. The cut date is
    the latest one that leaves at least ``valid_fraction`` of the episodes in validation (and at
    least one day on each side). Raises ``TrainingError`` when the data span a single day.
    """
    if "decision_ts" not in frame.columns:
        raise TrainingError("a time split needs the 'decision_ts' column")
    if valid_fraction <= 0.0:
        return frame, frame.clear()
    starts = frame.group_by("episode_id").agg(day=pl.col("decision_ts").min().dt.date())
    per_day = starts.group_by("day").len().sort("day", descending=True)
    if per_day.height < 2:
        raise TrainingError("the data span one day: a time split is impossible")
    share = (per_day["len"].cum_sum() / starts.height).to_numpy()
    # newest days until the share reaches the fraction, leaving at least the oldest day
    k = int(np.searchsorted(share, valid_fraction)) + 1
    k = min(max(k, 1), per_day.height - 1)
    cut = per_day["day"][k - 1]
    valid_ids = starts.filter(pl.col("day") >= cut)["episode_id"]
    in_valid = pl.col("episode_id").is_in(valid_ids.implode())
    log.info("time_split", cut_day=str(cut), valid_episodes=len(valid_ids))
    return frame.filter(~in_valid), frame.filter(in_valid)


def split(
    frame: pl.DataFrame, how: str, valid_fraction: float, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Dispatch on ``how`` (``time``, ``episode``, ``none``); a one-day time split falls back to
    an episode split with a warning."""
    if how == "none" or valid_fraction <= 0.0:
        return frame, frame.clear()
    if how == "time":
        try:
            return split_by_time(frame, valid_fraction)
        except TrainingError as exc:
            log.warning("time_split_impossible_using_episode_split", reason=str(exc))
    return split_by_episode(frame, valid_fraction, seed)
