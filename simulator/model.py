"""The behaviour model: constants, the user population, the catalogue and the observation layout.

Everything the logs never show (price sensitivity, discount expectation, intent, churn risk,
category preferences) lives in :class:`Population`; the observable counters (past sessions,
orders, incentives) are what the ETL can rebuild from the raw logs, and the default observation
of the online rollout is built from them only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from simulator.config import SimulatorConfig

US_PER_S = 1_000_000
US_PER_DAY = 86_400 * US_PER_S

EVENT_TYPES = (
    "page_view",
    "impression",
    "view_item",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "begin_checkout",
    "purchase",
    "refund",
    "decision",
    "other",
)
ET = {name: code for code, name in enumerate(EVENT_TYPES)}

TIERS = ("none", "pct_5", "pct_10", "free_shipping")
TIER_RATE = np.array([0.0, 0.05, 0.10, 0.0])
SHIPPING_FEE = 4.90
MAX_RATE = 0.3
DEVICES = ("mobile", "desktop", "app")
CHANNELS = ("direct", "search", "email", "social")
STATUSES = ("placed", "cancelled", "returned", "refunded")
CURRENCY = "EUR"

# Free shipping is perceived relative to a typical basket on the device: on a phone baskets are
# small and the shipping fee weighs more.
DEAL_SEEKER_SHARE = 0.25
BASKET_REF = np.array([30.0, 70.0, 55.0])  # mobile, desktop, app
FREE_SHIPPING_PERCEIVED = 0.7 * SHIPPING_FEE / BASKET_REF

PROMOTION_FEATURES = (
    "device_mobile",
    "device_desktop",
    "device_app",
    "channel_direct",
    "channel_search",
    "channel_email",
    "channel_social",
    "first_visit",
    "log_past_orders",
    "log_past_sessions",
    "days_since_last_visit",
    "past_incentive_share",
    "last_discount_rate",
)


def recommendation_features(n_categories: int) -> tuple[str, ...]:
    """Names of the recommendation scenario's default observation."""
    base = (
        "device_mobile",
        "device_desktop",
        "device_app",
        "channel_direct",
        "channel_search",
        "channel_email",
        "channel_social",
        "step",
        "first_session",
        "log_past_sessions",
    )
    views = tuple(f"log_views_cat_{c:02d}" for c in range(n_categories))
    recs = tuple(f"session_recs_cat_{c:02d}" for c in range(n_categories))
    return base + views + recs


def action_labels(config: SimulatorConfig) -> tuple[str, ...]:
    """Labels of the discrete actions, in index order (empty for the continuous space)."""
    if config.scenario == "recommendation":
        return tuple(f"cat_{c:02d}" for c in range(config.n_categories))
    if config.action_space == "continuous":
        return ()
    return TIERS


def start_us(config: SimulatorConfig) -> int:
    """The data window's start, 00:00 UTC of ``start_date``, in microseconds since the epoch."""
    start = dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC)
    return int(start.timestamp()) * US_PER_S


def arrival_window(config: SimulatorConfig) -> int:
    """Days over which the users' first visits are spread: ``arrival_days`` (at most ``days``),
    or the whole simulated period when it is ``None``."""
    if config.arrival_days is None:
        return config.days
    return min(config.arrival_days, config.days)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a (n, k) probability matrix (inverse CDF, one uniform per row)."""
    cum = np.cumsum(probs, axis=1)
    u = np.asarray(rng.random(probs.shape[0]))[:, None] * cum[:, -1:]
    return np.minimum((u >= cum).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


def time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Session start time of day in microseconds: 06:00 to 22:30 UTC, evening-heavy."""
    frac = rng.beta(2.2, 1.8, n)
    return (6 * 3600 * US_PER_S + frac * 16.5 * 3600 * US_PER_S).astype(np.int64)


def _distinct_codes(rng: np.random.Generator, n: int, space: int) -> np.ndarray:
    """``n`` distinct random integers in ``[0, space)``, in draw order."""
    draws = rng.integers(0, space, 2 * n + 16)
    _, first = np.unique(draws, return_index=True)
    codes = draws[np.sort(first)]
    if len(codes) < n:  # pragma: no cover - only for n close to space
        raise ValueError("id space too small")
    return np.asarray(codes[:n])


def session_codes(user_code: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Opaque, unique session numbers from (user code, the user's session index k < 1000)."""
    plain = user_code.astype(np.int64) * 1000 + np.minimum(k, 999)
    return np.asarray((plain * 387_420_489 + 1_234_567) % 10**10)


@dataclass
class Catalog:
    """Items: category, list price and unit cost."""

    category: np.ndarray
    price: np.ndarray
    cost: np.ndarray
    per_category: int

    @classmethod
    def build(cls, config: SimulatorConfig, rng: np.random.Generator) -> Catalog:
        k, m = config.n_categories, config.items_per_category
        category = np.repeat(np.arange(k), m)
        median = np.exp(rng.uniform(np.log(12.0), np.log(45.0), k))
        price = np.round(median[category] * np.exp(rng.normal(0.0, 0.45, k * m)), 1) - 0.01
        price = np.maximum(price, 2.99)
        margin_rate = rng.uniform(0.30, 0.50, k)
        cost = np.round(price * (1.0 - margin_rate[category]), 2)
        return cls(category=category, price=price, cost=cost, per_category=m)

    def draw_items(self, rng: np.random.Generator, prefs: np.ndarray) -> np.ndarray:
        """One item per row of a (n, K) category-preference matrix."""
        cat = categorical(rng, prefs)
        return np.asarray(cat * self.per_category + rng.integers(0, self.per_category, len(cat)))

    def items_in(self, rng: np.random.Generator, categories: np.ndarray) -> np.ndarray:
        """One random item of each given category."""
        pick = rng.integers(0, self.per_category, len(categories))
        return np.asarray(categories * self.per_category + pick)


@dataclass
class Population:
    """Users: hidden traits, hidden dynamic state and observable counters (one row per user)."""

    is_bot: np.ndarray
    price_sensitivity: np.ndarray
    intent: np.ndarray
    churn_risk: np.ndarray
    prefs: np.ndarray
    device_probs: np.ndarray
    channel_probs: np.ndarray
    user_code: np.ndarray
    anon_code: np.ndarray
    # hidden dynamic state
    discount_expectation: np.ndarray
    # observable counters (what the logs let anyone rebuild)
    n_sessions: np.ndarray
    n_orders: np.ndarray
    n_incentives: np.ndarray
    last_rate: np.ndarray
    last_ts: np.ndarray
    views: np.ndarray
    # scheduling
    next_ts: np.ndarray
    active: np.ndarray

    @property
    def size(self) -> int:
        return len(self.is_bot)

    @classmethod
    def build(
        cls, config: SimulatorConfig, rng: np.random.Generator, bot_rng: np.random.Generator
    ) -> Population:
        n = config.n_users
        n_bots = round(config.dirt.bot_fraction * n) if config.dirt.bots else 0
        k = config.n_categories
        # Two kinds of shoppers: deal seekers (a quarter) and the rest.
        deal_seeker = rng.random(n) < DEAL_SEEKER_SHARE
        s = np.where(deal_seeker, rng.beta(8.0, 2.5, n), rng.beta(2.0, 6.0, n))
        intent = rng.normal(0.0, 0.5, n)
        churn = rng.beta(2.0, 9.0, n)
        prefs = rng.dirichlet(np.full(k, 0.6), n)
        # Observable context carries a (noisy) signal of the hidden price sensitivity: bargain
        # hunters browse on their phones and arrive through e-mail offers and search.
        mobile = 0.1 + 0.65 * s**1.5
        app = np.clip(0.15 + 0.25 * intent, 0.05, 0.5) * (1.0 - mobile)
        device = np.stack([mobile, 1.0 - mobile - app, app], axis=1)
        channel = np.stack(
            [
                np.clip(0.5 + 0.3 * intent - 0.5 * s, 0.05, None),
                0.1 + 0.2 * s,
                0.02 + 0.6 * s**2,
                np.full(n, 0.12),
            ],
            axis=1,
        )
        channel /= channel.sum(axis=1, keepdims=True)
        arrival = arrival_window(config)
        first = rng.integers(0, arrival, n) * US_PER_DAY + time_of_day(rng, n)
        if n_bots:
            s = np.concatenate([s, np.zeros(n_bots)])
            intent = np.concatenate([intent, np.zeros(n_bots)])
            churn = np.concatenate([churn, np.zeros(n_bots)])
            prefs = np.concatenate([prefs, bot_rng.dirichlet(np.full(k, 5.0), n_bots)])
            bot_dev = np.tile([0.1, 0.9, 0.0], (n_bots, 1))
            device = np.concatenate([device, bot_dev])
            bot_ch = np.tile([0.7, 0.3, 0.0, 0.0], (n_bots, 1))
            channel = np.concatenate([channel, bot_ch])
            bot_first = bot_rng.integers(0, arrival, n_bots) * US_PER_DAY
            first = np.concatenate([first, bot_first + time_of_day(bot_rng, n_bots)])
        total = n + n_bots
        # Opaque ids, drawn without collisions; bots are not recognisable by their id and do
        # not change the real users' ids.
        user_code = _distinct_codes(np.random.default_rng([config.seed, 404]), n, 10**7)
        anon_code = _distinct_codes(np.random.default_rng([config.seed, 405]), 3 * n, 10**9)
        if n_bots:
            taken = set(user_code.tolist())
            extra = _distinct_codes(np.random.default_rng([config.seed, 406]), 4 * n_bots, 10**7)
            bot_codes = np.array([c for c in extra.tolist() if c not in taken][:n_bots])
            user_code = np.concatenate([user_code, bot_codes])
            bot_anon = _distinct_codes(np.random.default_rng([config.seed, 407]), 3 * n_bots, 10**9)
            anon_code = np.concatenate([anon_code, bot_anon])
        anon_code = anon_code.reshape(total, 3)
        return cls(
            is_bot=np.arange(total) >= n,
            price_sensitivity=s,
            intent=intent,
            churn_risk=churn,
            prefs=prefs,
            device_probs=device,
            channel_probs=channel,
            user_code=user_code,
            anon_code=anon_code,
            discount_expectation=np.zeros(total),
            n_sessions=np.zeros(total, np.int64),
            n_orders=np.zeros(total, np.int64),
            n_incentives=np.zeros(total, np.int64),
            last_rate=np.zeros(total),
            last_ts=np.full(total, -1, np.int64),
            views=np.zeros((total, k)),
            next_ts=first + start_us(config),
            active=np.ones(total, bool),
        )


def promotion_observation(
    pop: Population, users: np.ndarray, ts: np.ndarray, device: np.ndarray, channel: np.ndarray
) -> np.ndarray:
    """Default promotion observation (``PROMOTION_FEATURES``), from observable quantities only."""
    n = len(users)
    obs = np.zeros((n, len(PROMOTION_FEATURES)), np.float32)
    obs[np.arange(n), device] = 1.0
    obs[np.arange(n), 3 + channel] = 1.0
    sessions = pop.n_sessions[users]
    obs[:, 7] = sessions == 0
    obs[:, 8] = np.log1p(pop.n_orders[users])
    obs[:, 9] = np.log1p(sessions)
    last = pop.last_ts[users]
    obs[:, 10] = np.where(last >= 0, (ts - last) / US_PER_DAY, 0.0)
    obs[:, 11] = np.where(sessions > 0, pop.n_incentives[users] / np.maximum(sessions, 1), 0.0)
    obs[:, 12] = pop.last_rate[users]
    return obs


def recommendation_observation(
    pop: Population,
    users: np.ndarray,
    device: np.ndarray,
    channel: np.ndarray,
    step: np.ndarray,
    session_recs: np.ndarray,
) -> np.ndarray:
    """Default recommendation observation, from observable quantities only."""
    n = len(users)
    k = pop.views.shape[1]
    obs = np.zeros((n, 10 + 2 * k), np.float32)
    obs[np.arange(n), device] = 1.0
    obs[np.arange(n), 3 + channel] = 1.0
    obs[:, 7] = step
    obs[:, 8] = pop.n_sessions[users] == 0
    obs[:, 9] = np.log1p(pop.n_sessions[users])
    obs[:, 10 : 10 + k] = np.log1p(pop.views[users])
    obs[:, 10 + k :] = session_recs
    return obs
