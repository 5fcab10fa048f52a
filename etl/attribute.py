"""Attribution: order lines and events to the decision they follow, and the reward.

- A placed order line goes to the latest decision of the same user and session at or before its
  ``order_ts``; a line without a session goes to the user's latest decision at most
  ``attribution_window_hours`` before it.
- A reversal (cancelled / returned / refunded) goes to the decision of the line it reverses
  (``parent_order_id`` + ``line_no``) and counts only when its ``order_ts`` is within
  ``settlement_days`` after that decision.
- Clicks and add-to-carts (for the ``weighted`` reward) go to the latest decision of the same
  session at or before them.

Money is summed in integer micro-units of the reporting currency (exact, order-free), then
reported as float64: ``revenue`` (placed lines: quantity * unit_price - discount), ``margin``,
``discount_cost``, ``returns`` (reversal lines: margin - discount) and the ``reward`` the config
names: ``net_margin`` = margin - discount_cost - returns; ``revenue`` = revenue minus reversed
revenue; ``purchase`` = 1 when any placed line; ``weighted`` = click * clicks + add_to_cart *
carts + purchase * purchase + revenue * (net revenue).
"""

from __future__ import annotations

import polars as pl

from etl.clean import MICRO, SESSION, USER, days_us, line_key
from etl.config import EtlConfig

_DEC = "_dts"


def _money(expr: pl.Expr) -> pl.Expr:
    return (expr * MICRO).round(0).cast(pl.Int64)


def reward_kind(config: EtlConfig) -> str:
    """The reward definition in force (``auto`` resolved by scenario)."""
    if config.reward != "auto":
        return config.reward
    if config.outcomes.columns():
        return "weighted"
    return "weighted" if config.scenario == "recommendation" else "net_margin"


def attribute(
    decisions: pl.DataFrame, events: pl.DataFrame, orders: pl.DataFrame, config: EtlConfig
) -> pl.DataFrame:
    """Reward parts per decision: ``decision_id, reward, revenue, margin, discount_cost, returns``,
    one row per row of ``decisions``, in their order.

    ``decisions``: decision_id, ``_user``, ``_session_key``, event_ts; ``events`` and ``orders``:
    cleaned rows of the same users (with ``_user``, ``_session_key`` / session_id, ``_fx``).
    """
    # as-of joins need each ``by`` group sorted by time: a global sort by time does that (the
    # groups keep the order), and ties go to the greatest decision_id, as within a group
    dec = decisions.select(
        "decision_id", USER, SESSION, pl.col("event_ts").dt.epoch("us").alias(_DEC)
    ).sort(_DEC, "decision_id")
    lines = _order_lines(orders)
    attributed = _attributed_lines(lines, dec, config)
    placed_sum = attributed.group_by("decision_id").agg(
        pl.col("rev").sum(), pl.col("mar").sum(), pl.col("dis").sum(),
        pl.len().alias("n_lines"),
    )
    rev_sum = _reversals(lines, attributed, config).group_by("decision_id").agg(
        (pl.col("mar") - pl.col("dis")).sum().alias("ret"), pl.col("rev").sum().alias("rev_back")
    )
    outcomes = config.outcomes.columns()
    out = (
        decisions.select("decision_id", *_outcome_values(outcomes))
        .join(placed_sum, on="decision_id", how="left", maintain_order="left")
        .join(rev_sum, on="decision_id", how="left", maintain_order="left")
        .join(_activity(events, dec, config), on="decision_id", how="left",
              maintain_order="left")
        .with_columns(pl.exclude("decision_id").fill_null(0))
    )
    if outcomes:
        out = out.with_columns(_outcome_parts(outcomes))
    return _reward_parts(out, config)


def _order_lines(orders: pl.DataFrame) -> pl.DataFrame:
    """Order lines with their money in micro-units of the reporting currency."""
    value = pl.col("quantity").cast(pl.Float64) * pl.col("unit_price") * pl.col("_fx")
    disc = pl.col("discount_amount").fill_null(0.0) * pl.col("_fx")
    margin = pl.col("margin").fill_null(0.0) * pl.col("_fx")
    return orders.select(
        "order_id",
        line_key().alias("_line"),
        "status",
        "parent_order_id",
        USER,
        pl.col("session_id").alias(SESSION),
        pl.col("order_ts").dt.epoch("us").alias("_ots"),
        _money(value - disc).alias("rev"),
        _money(margin).alias("mar"),
        _money(disc).alias("dis"),
    )


def _attributed_lines(lines: pl.DataFrame, dec: pl.DataFrame, config: EtlConfig) -> pl.DataFrame:
    """Placed lines with the decision they go to: the last one of their session, or without a
    session the user's last one within the attribution window."""
    placed = lines.filter(pl.col("status") == "placed")
    with_session = placed.filter(pl.col(SESSION).is_not_null()).sort("_ots")
    a1 = with_session.join_asof(
        dec, left_on="_ots", right_on=_DEC, by=[USER, SESSION], strategy="backward",
        check_sortedness=False,
    )
    no_session = placed.filter(pl.col(SESSION).is_null()).sort("_ots")
    a2 = no_session.join_asof(
        dec.drop(SESSION), left_on="_ots", right_on=_DEC, by=USER, strategy="backward",
        tolerance=days_us(config.attribution_window_hours / 24), check_sortedness=False,
    )
    return pl.concat([a1.drop(SESSION), a2.drop(SESSION)], how="diagonal_relaxed").filter(
        pl.col("decision_id").is_not_null()
    )


def _reversals(lines: pl.DataFrame, attributed: pl.DataFrame, config: EtlConfig) -> pl.DataFrame:
    """Cancellations, returns and refunds of attributed lines within the settlement window."""
    return lines.filter(pl.col("status") != "placed").join(
        attributed.select(
            pl.col("order_id").alias("parent_order_id"), "_line", "decision_id", _DEC
        ),
        on=["parent_order_id", "_line"],
        how="inner",
    ).filter(pl.col("_ots") <= pl.col(_DEC) + days_us(config.settlement_days))


def _activity(events: pl.DataFrame, dec: pl.DataFrame, config: EtlConfig) -> pl.DataFrame:
    """Clicks, carts and purchases per decision (the weighted reward's counts), unless the
    decision rows carry those outcomes themselves."""
    acts = pl.DataFrame(schema={"decision_id": pl.String, "clicks": pl.Int64, "carts": pl.Int64,
                                "buys": pl.Int64})
    outcomes = config.outcomes.columns()
    if reward_kind(config) != "weighted" or {"click", "add_to_cart", "purchase"} <= set(outcomes):
        return acts
    ev = events.filter(pl.col("event_type").is_in(["click", "add_to_cart", "purchase"]))
    ev = ev.select(
        USER, SESSION, "event_type", pl.col("event_ts").dt.epoch("us").alias("_ets")
    ).sort("_ets")
    ev = ev.join_asof(dec, left_on="_ets", right_on=_DEC, by=[USER, SESSION],
                      strategy="backward", check_sortedness=False)
    return ev.filter(pl.col("decision_id").is_not_null()).group_by("decision_id").agg(
        (pl.col("event_type") == "click").sum().cast(pl.Int64).alias("clicks"),
        (pl.col("event_type") == "add_to_cart").sum().cast(pl.Int64).alias("carts"),
        (pl.col("event_type") == "purchase").sum().cast(pl.Int64).alias("buys"),
    )


def _reward_parts(out: pl.DataFrame, config: EtlConfig) -> pl.DataFrame:
    """The reward of the configured kind and its money parts, in the reporting currency."""
    revenue = pl.col("rev") / MICRO
    net_margin = (pl.col("mar") - pl.col("dis") - pl.col("ret")) / MICRO
    net_revenue = (pl.col("rev") - pl.col("rev_back")) / MICRO
    purchase = ((pl.col("n_lines") > 0) | (pl.col("buys") > 0)).cast(pl.Float64)
    w = config.reward_weights
    reward = {
        "net_margin": net_margin,
        "revenue": net_revenue,
        "purchase": purchase,
        "weighted": w.click * pl.col("clicks") + w.add_to_cart * pl.col("carts")
        + w.purchase * purchase + w.revenue * net_revenue,
    }[reward_kind(config)]
    return out.select(
        "decision_id",
        reward.cast(pl.Float64).alias("reward"),
        revenue.alias("revenue"),
        (pl.col("mar") / MICRO).alias("margin"),
        (pl.col("dis") / MICRO).alias("discount_cost"),
        (pl.col("ret") / MICRO).alias("returns"),
    )


def _outcome_values(outcomes: dict[str, str]) -> list[pl.Expr]:
    """The outcome columns of the decision rows (``[etl.outcomes]``) as ``_o_<part>`` float64,
    null and non-finite values as 0; revenue in micro-units of the reporting currency."""
    exprs: list[pl.Expr] = []
    for part, col in outcomes.items():
        v = pl.col(col).cast(pl.Float64)
        v = pl.when(v.is_finite()).then(v).otherwise(0.0)
        if part == "revenue":
            v = _money(v * pl.col("_fx"))
        exprs.append(v.alias(f"_o_{part}"))
    return exprs


def _outcome_parts(outcomes: dict[str, str]) -> list[pl.Expr]:
    """The reward parts the outcome columns replace: clicks, carts, purchases (``buys``, with no
    placed line counted then) and revenue (with no reversal)."""
    exprs: list[pl.Expr] = []
    if "click" in outcomes:
        exprs.append(pl.col("_o_click").alias("clicks"))
    if "add_to_cart" in outcomes:
        exprs.append(pl.col("_o_add_to_cart").alias("carts"))
    if "purchase" in outcomes:
        exprs += [(pl.col("_o_purchase") > 0).cast(pl.Int64).alias("buys"),
                  pl.lit(0, dtype=pl.UInt32).alias("n_lines")]
    if "revenue" in outcomes:
        exprs += [pl.col("_o_revenue").alias("rev"), pl.lit(0, dtype=pl.Int64).alias("rev_back")]
    return exprs

