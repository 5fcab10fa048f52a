"""Which episodes train, select and test: users held out by hash, complete first episodes."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ecomrl.holdout import HOLDOUT_SALT, split_by_time, split_by_users, user_share

DAY = dt.date(2026, 3, 1)


def _frame(n_users: int = 400) -> pl.DataFrame:
    """Each user: a first episode starting on day u % 50 (two decisions) and a second one."""
    rows = []
    start = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    for u in range(n_users):
        first = start + dt.timedelta(days=u % 50)
        for e, offset in ((0, 0), (1, 12)):
            for step in range(2):
                ts = first + dt.timedelta(days=offset + step)
                rows.append((f"u{u}", f"u{u}-e{e}", step, ts))
    return pl.DataFrame(
        rows, schema=["user_id", "episode_id", "step", "decision_ts"], orient="row"
    )


def test_user_share_is_a_stable_uniform_hash() -> None:
    ids = pl.Series([f"u{i}" for i in range(4000)])
    share = user_share(ids, HOLDOUT_SALT)
    assert share.to_list() == user_share(ids, HOLDOUT_SALT).to_list()
    assert share.min() >= 0.0 and share.max() < 1.0  # type: ignore[operator]
    # 4000 uniforms: the share below 0.3 is 0.3 +- 4 standard errors (0.029)
    assert abs(float((share < 0.3).mean()) - 0.3) < 0.03  # type: ignore[arg-type]
    assert user_share(pl.Series(["u1"]), "other")[0] != share[1]


def test_held_out_users_never_train_and_give_complete_first_episodes() -> None:
    frame = _frame()
    split = split_by_users(
        frame, DAY, holdout_fraction=0.3, selection_fraction=0.3, min_age_days=30,
        first_only=True,
    )
    held, fit, sel = (set(f["user_id"]) for f in (split.held_out, split.fit, split.selection))
    assert held and fit and sel
    assert not held & fit and not held & sel and not sel & fit
    last_start = DAY - dt.timedelta(days=30)
    for part in (split.held_out, split.selection):
        assert part["episode_id"].str.ends_with("-e0").all()
        starts = part.group_by("episode_id").agg(pl.col("decision_ts").min())
        assert (starts["decision_ts"].dt.date() <= last_start).all()
        # whole episodes: both decisions of every kept episode
        assert (part.group_by("episode_id").len()["len"] == 2).all()
    # every held-out user old enough has exactly its first episode in the test set
    expected = {
        u for u in held
        if dt.date(2026, 1, 1) + dt.timedelta(days=int(u[1:]) % 50) <= last_start
    }
    assert set(split.held_out["user_id"]) == expected
    # the fitting users keep every episode up to the run date
    assert set(split.fit["episode_id"].str.slice(-2)) == {"e0", "e1"}
    assert split.episodes_per_day is not None and split.episodes_per_day > 0


def test_rows_after_the_run_date_are_never_used() -> None:
    frame = _frame()
    early = dt.date(2026, 1, 20)
    split = split_by_users(
        frame, early, holdout_fraction=0.3, selection_fraction=0.3, min_age_days=0,
        first_only=False,
    )
    for part in (split.fit, split.selection, split.held_out):
        assert (part["decision_ts"].dt.date() <= early).all()


@pytest.mark.parametrize("first_only", [True, False])
def test_the_split_does_not_depend_on_row_order(first_only: bool) -> None:
    frame = _frame()
    a = split_by_users(frame, DAY, holdout_fraction=0.3, selection_fraction=0.2,
                       min_age_days=30, first_only=first_only)
    b = split_by_users(frame.reverse(), DAY, holdout_fraction=0.3, selection_fraction=0.2,
                       min_age_days=30, first_only=first_only)
    assert set(a.held_out["episode_id"]) == set(b.held_out["episode_id"])
    assert set(a.selection["episode_id"]) == set(b.selection["episode_id"])


def test_time_split_holds_out_whole_recent_episodes() -> None:
    ts = [dt.datetime(2026, 1, d, 12, tzinfo=dt.UTC) for d in (1, 9, 10, 11, 20)]
    frame = pl.DataFrame(
        {"user_id": ["x", "x", "y", "y", "z"], "episode_id": ["a", "a", "b", "b", "c"],
         "decision_ts": ts}
    )
    split = split_by_time(frame, dt.date(2026, 1, 11), eval_days=2, selection_fraction=0.0)
    # c is after the run date; a started before the window (it continues into it) and trains;
    # b starts inside the window and is held out whole.
    assert split.held_out["episode_id"].to_list() == ["b", "b"]
    assert split.fit["episode_id"].to_list() == ["a", "a"]
