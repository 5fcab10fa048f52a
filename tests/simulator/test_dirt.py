"""Each dirt flag produces what it claims, and only that (the users behave the same)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from simulator import DirtConfig, SimulatedLogs, SimulatorConfig, simulate


def _sim(**flags: bool) -> SimulatedLogs:
    return simulate(SimulatorConfig(n_users=300, seed=21, dirt=DirtConfig(**flags)))


@pytest.fixture(scope="module")
def clean() -> SimulatedLogs:
    return _sim()


def _same_users(clean: SimulatedLogs, dirty: SimulatedLogs) -> None:
    cols = ["decision_id", "action", "reward", "terminal"]
    real = dirty.truth.filter(~pl.col("is_bot")).select(cols)
    assert real.equals(clean.truth.select(cols))


def test_clean_logs_have_no_dirt(clean: SimulatedLogs) -> None:
    ev = clean.events
    assert ev["event_id"].n_unique() == ev.height
    assert ev["user_id"].null_count() == 0
    assert (ev["ingest_ts"] - ev["event_ts"]).max() < dt.timedelta(seconds=2)  # type: ignore[operator]
    assert ev["event_ts"].is_sorted()
    by_session = ev.group_by("session_id").agg(pl.col("event_ts").dt.date().n_unique().alias("d"))
    assert (by_session["d"] == 1).all()
    assert not clean.truth["is_bot"].any()
    assert clean.orders.filter(pl.col("status") == "refunded").height == 0


def test_duplicates_repeat_rows_verbatim(clean: SimulatedLogs) -> None:
    dirty = _sim(duplicates=True)
    ev = dirty.events
    assert ev.height > clean.events.height
    assert ev["event_id"].n_unique() == clean.events.height
    assert ev.unique(maintain_order=True).height == clean.events.height  # exact copies
    _same_users(clean, dirty)


def test_late_events_land_in_later_partitions(clean: SimulatedLogs) -> None:
    dirty = _sim(late_events=True)
    ev = dirty.events
    delay = ev["ingest_ts"] - ev["event_ts"]
    assert (delay > dt.timedelta(minutes=15)).sum() > 0.01 * ev.height
    assert (ev["ingest_ts"].dt.date() > ev["event_ts"].dt.date()).sum() > 0
    _same_users(clean, dirty)


def test_out_of_order_rows(clean: SimulatedLogs) -> None:
    dirty = _sim(out_of_order=True)
    assert not dirty.events["event_ts"].is_sorted()
    assert dirty.events.sort("event_ts", "event_id").equals(clean.events)


def test_bots_have_huge_event_rates_and_never_buy(clean: SimulatedLogs) -> None:
    dirty = _sim(bots=True)
    bots = dirty.bot_user_ids
    assert len(bots) == round(0.02 * 300)
    ev = dirty.events.filter(pl.col("user_id").is_in(bots))
    assert ev.filter(pl.col("event_type").is_in(["add_to_cart", "purchase"])).height == 0
    per_session = ev.group_by("session_id").len()["len"].mean()
    human = clean.events.group_by("session_id").len()["len"].mean()
    assert per_session > 10 * human  # type: ignore[operator]
    assert dirty.orders.filter(pl.col("user_id").is_in(bots)).height == 0
    _same_users(clean, dirty)


def test_anonymous_sessions_are_stitched_by_a_login(clean: SimulatedLogs) -> None:
    dirty = _sim(anonymous=True)
    ev = dirty.events
    anon = ev.filter(pl.col("user_id").is_null())
    assert anon.height > 0
    assert anon.filter(pl.col("event_type") == "decision").height > 0
    logins = ev.filter(pl.col("event_type") == "other")
    assert logins["user_id"].null_count() == 0
    # every anonymous event is followed, in its session, by a login with the same cookie
    chk = anon.join(logins.select("session_id", "anonymous_id", pl.col("event_ts").alias("t")),
                    on=["session_id", "anonymous_id"], how="left")
    assert chk["t"].null_count() == 0 and (chk["event_ts"] < chk["t"]).all()
    # the login names the user the clean logs show for that session
    who = clean.events.select("session_id", "user_id").unique()
    chk2 = logins.select("session_id", "user_id").join(who, on="session_id", suffix="_c")
    assert (chk2["user_id"] == chk2["user_id_c"]).all()
    _same_users(clean, dirty)


def test_reversals_more_partial_and_refunds(clean: SimulatedLogs) -> None:
    dirty = _sim(reversals=True)
    n_clean = clean.orders.filter(pl.col("status") != "placed").height
    rev = dirty.orders.filter(pl.col("status") != "placed")
    assert rev.height > 1.5 * n_clean
    assert set(rev["status"].unique()) == {"cancelled", "returned", "refunded"}
    placed = dirty.orders.filter(pl.col("status") == "placed")
    j = rev.join(placed.select("order_id", "line_no", pl.col("quantity").alias("q0")),
                 left_on=["parent_order_id", "line_no"], right_on=["order_id", "line_no"])
    assert (j["quantity"] < j["q0"]).any()  # partial returns


def test_midnight_sessions_cross_the_date(clean: SimulatedLogs) -> None:
    dirty = _sim(midnight_sessions=True)
    spans = dirty.events.group_by("session_id").agg(
        pl.col("event_ts").dt.date().n_unique().alias("d")
    )
    assert (spans["d"] == 2).sum() > 0
    _same_users(clean, dirty)
