"""Small hand-built raw logs that follow docs/architecture.md, with their true rewards.

Plain Python loops on purpose: an implementation independent of the ETL's, so that the reward it
records per decision is a reference for the ETL's attribution.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

UTC = dt.UTC
START = dt.datetime(2026, 1, 5, tzinfo=UTC)
TIERS = ["none", "pct_5", "pct_10", "free_shipping"]
TIER_PROBS = [0.4, 0.2, 0.2, 0.2]
EVENT_SCHEMA: dict[str, Any] = {
    "event_id": pl.String,
    "event_ts": pl.Datetime("us", "UTC"),
    "ingest_ts": pl.Datetime("us", "UTC"),
    "user_id": pl.String,
    "anonymous_id": pl.String,
    "session_id": pl.String,
    "event_type": pl.String,
    "item_id": pl.String,
    "item_category": pl.String,
    "price": pl.Float64,
    "currency": pl.String,
    "order_id": pl.String,
    "position": pl.Int32,
    "decision_id": pl.String,
    "action": pl.String,
    "propensity": pl.Float64,
    "policy_id": pl.String,
    "device": pl.String,
    "channel": pl.String,
}
ORDER_SCHEMA: dict[str, Any] = {
    "order_id": pl.String,
    "line_no": pl.Int32,
    "order_ts": pl.Datetime("us", "UTC"),
    "ingest_ts": pl.Datetime("us", "UTC"),
    "user_id": pl.String,
    "anonymous_id": pl.String,
    "session_id": pl.String,
    "item_id": pl.String,
    "quantity": pl.Int32,
    "unit_price": pl.Float64,
    "currency": pl.String,
    "discount_amount": pl.Float64,
    "margin": pl.Float64,
    "status": pl.String,
    "parent_order_id": pl.String,
}


@dataclass
class Logs:
    """Raw events and orders plus the true reward parts per decision."""

    events: pl.DataFrame
    orders: pl.DataFrame
    truth: dict[str, dict[str, float]] = field(default_factory=dict)


def make_logs(
    n_users: int = 30,
    days: int = 20,
    seed: int = 0,
    *,
    continuous: bool = False,
    login_share: float = 0.5,
    settlement_days: float = 14.0,
    max_return_days: float = 20.0,
) -> Logs:
    """Promotion-scenario logs: one decision at the start of each session, then browsing,
    sometimes an order (a few of them returned later)."""
    rng = np.random.default_rng(seed)
    events: list[dict[str, Any]] = []
    orders: list[dict[str, Any]] = []
    truth: dict[str, dict[str, float]] = {}
    end = START + dt.timedelta(days=days)
    n_ev = 0
    for u in range(n_users):
        user = f"u{u:04d}"
        anon = f"a{u:04d}"
        t = START + dt.timedelta(hours=float(rng.uniform(0, 72)))
        login_at = int(rng.integers(0, 3)) if rng.random() < login_share else 0
        churn_after = int(rng.integers(2, 12))
        s = 0
        while t < end and s < churn_after:
            sid = f"s{u:04d}_{s:03d}"
            logged_in = s >= login_at
            uid = user if logged_in else None
            dec_id = f"d{u:04d}_{s:03d}"
            if continuous:
                rate = float(rng.uniform(0, 0.3))
                action: Any = rate
                prop = 1.0 / 0.3
                disc_rate = rate
            else:
                k = int(rng.choice(4, p=TIER_PROBS))
                action = TIERS[k]
                prop = TIER_PROBS[k]
                disc_rate = [0.0, 0.05, 0.10, 0.0][k]
            who: dict[str, str | None] = {"user_id": uid, "anonymous_id": anon, "session_id": sid}
            device = ["mobile", "desktop", "app"][int(rng.integers(0, 3))]
            channel = ["direct", "search", "email", "social"][int(rng.integers(0, 4))]

            def ev(ts: dt.datetime, etype: str, who: dict[str, str | None] = who,
                   **kw: Any) -> None:
                nonlocal n_ev
                n_ev += 1
                delay = dt.timedelta(seconds=float(rng.uniform(1, 30)))
                row = {
                    "event_id": f"e{n_ev:07d}",
                    "event_ts": ts,
                    "ingest_ts": ts + delay,
                    "user_id": who["user_id"],
                    "anonymous_id": who["anonymous_id"],
                    "session_id": who["session_id"],
                    "event_type": etype,
                    "currency": None,
                }
                row.update(kw)
                events.append(row)

            ev(t, "decision", decision_id=dec_id, action=action, propensity=prop,
               policy_id="logging-v1", device=device, channel=channel)
            truth[dec_id] = {"revenue": 0.0, "margin": 0.0, "discount_cost": 0.0,
                             "returns": 0.0}
            ts = t
            n_views = int(rng.integers(1, 8))
            for _ in range(n_views):
                ts = ts + dt.timedelta(seconds=float(rng.uniform(20, 200)))
                cat = f"cat_{int(rng.integers(0, 10)):02d}"
                ev(ts, "view_item", item_id=f"i{int(rng.integers(0, 50))}", item_category=cat,
                   price=float(rng.uniform(5, 80)), currency="EUR")
            if s == login_at and login_at > 0:
                uid = user  # logs in during this session
                who["user_id"] = uid
                ts = ts + dt.timedelta(seconds=30)
                ev(ts, "page_view")
            if rng.random() < 0.5 + 0.3 * disc_rate / 0.3:
                ts = ts + dt.timedelta(seconds=float(rng.uniform(10, 100)))
                ev(ts, "add_to_cart", item_id="i1", price=20.0, currency="EUR")
                ts = ts + dt.timedelta(seconds=float(rng.uniform(10, 100)))
                oid = f"o{u:04d}_{s:03d}"
                ev(ts, "purchase", order_id=oid, currency="EUR")
                for line in range(1, int(rng.integers(1, 3)) + 1):
                    q = int(rng.integers(1, 4))
                    price = round(float(rng.uniform(5, 80)), 2)
                    cost = round(price * float(rng.uniform(0.4, 0.8)), 2)
                    disc = round(q * price * disc_rate, 2)
                    if not continuous and action == "free_shipping" and line == 1:
                        disc = 4.9
                    margin = round(q * (price - cost), 2)
                    orders.append({
                        "order_id": oid, "line_no": line, "order_ts": ts,
                        "ingest_ts": ts + dt.timedelta(seconds=5), "user_id": uid,
                        "anonymous_id": anon, "session_id": sid, "item_id": f"i{line}",
                        "quantity": q, "unit_price": price, "currency": "EUR",
                        "discount_amount": disc, "margin": margin, "status": "placed",
                        "parent_order_id": None,
                    })
                    tr = truth[dec_id]
                    tr["revenue"] += q * price - disc
                    tr["margin"] += margin
                    tr["discount_cost"] += disc
                    if rng.random() < 0.25:
                        back = dt.timedelta(days=float(rng.uniform(1, max_return_days)))
                        rq = int(rng.integers(1, q + 1))
                        r_disc = round(disc * rq / q, 6)
                        r_margin = round(margin * rq / q, 6)
                        rts = ts + back
                        orders.append({
                            "order_id": f"{oid}-R{line}", "line_no": line, "order_ts": rts,
                            "ingest_ts": rts + dt.timedelta(seconds=5), "user_id": user,
                            "anonymous_id": anon, "session_id": None, "item_id": f"i{line}",
                            "quantity": rq, "unit_price": price, "currency": "EUR",
                            "discount_amount": r_disc, "margin": r_margin,
                            "status": "returned", "parent_order_id": oid,
                        })
                        if rts <= t + dt.timedelta(days=settlement_days):
                            tr["returns"] += r_margin - r_disc
            s += 1
            t = ts + dt.timedelta(days=float(rng.uniform(0.3, 4.0)))
    ev_schema = dict(EVENT_SCHEMA)
    if continuous:
        ev_schema["action"] = pl.Float64
    return Logs(
        pl.DataFrame(events, schema=ev_schema).sort("ingest_ts"),
        pl.DataFrame(orders, schema=ORDER_SCHEMA).sort("ingest_ts"),
        truth,
    )


def write_raw(logs: Logs, root: Path, *, fmt: str = "parquet") -> Path:
    """Write logs as ``<root>/{events,orders}/date=YYYY-MM-DD/part-00000.<fmt>`` by arrival date."""
    for table, frame in (("events", logs.events), ("orders", logs.orders)):
        dated = frame.with_columns(pl.col("ingest_ts").dt.date().alias("_d"))
        for (day,), part in dated.group_by("_d", maintain_order=True):
            path = root / table / f"date={day}" / f"part-00000.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            body = part.drop("_d")
            if fmt == "csv":
                body.write_csv(path)
            else:
                body.write_parquet(path)
    return root


def reward_of(parts: dict[str, float]) -> float:
    """net_margin from true parts."""
    return parts["margin"] - parts["discount_cost"] - parts["returns"]
