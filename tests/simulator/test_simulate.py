"""Raw logs: determinism, the contract schema, order/purchase consistency, truth rewards."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from simulator import SimulatedLogs, SimulatorConfig, simulate
from simulator.frames import ORDER_SCHEMA, event_schema

TS = pl.Datetime("us", "UTC")


def test_same_seed_same_frames_other_seed_other_frames(promo_config: SimulatorConfig,
                                                       promo_logs: SimulatedLogs) -> None:
    again = simulate(promo_config)
    assert again.events.equals(promo_logs.events)
    assert again.orders.equals(promo_logs.orders)
    assert again.truth.equals(promo_logs.truth)
    other = simulate(promo_config.model_copy(update={"seed": 12}))
    assert not other.events.equals(promo_logs.events)
    assert not other.truth["reward"].equals(promo_logs.truth["reward"])


@pytest.mark.parametrize("fixture", ["promo_logs", "continuous_logs", "rec_logs", "dirty_logs"])
def test_schema_is_the_contract(fixture: str, request: pytest.FixtureRequest) -> None:
    logs: SimulatedLogs = request.getfixturevalue(fixture)
    continuous = logs.config.action_space == "continuous"
    assert dict(logs.events.schema) == event_schema(continuous)
    assert dict(logs.orders.schema) == ORDER_SCHEMA
    assert logs.events.schema["action"] == (pl.Float64 if continuous else pl.String)
    ev = logs.events
    assert set(ev["event_type"].unique()) <= {
        "page_view", "impression", "view_item", "click", "add_to_cart", "remove_from_cart",
        "begin_checkout", "purchase", "refund", "decision", "other",
    }
    assert (ev["ingest_ts"] >= ev["event_ts"]).all()
    assert ev["anonymous_id"].null_count() == 0 and ev["session_id"].null_count() == 0
    dec = ev.filter(pl.col("event_type") == "decision")
    assert dec["decision_id"].null_count() == 0 and dec["action"].null_count() == 0
    assert dec["device"].null_count() == 0 and dec["channel"].null_count() == 0
    assert set(dec["device"].unique()) <= {"mobile", "desktop", "app"}
    assert set(dec["channel"].unique()) <= {"direct", "search", "email", "social"}
    other = ev.filter(pl.col("event_type") != "decision")
    assert other["decision_id"].null_count() == other.height
    assert other["propensity"].null_count() == other.height
    if logs.config.scenario == "recommendation":
        assert set(dec["action"].unique()) <= {f"cat_{c:02d}" for c in range(8)}
    elif continuous:
        assert dec["action"].is_between(0.0, 0.3).all()
    else:
        assert set(dec["action"].unique()) == {"none", "pct_5", "pct_10", "free_shipping"}
    od = logs.orders
    assert (od["quantity"] > 0).all()
    assert set(od["status"].unique()) <= {"placed", "cancelled", "returned", "refunded"}
    assert od["currency"].unique().to_list() == ["EUR"]


@pytest.mark.parametrize("fixture", ["promo_logs", "rec_logs", "dirty_logs"])
def test_purchases_and_orders_match(fixture: str, request: pytest.FixtureRequest) -> None:
    logs: SimulatedLogs = request.getfixturevalue(fixture)
    ev, od = logs.events, logs.orders
    purchases = ev.filter(pl.col("event_type") == "purchase")
    placed = od.filter(pl.col("status") == "placed")
    assert set(purchases["order_id"]) == set(placed["order_id"])
    assert purchases["order_id"].null_count() == 0
    # each order placed in the session of its purchase event, lines numbered 1..n
    sess = purchases.select("order_id", "session_id").unique()
    joined = placed.join(sess, on="order_id", suffix="_ev")
    assert (joined["session_id"] == joined["session_id_ev"]).all()
    lines = placed.group_by("order_id").agg(pl.col("line_no").sort())
    for nums in lines["line_no"].to_list():
        assert nums == list(range(1, len(nums) + 1))
    # the purchase event's price is the order's revenue
    rev = placed.group_by("order_id").agg(
        (pl.col("quantity") * pl.col("unit_price") - pl.col("discount_amount")).sum().alias("r")
    )
    chk = purchases.unique("order_id").join(rev, on="order_id")
    np.testing.assert_allclose(chk["price"].to_numpy(), chk["r"].to_numpy(), atol=0.006)


def test_reversals_reference_a_placed_order(dirty_logs: SimulatedLogs) -> None:
    od = dirty_logs.orders
    placed = od.filter(pl.col("status") == "placed")
    rev = od.filter(pl.col("status") != "placed")
    assert rev.height > 0 and placed["parent_order_id"].null_count() == placed.height
    joined = rev.join(
        placed.select("order_id", "line_no", pl.col("quantity").alias("q0"),
                      pl.col("margin").alias("m0"), pl.col("discount_amount").alias("d0"),
                      pl.col("order_ts").alias("t0"), "item_id"),
        left_on=["parent_order_id", "line_no"], right_on=["order_id", "line_no"],
        suffix="_placed",
    )
    assert joined.height == rev.height
    assert (joined["item_id"] == joined["item_id_placed"]).all()
    assert (joined["order_ts"] > joined["t0"]).all()
    assert (joined["quantity"] <= joined["q0"]).all()
    frac = joined["quantity"] / joined["q0"]
    np.testing.assert_allclose(joined["margin"], joined["m0"] * frac, atol=1e-9)
    np.testing.assert_allclose(joined["discount_amount"], joined["d0"] * frac, atol=1e-9)
    ok = [
        oid.startswith(parent + "-R")
        for oid, parent in rev.select("order_id", "parent_order_id").iter_rows()
    ]
    assert all(ok)


@pytest.mark.parametrize("fixture", ["promo_logs", "continuous_logs", "dirty_logs"])
def test_truth_reward_equals_brute_force_from_orders(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    logs: SimulatedLogs = request.getfixturevalue(fixture)
    window = dt.timedelta(days=logs.config.settlement_days)
    dec_ts = {
        row["session_id"]: row["decision_ts"]
        for row in logs.truth.select("session_id", "decision_ts").iter_rows(named=True)
    }
    order_session: dict[str, str] = {}
    parts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    rows = logs.orders.to_dicts()
    for r in rows:
        if r["status"] == "placed":
            order_session[r["order_id"]] = r["session_id"]
            p = parts[r["session_id"]]
            p[0] += r["quantity"] * r["unit_price"] - r["discount_amount"]
            p[1] += r["margin"]
            p[2] += r["discount_amount"]
    for r in rows:
        if r["status"] != "placed":
            s = order_session[r["parent_order_id"]]
            if r["order_ts"] <= dec_ts[s] + window:
                parts[s][3] += r["margin"] - r["discount_amount"]
    truth = logs.truth
    expected = np.array([parts.get(s, [0.0] * 4) for s in truth["session_id"]])
    got = truth.select("revenue", "margin", "discount_cost", "returns").to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-9)
    np.testing.assert_allclose(
        truth["reward"].to_numpy(), expected[:, 1] - expected[:, 2] - expected[:, 3], atol=1e-9
    )
    assert (truth["returns"] != 0).any()


def test_promotion_episodes_and_churn(promo_logs: SimulatedLogs) -> None:
    cfg = promo_logs.config
    tr = promo_logs.truth.sort("user_id", "decision_ts")
    assert not (tr["terminal"] & tr["timeout"]).any()
    # gaps between a user's decisions stay below churn_days
    gaps = tr.group_by("user_id").agg(pl.col("decision_ts").diff().drop_nulls().alias("g"))
    all_gaps = gaps.explode("g")["g"].drop_nulls()
    assert all_gaps.max() < dt.timedelta(days=cfg.churn_days)  # type: ignore[operator]
    # episodes: <= horizon decisions, steps 0..n-1, one terminal at most and only at the end
    ep = tr.sort("episode_id", "step").group_by("episode_id", maintain_order=True).agg(
        pl.col("step"), pl.col("terminal"), pl.col("timeout"),
        (pl.col("decision_ts").max() - pl.col("decision_ts").min()).alias("span"),
    )
    for steps, term, tout in ep.select("step", "terminal", "timeout").iter_rows():
        assert steps == list(range(len(steps))) and len(steps) <= cfg.horizon_decisions
        assert not any(term[:-1]) and not any(tout[:-1])
        assert term[-1] or tout[-1]
    assert (ep["span"] < dt.timedelta(days=cfg.horizon_days)).all()
    # churned users make no later decision
    last = tr.group_by("user_id").agg(
        pl.col("terminal").last(), pl.col("terminal").sum().alias("n")
    )
    assert (last["n"] <= 1).all() and (last.filter(pl.col("n") == 1)["terminal"]).all()
    # calibration: a few percent to ~20 % conversion, a few currency units per session
    conv = (tr["revenue"] > 0).mean()
    assert 0.03 < conv < 0.25  # type: ignore[operator]
    assert 0.5 < tr["reward"].mean() < 6.0  # type: ignore[operator]


def test_recommendation_reward_from_the_events(rec_logs: SimulatedLogs) -> None:
    """Click / cart / purchase per decision, rebuilt from the events between it and the next."""
    cfg = rec_logs.config
    ev = rec_logs.events.sort("session_id", "event_ts", "event_id")
    window = (
        ev.with_columns(
            pl.col("decision_id").forward_fill().over("session_id").alias("win"),
            pl.col("action").forward_fill().over("session_id").alias("rec"),
        )
        .group_by("win")
        .agg(
            ((pl.col("event_type") == "click") & (pl.col("item_category") == pl.col("rec")))
            .any().cast(pl.Float64).alias("click"),
            (pl.col("event_type") == "add_to_cart").any().cast(pl.Float64).alias("add_to_cart"),
            (pl.col("event_type") == "purchase").any().cast(pl.Float64).alias("purchase"),
            pl.col("price").filter(pl.col("event_type") == "purchase").sum().alias("revenue"),
        )
    )
    tr = rec_logs.truth.join(window, left_on="decision_id", right_on="win", suffix="_ev")
    assert tr.height == rec_logs.truth.height
    for c in ("click", "add_to_cart", "purchase"):
        np.testing.assert_array_equal(tr[c].to_numpy(), tr[f"{c}_ev"].to_numpy())
    np.testing.assert_allclose(tr["revenue"].to_numpy(), tr["revenue_ev"].to_numpy(), atol=0.006)
    w = cfg.rec_reward
    expected = (w.click * tr["click"] + w.add_to_cart * tr["add_to_cart"]
                + w.purchase * tr["purchase"] + w.revenue * tr["revenue"])
    np.testing.assert_allclose(tr["reward"].to_numpy(), expected.to_numpy())
    # an episode is a session; its last decision is terminal
    last = rec_logs.truth.group_by("episode_id").agg(
        pl.col("terminal").sort_by("step").last(), pl.col("terminal").sum().alias("n")
    )
    assert last["terminal"].all() and (last["n"] == 1).all()
    assert 0.0 < tr["click"].mean() < 0.6  # type: ignore[operator]


def test_no_propensity_logs_nulls_but_truth_keeps_them(promo_config: SimulatorConfig) -> None:
    logs = simulate(promo_config.model_copy(update={"log_propensity": False, "n_users": 100}))
    assert logs.events["propensity"].null_count() == logs.events.height
    assert logs.truth["propensity"].null_count() == 0
