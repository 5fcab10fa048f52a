"""Which logged episodes train, which select the candidate, and which test it.

The gate tests the value deployment changes: the discounted return of a user's episode under
the policy, per new user (``[run].eval_episodes = "first"``: each user's first episode in the
logs, whose starting states the policy has not yet influenced; the simulator's
``deployment_value`` measures the same quantity). For the held-out sample to be unbiased for it:

* **users, not days, are held out** (``[run].holdout = "users"``): a fixed share of users,
  chosen by a SHA-256 hash of ``user_id`` (stable across nights, library versions and
  machines), is never trained on and never used to choose anything;
* **episodes are complete**: only episodes that started at least ``eval_min_age_days`` (default:
  the ETL's episode horizon) before the run date are evaluated, so no held-out episode is cut
  by the end of the data. The filter is on the start date alone, which does not depend on
  what happened in the episode, so it does not bias the sample (in a stationary world).

The training users are split the same way (another salt) into a *fitting* part (the agent, the
behaviour model, SPIBB's counts) and a *selection* part (High Confidence Policy Improvement's
candidate selection), whose evaluation episodes are filtered like the held-out ones.

``holdout = "time"`` keeps the earlier rule: episodes starting in the last ``eval_days`` days
are held out, all of them cut at the run date.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import polars as pl

HOLDOUT_SALT = "ecomrl-holdout-v1"
SELECTION_SALT = "ecomrl-selection-v1"
_START, _FIRST, _HELD, _SELECT = "_episode_start", "_first_episode", "_held_out", "_selection"


def user_share(user_ids: pl.Series, salt: str) -> pl.Series:
    """A uniform number in [0, 1) per user id from SHA-256(salt + id): stable everywhere."""
    unique = user_ids.cast(pl.String).fill_null("").unique().sort()
    values = [
        int.from_bytes(hashlib.sha256(f"{salt}:{u}".encode()).digest()[:8], "big") / 2.0**64
        for u in unique.to_list()
    ]
    table = pl.DataFrame({"_u": unique, "_share": values}, schema={"_u": pl.String,
                                                                   "_share": pl.Float64})
    keys = pl.DataFrame({"_u": user_ids.cast(pl.String).fill_null("")})
    return keys.join(table, on="_u", how="left", maintain_order="left")["_share"]


@dataclass(frozen=True)
class RunSplit:
    """The three parts of the logs for one nightly run."""

    fit: pl.DataFrame
    selection: pl.DataFrame
    """Episodes of the selection users that pass the evaluation filters."""
    held_out: pl.DataFrame
    episodes_per_day: float | None
    """Held-out episodes gained per day of logs (for the power analysis)."""
    description: str


def _tag(frame: pl.DataFrame, date: dt.date) -> pl.DataFrame:
    start = pl.col("decision_ts").min().over("episode_id")
    user_key = "user_id" if "user_id" in frame.columns else "episode_id"
    return (
        frame.filter(pl.col("decision_ts").dt.date() <= date)
        .with_columns(start.alias(_START))
        .with_columns((pl.col(_START) == pl.col(_START).min().over(user_key)).alias(_FIRST))
    )


def _eval_filter(
    frame: pl.DataFrame, last_start: dt.date, first_only: bool
) -> pl.DataFrame:
    keep = pl.col(_START).dt.date() <= last_start
    if first_only:
        keep = keep & pl.col(_FIRST)
    return frame.filter(keep)


def _per_day(frame: pl.DataFrame) -> float | None:
    if frame.height == 0:
        return None
    days = frame.select(pl.col(_START).dt.date().n_unique()).item()
    episodes = frame.select(pl.col("episode_id").n_unique()).item()
    return float(episodes) / max(int(days), 1)


def _drop(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop(*(c for c in (_START, _FIRST, _HELD, _SELECT) if c in frame.columns))


def split_by_users(
    frame: pl.DataFrame,
    date: dt.date,
    *,
    holdout_fraction: float,
    selection_fraction: float,
    min_age_days: float,
    first_only: bool,
) -> RunSplit:
    """Held-out users' complete (first) episodes; the rest split into fitting and selection."""
    tagged = _tag(frame, date)
    users = tagged["user_id"] if "user_id" in tagged.columns else tagged["episode_id"]
    tagged = tagged.with_columns(
        (user_share(users, HOLDOUT_SALT) < holdout_fraction).alias(_HELD),
        (user_share(users, SELECTION_SALT) < selection_fraction).alias(_SELECT),
    )
    last_start = date - dt.timedelta(days=min_age_days)
    held = _eval_filter(tagged.filter(pl.col(_HELD)), last_start, first_only)
    training = tagged.filter(~pl.col(_HELD))
    selection = _eval_filter(training.filter(pl.col(_SELECT)), last_start, first_only)
    kind = "first episodes" if first_only else "episodes"
    text = (
        f"held out: {held['episode_id'].n_unique()} complete {kind} (started on or before "
        f"{last_start}) of {holdout_fraction:.0%} of the users, chosen by a hash of user_id; "
        f"selection: {selection['episode_id'].n_unique()} {kind} of {selection_fraction:.0%} "
        "of the other users"
    )
    return RunSplit(
        fit=_drop(training.filter(~pl.col(_SELECT))),
        selection=_drop(selection),
        held_out=_drop(held),
        episodes_per_day=_per_day(held),
        description=text,
    )


def split_by_time(
    frame: pl.DataFrame, date: dt.date, *, eval_days: int, selection_fraction: float
) -> RunSplit:
    """Episodes starting in the last ``eval_days`` days are held out (the earlier rule)."""
    tagged = _tag(frame, date)
    first_eval_day = date - dt.timedelta(days=eval_days - 1)
    held_mask = pl.col(_START).dt.date() >= first_eval_day
    training = tagged.filter(~held_mask)
    users = training["user_id"] if "user_id" in training.columns else training["episode_id"]
    training = training.with_columns(
        (user_share(users, SELECTION_SALT) < selection_fraction).alias(_SELECT)
    )
    held = tagged.filter(held_mask)
    text = f"held out: episodes starting in the last {eval_days} days (cut at {date})"
    return RunSplit(
        fit=_drop(training.filter(~pl.col(_SELECT))),
        selection=_drop(training.filter(pl.col(_SELECT))),
        held_out=_drop(held),
        episodes_per_day=_per_day(held),
        description=text,
    )
