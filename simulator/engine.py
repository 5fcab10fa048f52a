"""The vectorised simulation engine: users advance in decision rounds, rows come out as blocks.

Round ``k`` holds every active user's next decision (promotion: the user's next session;
recommendation: the next page view of the sessions in progress, or the start of the users' next
sessions). :meth:`Engine.pending` builds the round's decisions with their context, the caller
(``simulate`` or ``rollout``) chooses the actions, and :meth:`Engine.step` plays the round out:
it emits the events and order lines it produced and updates the hidden and observable state.

Random streams are seeded per purpose and per round (``default_rng([seed, purpose, round])``),
so the users' behaviour does not depend on how a policy uses its own generator, and the dirt
never changes what the (real) users do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulator.config import SimulatorConfig
from simulator.model import (
    ET,
    FREE_SHIPPING_PERCEIVED,
    MAX_RATE,
    SHIPPING_FEE,
    TIER_RATE,
    US_PER_DAY,
    US_PER_S,
    Catalog,
    Population,
    categorical,
    promotion_observation,
    recommendation_observation,
    session_codes,
    sigmoid,
    start_us,
    time_of_day,
)

# Streams (second element of the seed sequence).
_S_POP, _S_BOT_POP, _S_CATALOG = 1, 2, 3
_S_CONTEXT, _S_BOT_CONTEXT, _S_OUTCOME, _S_BOT_OUTCOME, _S_DIRT = 10, 11, 12, 13, 14
_S_KEYED = 15

# Promotion response (see simulator/README.md).
BASE_LOGIT = -2.0
CHANNEL_EFFECT = np.array([0.35, 0.15, 0.25, -0.35])  # direct, search, email, social
DEVICE_EFFECT = np.array([-0.25, 0.0, 0.3])  # mobile, desktop, app
EXTRA_LINE_P = np.array([0.1, 0.35, 0.3])  # per device
SENS_BASE = 0.3
SENS_SCALE = 24.0
FULL_PRICE_AVERSION = 0.8
HABIT = 0.5
CHURN_AFTER_PURCHASE = 1.2


def sensitivity(price_sensitivity: np.ndarray, n_orders: np.ndarray) -> np.ndarray:
    """Conversion-logit lift per unit of perceived incentive above the expectation."""
    return np.asarray((SENS_BASE + SENS_SCALE * price_sensitivity**2) / (1.0 + 0.6 * n_orders))


@dataclass
class Pending:
    """The decisions of one round (one row per decision)."""

    users: np.ndarray
    ts: np.ndarray
    session: np.ndarray
    step: np.ndarray
    device: np.ndarray
    channel: np.ndarray
    login_ts: np.ndarray
    observation: np.ndarray
    is_bot: np.ndarray

    @property
    def size(self) -> int:
        return len(self.users)


@dataclass
class Blocks:
    """Column blocks of raw rows, concatenated once per round."""

    defaults: dict[str, tuple[type, float | int | bool]]
    parts: list[dict[str, np.ndarray]] = field(default_factory=list)

    def add(self, **cols: np.ndarray | float | int | bool) -> None:
        n = len(np.asarray(cols["ts"]))
        if n == 0:
            return
        self.parts.append({k: np.broadcast_to(np.asarray(v), (n,)) for k, v in cols.items()})

    def build(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, (dtype, default) in self.defaults.items():
            arrays: list[np.ndarray] = [
                np.asarray(p[name], dtype) if name in p else np.full(len(p["ts"]), default, dtype)
                for p in self.parts
            ]
            out[name] = np.concatenate(arrays) if arrays else np.zeros(0, dtype)
        return out


EVENT_COLUMNS: dict[str, tuple[type, float | int | bool]] = {
    "_u": (np.int64, -1),
    "_s": (np.int64, -1),
    "ts": (np.int64, 0),
    "etype": (np.int8, 0),
    "_k": (np.int16, 0),
    "item": (np.int64, -1),
    "price": (np.float64, np.nan),
    "order": (np.bool_, False),
    "position": (np.int32, -1),
    "dstep": (np.int32, -1),
    "action_i": (np.int64, -1),
    "action_f": (np.float64, np.nan),
    "prop": (np.float64, np.nan),
    "device": (np.int8, -1),
    "channel": (np.int8, -1),
    "sdev": (np.int8, 0),
    "_login": (np.int64, 0),
}

ORDER_COLUMNS: dict[str, tuple[type, float | int | bool]] = {
    "_u": (np.int64, -1),
    "_s": (np.int64, -1),
    "ts": (np.int64, 0),
    "line": (np.int32, 1),
    "item": (np.int64, -1),
    "qty": (np.int32, 1),
    "price": (np.float64, 0.0),
    "disc": (np.float64, 0.0),
    "margin": (np.float64, 0.0),
    "status": (np.int8, 0),
    "rev_n": (np.int32, 0),
    "sdev": (np.int8, 0),
}


def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts per parent: the parent index of each child and the child's rank in its parent."""
    parent = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    rank = np.arange(len(parent)) - starts[parent]
    return parent, rank


def _segment_cumsum(values: np.ndarray, parent: np.ndarray, n_parents: int) -> np.ndarray:
    """Cumulative sum of ``values`` restarting at each parent (children grouped by parent)."""
    cs = np.cumsum(values)
    counts = np.bincount(parent, minlength=n_parents)
    starts = np.cumsum(counts) - counts
    offset = np.zeros(n_parents)
    nonempty = counts > 0
    offset[nonempty] = cs[starts[nonempty]] - values[starts[nonempty]]
    return np.asarray(cs - offset[parent])


@dataclass(frozen=True)
class _Offer:
    """A promotion round's actions as the engine uses them (one entry per decision)."""

    rate: np.ndarray
    """Discount rate (0 for free shipping)."""
    perceived: np.ndarray
    """The incentive as the user perceives it (free shipping is worth a rate per device)."""
    free_ship: np.ndarray
    action_i: np.ndarray
    """Tier index (-1 in the continuous space)."""
    action_f: np.ndarray
    """Rate in the continuous space (NaN in the discrete one)."""


def _promotion_offer(p: Pending, actions: np.ndarray, *, continuous: bool) -> _Offer:
    n = p.size
    if continuous:
        rate = np.clip(np.asarray(actions, np.float64), 0.0, MAX_RATE)
        return _Offer(
            rate=rate,
            perceived=rate,
            free_ship=np.zeros(n, bool),
            action_i=np.full(n, -1, np.int64),
            action_f=rate,
        )
    action_i = np.asarray(actions, np.int64)
    rate = TIER_RATE[action_i]
    free_ship = action_i == 3
    return _Offer(
        rate=rate,
        perceived=np.where(free_ship, FREE_SHIPPING_PERCEIVED[p.device], rate),
        free_ship=free_ship,
        action_i=action_i,
        action_f=np.full(n, np.nan),
    )


@dataclass(frozen=True)
class _Visits:
    """Some of a round's decisions (the real users'), one entry per decision."""

    users: np.ndarray
    ts: np.ndarray
    session: np.ndarray
    device: np.ndarray
    channel: np.ndarray
    login: np.ndarray

    @classmethod
    def of(cls, p: Pending, rows: np.ndarray) -> _Visits:
        return cls(
            users=p.users[rows],
            ts=p.ts[rows],
            session=p.session[rows],
            device=p.device[rows],
            channel=p.channel[rows],
            login=p.login_ts[rows],
        )


@dataclass(frozen=True)
class _Lines:
    """Order lines of the buyers, grouped by buyer (``parent``: the buyer's row, ``rank``: the
    line's rank in its order)."""

    n_lines: np.ndarray
    """Lines per visit (0 for non-buyers)."""
    parent: np.ndarray
    rank: np.ndarray
    item: np.ndarray
    qty: np.ndarray
    price: np.ndarray
    disc: np.ndarray
    margin: np.ndarray


class Engine:
    """State of one simulation: population, catalogue, clock and the rows emitted so far."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.seed = config.seed
        self.t_start = start_us(config)
        self.t_end = self.t_start + config.days * US_PER_DAY
        self.continuous = config.scenario == "promotion" and config.action_space == "continuous"
        self.catalog = Catalog.build(config, np.random.default_rng([self.seed, _S_CATALOG]))
        self.pop = Population.build(
            config,
            np.random.default_rng([self.seed, _S_POP]),
            np.random.default_rng([self.seed, _S_BOT_POP]),
        )
        self.round = 0
        self.n_sessions_started = 0
        self.truth_parts: list[dict[str, np.ndarray]] = []
        n, k = self.pop.size, config.n_categories
        # Recommendation: the session in progress per user.
        self.in_session = np.zeros(n, bool)
        self.cur_session = np.full(n, -1, np.int64)
        self.cur_step = np.zeros(n, np.int32)
        self.cur_device = np.zeros(n, np.int64)
        self.cur_channel = np.zeros(n, np.int64)
        self.cur_login = np.zeros(n, np.int64)
        self.cur_start = np.zeros(n, np.int64)
        self.page_ts = np.zeros(n, np.int64)
        self.session_recs = np.zeros((n, k))
        self.session_clicks = np.zeros(n)
        self.cart = np.full((n, config.max_pages + 1), -1, np.int64)
        self.cart_n = np.zeros(n, np.int64)
        self.event_seq = np.zeros(n, np.int64)

    # ------------------------------------------------------------------ helpers
    def _rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, self.round])

    def _dirt_rng(self, sub: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _S_DIRT, self.round, sub])

    def _draw_context(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Device and channel of new sessions (real users and bots on separate streams)."""
        device = np.zeros(len(users), np.int64)
        channel = np.zeros(len(users), np.int64)
        bot = self.pop.is_bot[users]
        for mask, stream in ((~bot, _S_CONTEXT), (bot, _S_BOT_CONTEXT)):
            if mask.any():
                rng = self._rng(stream)
                device[mask] = categorical(rng, self.pop.device_probs[users[mask]])
                channel[mask] = categorical(rng, self.pop.channel_probs[users[mask]])
        return device, channel

    def _session_starts(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start times (with the midnight dirt) and login times (anonymous dirt) of new sessions."""
        dirt = self.config.dirt
        ts = self.pop.next_ts[users].copy()
        n = len(users)
        rng = self._dirt_rng(1)
        midnight = rng.random(n) < dirt.midnight_rate
        shift = (23 * 3600 + 57 * 60 + rng.random(n) * 170) * US_PER_S
        if dirt.midnight_sessions:
            day = (ts - self.t_start) // US_PER_DAY * US_PER_DAY + self.t_start
            ts = np.where(midnight, day + shift.astype(np.int64), ts)
        anonymous = rng.random(n) < dirt.anonymous_rate
        login_delay = (5 + rng.random(n) * 80) * US_PER_S
        login = np.zeros(n, np.int64)
        if dirt.anonymous:
            human = ~self.pop.is_bot[users]
            login = np.where(anonymous & human, ts + login_delay.astype(np.int64), 0)
        return ts, login

    def _keyed_uniforms(self, users: np.ndarray, k: int) -> np.ndarray:
        """``k`` uniforms per user that depend only on (seed, round, user): common random
        numbers, so that two policies' rollouts stay coupled user by user (tighter paired
        comparisons of true values)."""
        rng = self._rng(_S_KEYED)
        return rng.random((self.config.n_users, k))[users]

    def _next_visit(
        self,
        rng: np.random.Generator,
        users: np.ndarray,
        t0: np.ndarray,
        churned: np.ndarray,
        uniform: np.ndarray | None = None,
    ) -> None:
        """Schedule the next session (always within ``churn_days``) or retire churned users."""
        pop = self.pop
        n = len(users)
        mean_gap = np.clip(2.0 - 0.8 * pop.intent[users], 0.3, None)
        u = rng.random(n) if uniform is None else uniform
        extra = np.floor(-mean_gap * np.log1p(-np.minimum(u, 1 - 1e-12)))
        g = 1 + np.minimum(extra, self.config.churn_days - 2).astype(np.int64)
        g = np.where(pop.is_bot[users], 1 + rng.integers(0, 3, n), g)
        day = (t0 - self.t_start) // US_PER_DAY * US_PER_DAY + self.t_start
        pop.next_ts[users] = day + g * US_PER_DAY + time_of_day(rng, n)
        pop.active[users] = ~churned

    def _login_events(self, ev: Blocks, p: Pending, sel: np.ndarray) -> None:
        has = p.login_ts[sel] > 0
        if has.any():
            idx = sel[has]
            ev.add(
                _u=p.users[idx],
                _s=p.session[idx],
                ts=p.login_ts[idx],
                etype=ET["other"],
                _k=1,
                sdev=p.device[idx],
                _login=p.login_ts[idx],
            )

    def _reversals(
        self,
        rng: np.random.Generator,
        orders: Blocks,
        line_order: np.ndarray,
        order_ts: np.ndarray,
        cols: dict[str, np.ndarray],
        extra_return: np.ndarray,
    ) -> None:
        """Cancellations (whole order) and returns (per line) of the lines just placed.

        ``line_order`` maps each line to its order (0..n_orders-1), ``cols`` holds the placed
        lines' columns, ``extra_return`` multiplies each line's return probability.
        """
        dirt = self.config.dirt.reversals
        n_orders, n_lines = len(order_ts), len(line_order)
        u_cancel = rng.random(n_orders)
        cancel_delay = (600 + rng.random(n_orders) * 86_000) * US_PER_S
        u_return = rng.random(n_lines)
        return_delay = (2 + rng.random(n_lines) * 18) * US_PER_DAY
        u_partial = rng.random(n_lines)
        u_refund = rng.random(n_lines)
        qty = cols["qty"]
        partial_q = 1 + np.floor(rng.random(n_lines) * np.maximum(qty - 1, 1)).astype(np.int32)
        cancel_p = self.config.cancel_rate * (3.0 if dirt else 1.0)
        return_p = self.config.return_rate * extra_return * (2.5 if dirt else 1.0)
        cancelled = u_cancel < cancel_p
        line_cancelled = cancelled[line_order]
        returned = (~line_cancelled) & (u_return < return_p)
        # cancellations: R1 with every line of the order
        ts_c = (order_ts + cancel_delay.astype(np.int64))[line_order]
        keep = line_cancelled & (ts_c < self.t_end)
        if keep.any():
            orders.add(
                **{k: v[keep] for k, v in cols.items()},
                ts=ts_c[keep],
                status=1,
                rev_n=1,
            )
        if returned.any():
            r_qty = np.where(dirt & (qty > 1) & (u_partial < 0.5), partial_q, qty)
            frac = r_qty / qty
            status = np.where(dirt & (u_refund < 0.3), 3, 2)
            # number the returns of each order 1, 2, ... in line order
            rev_n = np.zeros(n_lines, np.int32)
            ret_idx = np.flatnonzero(returned)
            ro = line_order[ret_idx]
            first = np.r_[True, ro[1:] != ro[:-1]]
            grp_start = np.maximum.accumulate(np.where(first, np.arange(len(ro)), 0))
            rev_n[ret_idx] = np.arange(len(ro)) - grp_start + 1
            ts_r = order_ts[line_order] + return_delay.astype(np.int64)
            keep = returned & (ts_r < self.t_end)
            if keep.any():
                cc = {k: v[keep] for k, v in cols.items()}
                cc["qty"] = r_qty[keep].astype(np.int32)
                cc["disc"] = cols["disc"][keep] * frac[keep]
                cc["margin"] = cols["margin"][keep] * frac[keep]
                orders.add(**cc, ts=ts_r[keep], status=status[keep], rev_n=rev_n[keep])

    # ------------------------------------------------------------------ rounds
    def pending(self) -> Pending | None:
        """The next round's decisions, or ``None`` when the simulation is over."""
        if self.config.scenario == "promotion":
            return self._pending_promotion()
        return self._pending_recommendation()

    def step(
        self, p: Pending, actions: np.ndarray, propensity: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Play one round out; returns the events and order-line blocks it emitted."""
        if self.config.scenario == "promotion":
            out = self._step_promotion(p, actions, propensity)
        else:
            out = self._step_recommendation(p, actions, propensity)
        self.round += 1
        return out

    # ------------------------------------------------------------------ promotion
    def _pending_promotion(self) -> Pending | None:
        pop = self.pop
        users = np.flatnonzero(pop.active & (pop.next_ts < self.t_end))
        if len(users) == 0:
            return None
        device, channel = self._draw_context(users)
        ts, login = self._session_starts(users)
        session = session_codes(pop.user_code[users], pop.n_sessions[users])
        obs = promotion_observation(pop, users, ts, device, channel)
        self.event_seq[users] = 0
        return Pending(
            users=users,
            ts=ts,
            session=session,
            step=np.zeros(len(users), np.int32),
            device=device,
            channel=channel,
            login_ts=login,
            observation=obs,
            is_bot=pop.is_bot[users],
        )

    def _page_views(
        self, rng: np.random.Generator, n_pv: np.ndarray, t0: np.ndarray, mean_gap_s: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parent, _rank = _segments(n_pv)
        gaps = rng.exponential(mean_gap_s, len(parent)) * US_PER_S + US_PER_S
        t = t0[parent] + 2 * US_PER_S + _segment_cumsum(gaps, parent, len(n_pv)).astype(np.int64)
        last = np.zeros(len(n_pv), np.int64)
        np.maximum.at(last, parent, t)
        return parent, t, last

    def _step_promotion(
        self, p: Pending, actions: np.ndarray, propensity: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        ev = Blocks(EVENT_COLUMNS)
        orders = Blocks(ORDER_COLUMNS)
        offer = _promotion_offer(p, actions, continuous=self.continuous)
        ev.add(
            _u=p.users,
            _s=p.session,
            ts=p.ts,
            etype=ET["decision"],
            _k=0,
            dstep=0,
            action_i=offer.action_i,
            action_f=offer.action_f,
            prop=propensity,
            device=p.device,
            channel=p.channel,
            sdev=p.device,
            _login=p.login_ts,
        )
        real = np.flatnonzero(~p.is_bot)
        bots = np.flatnonzero(p.is_bot)
        self._login_events(ev, p, real)
        truth = self._promotion_truth(p, offer, propensity)
        self._promotion_real_users(ev, orders, p, real, offer, truth)
        if len(bots):
            self._promotion_bots(ev, p, bots)
        # observable counters of everyone who decided this round
        pop = self.pop
        pop.n_sessions[p.users] += 1
        incentive = (offer.rate >= 0.01) | offer.free_ship
        pop.n_incentives[p.users] += incentive
        pop.last_rate[p.users] = offer.rate
        pop.last_ts[p.users] = p.ts
        self.n_sessions_started += p.size
        self.truth_parts.append(truth)
        return ev.build(), orders.build()

    def _promotion_truth(
        self, p: Pending, offer: _Offer, propensity: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The round's truth block; purchase probability and churn are filled in later."""
        pop, n = self.pop, p.size
        return {
            "_u": p.users,
            "_s": p.session,
            "ts": p.ts,
            "step": p.step,
            "action_i": offer.action_i,
            "action_f": offer.action_f,
            "prop": propensity,
            "is_bot": p.is_bot,
            "h_price_sensitivity": pop.price_sensitivity[p.users].copy(),
            "h_discount_expectation": pop.discount_expectation[p.users].copy(),
            "h_intent": pop.intent[p.users].copy(),
            "h_churn_risk": pop.churn_risk[p.users].copy(),
            "h_purchase_probability": np.zeros(n),
            "churned": np.zeros(n, bool),
        }

    def _promotion_real_users(
        self,
        ev: Blocks,
        orders: Blocks,
        p: Pending,
        real: np.ndarray,
        offer: _Offer,
        truth: dict[str, np.ndarray],
    ) -> None:
        """The real users' sessions: purchase decision, browsing, basket, order, then the
        expectation, churn and next visit."""
        pop = self.pop
        rng = self._rng(_S_OUTCOME)
        v = _Visits.of(p, real)
        u = v.users
        s, e = pop.price_sensitivity[u], pop.discount_expectation[u]
        n_ord = pop.n_orders[u]
        gap = offer.perceived[real] - e
        response = self.config.promotion_response
        lift = sensitivity(s, n_ord) * np.where(gap >= 0, gap, response.loss_aversion * gap)
        logit = (
            BASE_LOGIT
            + pop.intent[u]
            - FULL_PRICE_AVERSION * s
            + HABIT * np.log1p(n_ord)
            + CHANNEL_EFFECT[v.channel]
            + DEVICE_EFFECT[v.device]
            + lift
        )
        p_buy = sigmoid(logit)
        keyed = self._keyed_uniforms(u, 3)
        buy = keyed[:, 0] < p_buy
        truth["h_purchase_probability"][real] = p_buy
        t_last = self._promotion_browsing(rng, ev, v, buy)
        lines = self._promotion_basket(
            rng, ev, v, buy, t_last, offer.rate[real], offer.free_ship[real]
        )
        co_ts = self._promotion_cart_extras(rng, ev, v, buy, t_last, lines.n_lines)
        extra_return = 1.0 + 2.0 * s[lines.parent] * offer.perceived[real][lines.parent]
        self._promotion_orders(rng, ev, orders, v, buy, co_ts, lines, extra_return)
        # state: expectation, churn, counters
        pr = offer.perceived[real]
        pop.discount_expectation[u] = np.where(
            pr > e,
            e + response.expectation_rise * (pr - e),
            e * (1.0 - response.expectation_decay),
        )
        churn_logit = (
            np.log(pop.churn_risk[u] / (1 - pop.churn_risk[u])) - CHURN_AFTER_PURCHASE * buy
        )
        churned = keyed[:, 1] < sigmoid(churn_logit)
        truth["churned"][real] = churned
        pop.n_orders[u] += buy
        self._next_visit(rng, u, v.ts, churned, keyed[:, 2])

    def _promotion_browsing(
        self, rng: np.random.Generator, ev: Blocks, v: _Visits, buy: np.ndarray
    ) -> np.ndarray:
        """Page views and item views (more of them for buyers); returns each session's last
        page-view time."""
        pop, cat = self.pop, self.catalog
        u, sess, dev, login = v.users, v.session, v.device, v.login
        n_pv = 1 + rng.poisson(1.2 + 2.0 * buy)
        par, t_pv, t_last = self._page_views(rng, n_pv, v.ts, 30.0)
        ev.add(
            _u=u[par],
            _s=sess[par],
            ts=t_pv,
            etype=ET["page_view"],
            _k=2,
            sdev=dev[par],
            _login=login[par],
        )
        viewed = rng.random(len(par)) < 0.6
        vi_item = cat.draw_items(rng, pop.prefs[u[par]])
        vpar = par[viewed]
        vi_ts = t_pv[viewed] + ((1 + 5 * rng.random(len(vpar))) * US_PER_S).astype(np.int64)
        ev.add(
            _u=u[vpar],
            _s=sess[vpar],
            ts=vi_ts,
            etype=ET["view_item"],
            _k=3,
            item=vi_item[viewed],
            price=cat.price[vi_item[viewed]],
            sdev=dev[vpar],
            _login=login[vpar],
        )
        return t_last

    def _promotion_basket(
        self,
        rng: np.random.Generator,
        ev: Blocks,
        v: _Visits,
        buy: np.ndarray,
        t_last: np.ndarray,
        rate: np.ndarray,
        free_ship: np.ndarray,
    ) -> _Lines:
        """The buyers' basket lines (discounted at ``rate``, or the shipping fee off the first
        line with free shipping) and their add-to-cart events."""
        pop, cat = self.pop, self.catalog
        u, sess, dev, login = v.users, v.session, v.device, v.login
        n_lines = np.where(buy, 1 + rng.binomial(3, EXTRA_LINE_P[dev]), 0)
        lpar, lrank = _segments(n_lines)
        l_item = cat.draw_items(rng, pop.prefs[u[lpar]])
        l_qty = (1 + rng.poisson(0.25, len(lpar))).astype(np.int32)
        l_price = cat.price[l_item]
        l_margin = np.round(l_qty * (l_price - cat.cost[l_item]), 2)
        l_disc = np.round(l_qty * l_price * rate[lpar], 2)
        l_disc = np.where(free_ship[lpar] & (lrank == 0), SHIPPING_FEE, l_disc)
        cart_ts = t_last[lpar] + (8 * (lrank + 1)) * US_PER_S
        ev.add(
            _u=u[lpar],
            _s=sess[lpar],
            ts=cart_ts,
            etype=ET["add_to_cart"],
            _k=4,
            item=l_item,
            price=l_price,
            sdev=dev[lpar],
            _login=login[lpar],
        )
        return _Lines(n_lines, lpar, lrank, l_item, l_qty, l_price, l_disc, l_margin)

    def _promotion_cart_extras(
        self,
        rng: np.random.Generator,
        ev: Blocks,
        v: _Visits,
        buy: np.ndarray,
        t_last: np.ndarray,
        n_lines: np.ndarray,
    ) -> np.ndarray:
        """A buyer sometimes drops an extra item; a non-buyer sometimes abandons a cart (at the
        checkout or before). Returns each session's checkout time."""
        pop, cat = self.pop, self.catalog
        u, sess, dev, login = v.users, v.session, v.device, v.login
        m = len(u)
        extra = rng.random(m) < np.where(buy, 0.1, 0.12)
        x_item = cat.draw_items(rng, pop.prefs[u])
        x_ts = t_last + (8 * (n_lines + 1)) * US_PER_S
        remove = extra & (buy | (rng.random(m) < 0.4))
        checkout_abandon = extra & ~buy & (rng.random(m) < 0.3)
        ix = np.flatnonzero(extra)
        ev.add(
            _u=u[ix],
            _s=sess[ix],
            ts=x_ts[ix],
            etype=ET["add_to_cart"],
            _k=4,
            item=x_item[ix],
            price=cat.price[x_item[ix]],
            sdev=dev[ix],
            _login=login[ix],
        )
        ir = np.flatnonzero(remove)
        ev.add(
            _u=u[ir],
            _s=sess[ir],
            ts=x_ts[ir] + 5 * US_PER_S,
            etype=ET["remove_from_cart"],
            _k=5,
            item=x_item[ir],
            price=cat.price[x_item[ir]],
            sdev=dev[ir],
            _login=login[ir],
        )
        co_ts = x_ts + 20 * US_PER_S
        ic = np.flatnonzero(buy | checkout_abandon)
        ev.add(
            _u=u[ic],
            _s=sess[ic],
            ts=co_ts[ic],
            etype=ET["begin_checkout"],
            _k=6,
            sdev=dev[ic],
            _login=login[ic],
        )
        return np.asarray(co_ts)

    def _promotion_orders(
        self,
        rng: np.random.Generator,
        ev: Blocks,
        orders: Blocks,
        v: _Visits,
        buy: np.ndarray,
        co_ts: np.ndarray,
        lines: _Lines,
        extra_return: np.ndarray,
    ) -> None:
        """The buyers' purchase events and order lines, then their cancellations and returns."""
        u, sess, dev, login = v.users, v.session, v.device, v.login
        lpar = lines.parent
        ib = np.flatnonzero(buy)
        order_ts = co_ts[ib] + 45 * US_PER_S
        line_order = np.searchsorted(ib, lpar)  # lines are grouped by buyer, buyers sorted
        revenue = np.bincount(line_order, lines.qty * lines.price - lines.disc, minlength=len(ib))
        ev.add(
            _u=u[ib],
            _s=sess[ib],
            ts=order_ts,
            etype=ET["purchase"],
            _k=7,
            price=np.round(revenue, 2),
            order=True,
            sdev=dev[ib],
            _login=login[ib],
        )
        cols = {
            "_u": u[lpar],
            "_s": sess[lpar],
            "line": (lines.rank + 1).astype(np.int32),
            "item": lines.item,
            "qty": lines.qty,
            "price": lines.price,
            "disc": lines.disc,
            "margin": lines.margin,
            "sdev": dev[lpar],
        }
        orders.add(**cols, ts=order_ts[line_order], status=0, rev_n=0)
        self._reversals(rng, orders, line_order, order_ts, cols, extra_return)

    def _promotion_bots(self, ev: Blocks, p: Pending, bots: np.ndarray) -> None:
        """Bots: huge page-view bursts, never a cart."""
        cat = self.catalog
        brng = self._rng(_S_BOT_OUTCOME)
        bu = p.users[bots]
        n_pv = 30 + brng.poisson(40, len(bu))
        par, t_pv, _ = self._page_views(brng, n_pv, p.ts[bots], 1.5)
        bs, bd = p.session[bots], p.device[bots]
        ev.add(_u=bu[par], _s=bs[par], ts=t_pv, etype=ET["page_view"], _k=2, sdev=bd[par])
        viewed = brng.random(len(par)) < 0.9
        item = brng.integers(0, len(cat.price), len(par))[viewed]
        vpar = par[viewed]
        ev.add(
            _u=bu[vpar],
            _s=bs[vpar],
            ts=t_pv[viewed] + US_PER_S // 2,
            etype=ET["view_item"],
            _k=3,
            item=item,
            price=cat.price[item],
            sdev=bd[vpar],
        )
        self._next_visit(brng, bu, p.ts[bots], np.zeros(len(bu), bool))

    # ------------------------------------------------------------------ recommendation
    def _pending_recommendation(self) -> Pending | None:
        pop = self.pop
        if not self.in_session.any():
            users = np.flatnonzero(pop.active & (pop.next_ts < self.t_end))
            if len(users) == 0:
                return None
            device, channel = self._draw_context(users)
            ts, login = self._session_starts(users)
            self.in_session[users] = True
            self.cur_session[users] = session_codes(pop.user_code[users], pop.n_sessions[users])
            self.n_sessions_started += len(users)
            self.cur_step[users] = 0
            self.cur_device[users] = device
            self.cur_channel[users] = channel
            self.cur_login[users] = login
            self.cur_start[users] = ts
            self.page_ts[users] = ts
            self.session_recs[users] = 0.0
            self.session_clicks[users] = 0.0
            self.cart[users] = -1
            self.cart_n[users] = 0
            self.event_seq[users] = 0
        users = np.flatnonzero(self.in_session)
        obs = recommendation_observation(
            pop,
            users,
            self.cur_device[users],
            self.cur_channel[users],
            self.cur_step[users],
            self.session_recs[users],
        )
        return Pending(
            users=users,
            ts=self.page_ts[users],
            session=self.cur_session[users],
            step=self.cur_step[users].copy(),
            device=self.cur_device[users],
            channel=self.cur_channel[users],
            login_ts=self.cur_login[users],
            observation=obs,
            is_bot=pop.is_bot[users],
        )

    def _step_recommendation(
        self, p: Pending, actions: np.ndarray, propensity: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        ev = Blocks(EVENT_COLUMNS)
        orders = Blocks(ORDER_COLUMNS)
        a = np.asarray(actions, np.int64)
        ev.add(
            _u=p.users,
            _s=p.session,
            ts=p.ts,
            etype=ET["decision"],
            _k=0,
            dstep=p.step,
            action_i=a,
            prop=propensity,
            device=p.device,
            channel=p.channel,
            sdev=p.device,
            _login=p.login_ts,
        )
        first_step = np.flatnonzero(p.step == 0)
        self._login_events(ev, p, first_step)
        pv_ts = p.ts + US_PER_S // 2
        ev.add(
            _u=p.users,
            _s=p.session,
            ts=pv_ts,
            etype=ET["page_view"],
            _k=2,
            sdev=p.device,
            _login=p.login_ts,
        )
        truth = self._recommendation_truth(p, a, propensity)
        real = np.flatnonzero(~p.is_bot)
        bots = np.flatnonzero(p.is_bot)
        cont = np.zeros(p.size, bool)
        # ---- real users
        rng = self._rng(_S_OUTCOME)
        v = _Visits.of(p, real)
        go_on = self._recommendation_page(rng, ev, v, a[real], p.step[real], truth, real)
        cont[real] = go_on
        self._recommendation_session_ends(rng, ev, orders, v, np.flatnonzero(~go_on), truth, real)
        if len(bots):
            self._recommendation_bots(ev, p, bots, cont)
        # bookkeeping
        pop = self.pop
        self.session_recs[p.users, a] += 1.0
        self.cur_step[p.users] += 1
        ended = p.users[~cont]
        truth["last"] = ~cont
        self.in_session[ended] = False
        pop.n_sessions[ended] += 1
        pop.last_ts[ended] = self.cur_start[ended]
        self.truth_parts.append(truth)
        return ev.build(), orders.build()

    def _recommendation_truth(
        self, p: Pending, a: np.ndarray, propensity: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The round's truth block; the outcomes are filled in later."""
        pop, n = self.pop, p.size
        return {
            "_u": p.users,
            "_s": p.session,
            "ts": p.ts,
            "step": p.step,
            "action_i": a,
            "action_f": np.full(n, np.nan),
            "prop": propensity,
            "is_bot": p.is_bot,
            "h_churn_risk": pop.churn_risk[p.users].copy(),
            "h_preference_of_action": pop.prefs[p.users, a].copy(),
            "h_click_probability": np.zeros(n),
            "click": np.zeros(n),
            "add_to_cart": np.zeros(n),
            "purchase": np.zeros(n),
            "revenue": np.zeros(n),
            "churned": np.zeros(n, bool),
            "last": np.zeros(n, bool),
        }

    def _recommendation_page(
        self,
        rng: np.random.Generator,
        ev: Blocks,
        v: _Visits,
        ar: np.ndarray,
        step: np.ndarray,
        truth: dict[str, np.ndarray],
        real: np.ndarray,
    ) -> np.ndarray:
        """The real users' page: a click on the recommended category ``ar``, an organic item
        view, add to cart; returns whether each session goes on to another page."""
        pop = self.pop
        u, ts, dev = v.users, v.ts, v.device
        m = len(u)
        recs = self.session_recs[u, ar]
        click_logit = (
            -1.3
            + 1.0 * np.log(self.config.n_categories * pop.prefs[u, ar] + 1e-3)
            - 0.7 * recs
            + 0.3 * (dev == 2)
            + 0.3 * pop.intent[u]
        )
        p_click = sigmoid(click_logit)
        truth["h_click_probability"][real] = p_click
        click = rng.random(m) < p_click
        carted = self._recommendation_views(rng, ev, v, ar, click)
        self.session_clicks[u] += click
        truth["click"][real] = click
        truth["add_to_cart"][real] = carted
        step_next = step + 1
        go_on = (rng.random(m) < sigmoid(0.6 + 0.9 * click - 0.15 * step)) & (
            step_next < self.config.max_pages
        )
        next_gap = ((15 + rng.exponential(35.0, m)) * US_PER_S).astype(np.int64)
        self.page_ts[u] = ts + next_gap
        return np.asarray(go_on)

    def _recommendation_views(
        self, rng: np.random.Generator, ev: Blocks, v: _Visits, ar: np.ndarray, click: np.ndarray
    ) -> np.ndarray:
        """The real users' clicks on the recommendation (an item of category ``ar``), organic
        item views and adds to cart (of the clicked item); returns who added to cart."""
        pop, cat = self.pop, self.catalog
        u, ts, sess, dev, login = v.users, v.ts, v.session, v.device, v.login
        m = len(u)
        c_item = cat.items_in(rng, ar)
        ic = np.flatnonzero(click)
        ev.add(
            _u=u[ic],
            _s=sess[ic],
            ts=ts[ic] + 3 * US_PER_S,
            etype=ET["click"],
            _k=3,
            item=c_item[ic],
            price=cat.price[c_item[ic]],
            position=1,
            sdev=dev[ic],
            _login=login[ic],
        )
        ev.add(
            _u=u[ic],
            _s=sess[ic],
            ts=ts[ic] + 4 * US_PER_S,
            etype=ET["view_item"],
            _k=4,
            item=c_item[ic],
            price=cat.price[c_item[ic]],
            sdev=dev[ic],
            _login=login[ic],
        )
        organic = rng.random(m) < 0.35
        o_item = cat.draw_items(rng, pop.prefs[u])
        io = np.flatnonzero(organic)
        ev.add(
            _u=u[io],
            _s=sess[io],
            ts=ts[io] + 6 * US_PER_S,
            etype=ET["view_item"],
            _k=5,
            item=o_item[io],
            price=cat.price[o_item[io]],
            sdev=dev[io],
            _login=login[io],
        )
        carted = click & (rng.random(m) < 0.22 + 0.1 * (pop.intent[u] > 0))
        ia = np.flatnonzero(carted)
        ev.add(
            _u=u[ia],
            _s=sess[ia],
            ts=ts[ia] + 10 * US_PER_S,
            etype=ET["add_to_cart"],
            _k=6,
            item=c_item[ia],
            price=cat.price[c_item[ia]],
            sdev=dev[ia],
            _login=login[ia],
        )
        self.cart[u[ia], self.cart_n[u[ia]]] = c_item[ia]
        self.cart_n[u[ia]] += 1
        np.add.at(pop.views, (u[ic], ar[ic]), 1.0)
        np.add.at(pop.views, (u[io], cat.category[o_item[io]]), 1.0)
        return np.asarray(carted)

    def _recommendation_session_ends(
        self,
        rng: np.random.Generator,
        ev: Blocks,
        orders: Blocks,
        v: _Visits,
        end: np.ndarray,
        truth: dict[str, np.ndarray],
        real: np.ndarray,
    ) -> None:
        """The real sessions that end here (rows ``end`` of ``v``): checkout of the cart or a
        dropped item, then churn or the next visit."""
        pop = self.pop
        u = v.users
        m = len(u)
        ue = u[end]
        has_cart = self.cart_n[ue] > 0
        buy = has_cart & (rng.random(len(end)) < 0.5)
        drop = has_cart & ~buy & (rng.random(len(end)) < 0.3)
        ib = end[buy]
        ub = ue[buy]
        revenue = self._recommendation_checkout(rng, ev, orders, v, ib)
        idrop = end[drop]
        d_item = self.cart[u[idrop], 0]
        ev.add(
            _u=u[idrop],
            _s=v.session[idrop],
            ts=v.ts[idrop] + 25 * US_PER_S,
            etype=ET["remove_from_cart"],
            _k=7,
            item=d_item,
            price=self.catalog.price[d_item],
            sdev=v.device[idrop],
            _login=v.login[idrop],
        )
        pur = np.zeros(m)
        rev = np.zeros(m)
        pur[ib] = 1.0
        rev[ib] = revenue
        truth["purchase"][real] = pur
        truth["revenue"][real] = rev
        churn_logit = (
            np.log(pop.churn_risk[ue] / (1 - pop.churn_risk[ue]))
            - 0.15 * self.session_clicks[ue]
            - 0.5 * buy
        )
        churned = rng.random(len(end)) < sigmoid(churn_logit)
        ch_full = np.zeros(m, bool)
        ch_full[end] = churned
        truth["churned"][real] = ch_full
        pop.n_orders[ub] += 1
        self._next_visit(rng, ue, self.cur_start[ue], churned)

    def _recommendation_checkout(
        self, rng: np.random.Generator, ev: Blocks, orders: Blocks, v: _Visits, ib: np.ndarray
    ) -> np.ndarray:
        """The buyers' (rows ``ib`` of ``v``) checkout and purchase of their cart, the order
        lines and their reversals; returns each buyer's revenue."""
        cat = self.catalog
        sess, dev, login = v.session, v.device, v.login
        ub = v.users[ib]
        co_ts = v.ts[ib] + 20 * US_PER_S
        order_ts = co_ts + 30 * US_PER_S
        ev.add(
            _u=ub,
            _s=sess[ib],
            ts=co_ts,
            etype=ET["begin_checkout"],
            _k=7,
            sdev=dev[ib],
            _login=login[ib],
        )
        n_lines = self.cart_n[ub]
        lpar, lrank = _segments(n_lines)
        l_item = self.cart[ub[lpar], lrank]
        l_qty = (1 + rng.poisson(0.2, len(lpar))).astype(np.int32)
        l_price = cat.price[l_item]
        l_margin = np.round(l_qty * (l_price - cat.cost[l_item]), 2)
        revenue = np.bincount(lpar, l_qty * l_price, minlength=len(ub))
        ev.add(
            _u=ub,
            _s=sess[ib],
            ts=order_ts,
            etype=ET["purchase"],
            _k=8,
            price=np.round(revenue, 2),
            order=True,
            sdev=dev[ib],
            _login=login[ib],
        )
        cols = {
            "_u": ub[lpar],
            "_s": sess[ib][lpar],
            "line": (lrank + 1).astype(np.int32),
            "item": l_item,
            "qty": l_qty,
            "price": l_price,
            "disc": np.zeros(len(lpar)),
            "margin": l_margin,
            "sdev": dev[ib][lpar],
        }
        orders.add(**cols, ts=order_ts[lpar], status=0, rev_n=0)
        self._reversals(rng, orders, lpar, order_ts, cols, np.ones(len(lpar)))
        return np.asarray(revenue)

    def _recommendation_bots(
        self, ev: Blocks, p: Pending, bots: np.ndarray, cont: np.ndarray
    ) -> None:
        """Bots: a burst of item views on every page, always ``max_pages`` pages (sets ``cont``
        of the bots' rows)."""
        cat = self.catalog
        brng = self._rng(_S_BOT_OUTCOME)
        bu = p.users[bots]
        n_vi = 5 + brng.poisson(15, len(bu))
        par, rank = _segments(n_vi)
        item = brng.integers(0, len(cat.price), len(par))
        vts = p.ts[bots][par] + US_PER_S + rank * (US_PER_S // 2)
        ev.add(
            _u=bu[par],
            _s=p.session[bots][par],
            ts=vts,
            etype=ET["view_item"],
            _k=5,
            item=item,
            price=cat.price[item],
            sdev=p.device[bots][par],
        )
        bnext = p.step[bots] + 1 < self.config.max_pages
        cont[bots] = bnext
        self.page_ts[bu] = p.ts[bots] + 15 * US_PER_S
        bend = bu[~bnext]
        self._next_visit(brng, bend, self.cur_start[bend], np.zeros(len(bend), bool))
