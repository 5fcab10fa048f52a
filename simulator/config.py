"""Configuration of the simulator (the ``[simulator]`` table of the TOML config)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DirtConfig(BaseModel):
    """Real-world dirt injected into the raw logs; every flag is off by default.

    Each flag is independent. The dirt never changes what the users do (the truth record is
    the same with and without it, bots aside): it changes how the behaviour reaches the logs.
    """

    model_config = ConfigDict(extra="forbid")

    duplicates: bool = False
    """Re-send some events verbatim (same ``event_id``), as at-least-once trackers do."""
    duplicate_rate: float = Field(0.02, ge=0.0, le=0.5)

    late_events: bool = False
    """Some events arrive late: ``ingest_ts`` up to a day after ``event_ts`` (later partition)."""
    late_rate: float = Field(0.03, ge=0.0, le=0.5)

    out_of_order: bool = False
    """Rows inside each partition file are not in time order."""

    bots: bool = False
    """Add bot-like users: huge event rates, never a cart or a purchase."""
    bot_fraction: float = Field(0.02, ge=0.0, le=0.5)

    anonymous: bool = False
    """Some sessions start anonymous (``user_id`` null) and are stitched by a later login event."""
    anonymous_rate: float = Field(0.25, ge=0.0, le=1.0)

    reversals: bool = False
    """More cancellations and returns than the clean business rate, some partial, some refunds."""

    midnight_sessions: bool = False
    """Some sessions start a few minutes before 00:00 UTC and cross into the next day."""
    midnight_rate: float = Field(0.03, ge=0.0, le=0.5)

    @classmethod
    def all_on(cls) -> DirtConfig:
        """Every kind of dirt switched on, at the default rates."""
        return cls(
            duplicates=True,
            late_events=True,
            out_of_order=True,
            bots=True,
            anonymous=True,
            reversals=True,
            midnight_sessions=True,
        )

    @property
    def any(self) -> bool:
        """Whether any kind of dirt is switched on."""
        return any(
            (
                self.duplicates,
                self.late_events,
                self.out_of_order,
                self.bots,
                self.anonymous,
                self.reversals,
                self.midnight_sessions,
            )
        )


class RecommendationRewardWeights(BaseModel):
    """Weights of the recommendation scenario's ``weighted`` reward (per decision)."""

    model_config = ConfigDict(extra="forbid")

    click: float = 1.0
    add_to_cart: float = 2.0
    purchase: float = 5.0
    revenue: float = 0.0


class PromotionResponse(BaseModel):
    """How users respond to incentives in the promotion scenario (hidden from the logs).

    The defaults are the world every figure in this repository was measured in. Other values
    give other worlds of the same scenario, for sensitivity checks: how much a policy can gain
    by targeting depends mostly on how incentives shape later behaviour (simulator/README.md).
    """

    model_config = ConfigDict(extra="forbid")

    expectation_rise: float = Field(0.4, ge=0.0, le=1.0)
    """After an incentive above a user's discount expectation, the expectation moves this share
    of the way up to it (reference-price effect: later full prices feel like losses)."""
    expectation_decay: float = Field(0.25, ge=0.0, le=1.0)
    """After a decision without such an incentive, the expectation shrinks by this share."""
    loss_aversion: float = Field(1.1, ge=0.0)
    """An incentive below the expectation lowers the purchase logit this many times as much as
    one above it raises it."""


class SimulatorConfig(BaseModel):
    """What to simulate; every field has a default so ``[simulator]`` may be omitted."""

    model_config = ConfigDict(extra="forbid")

    scenario: Literal["promotion", "recommendation"] = "promotion"
    action_space: Literal["discrete", "continuous"] = "discrete"
    n_users: int = Field(2_000, gt=0)
    seed: int = 0
    start_date: dt.date = dt.date(2026, 1, 5)
    days: int = Field(28, gt=0)
    log_propensity: bool = True

    arrival_days: int | None = Field(None, gt=0)
    """Users make their first visit on a day drawn uniformly from the first ``arrival_days``
    days (at the usual time of day); ``None``: from every day of the simulated period (new users
    every day, as on a live site). Bots arrive over the same window."""
    churn_days: int = Field(14, ge=2)
    """A user who has not churned always returns within this many days."""
    settlement_days: int = Field(14, ge=0)
    """Reversals later than this after the decision do not count in its reward."""
    horizon_decisions: int = Field(10, gt=0)
    """Promotion episode: at most this many decisions ..."""
    horizon_days: int = Field(30, gt=0)
    """... and this many days from the episode's first decision."""
    n_categories: int = Field(8, ge=2, le=99)
    """Item categories (= recommendation actions ``cat_00`` ...)."""
    items_per_category: int = Field(40, gt=0)
    max_pages: int = Field(10, gt=0)
    """Recommendation: at most this many page views (decisions) per session."""
    cancel_rate: float = Field(0.02, ge=0.0, le=1.0)
    """Share of placed orders cancelled (clean business rate)."""
    return_rate: float = Field(0.05, ge=0.0, le=1.0)
    """Base share of order lines returned (clean business rate)."""
    policy_id: str = "heuristic-v1"
    logging_discount_bias: float = 0.0
    """Added to the discrete promotion logging policy's score of every discount tier: above 0, a
    platform that over-discounts (its most likely tier becomes a discount in most states); below
    0, one that under-discounts. 0: the default heuristic."""
    rec_reward: RecommendationRewardWeights = Field(default_factory=RecommendationRewardWeights)
    dirt: DirtConfig = Field(default_factory=DirtConfig)
    promotion_response: PromotionResponse = Field(default_factory=PromotionResponse)
