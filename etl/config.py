"""Configuration of the ETL (the ``[etl]`` table of the TOML config).

Every field has a default, so ``[etl]`` may be omitted. Durations are given in the units their
names say and turned into integer microseconds inside the ETL (Arrow-friendly, exact).
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

TimeUnit = Literal["s", "ms", "us", "ns"]


class TableMapping(BaseModel):
    """How one source table maps onto the raw-log schema (``docs/architecture.md``).

    Applied in this order: ``rename`` (source name -> our name), ``constant`` (add a column with a
    fixed value), ``cast`` (our name -> polars dtype name such as ``"Float64"`` or ``"String"``),
    ``event_type_map`` (source event names -> ours; unmapped names are kept and usually end in
    quarantine as ``unknown_event_type``), ``status_map`` (the same for order statuses), and
    ``time_unit`` (integer timestamp columns are epoch values in that unit, UTC).
    """

    model_config = ConfigDict(extra="forbid")

    rename: dict[str, str] = Field(default_factory=dict)
    constant: dict[str, str | int | float | bool] = Field(default_factory=dict)
    cast: dict[str, str] = Field(default_factory=dict)
    event_type_map: dict[str, str] = Field(default_factory=dict)
    event_type_default: str | None = Field(
        None, description="Event type for source names missing from event_type_map (e.g. 'other')."
    )
    status_map: dict[str, str] = Field(default_factory=dict)
    event_id_from: list[str] = Field(
        default_factory=list,
        description=(
            "For sources without an event id: build event_id from these source columns "
            "(joined with '|'), so that verbatim re-sends still collapse as duplicates."
        ),
    )
    time_unit: TimeUnit = "us"
    naive_timezone: str | None = Field(
        None,
        description=(
            "Time zone to assume for timestamps without one (e.g. 'UTC' for exports whose "
            "timestamps are UTC by definition). None: such rows are quarantined."
        ),
    )


class ColumnMapping(BaseModel):
    """Column mapping of a source: one table mapping for events, one for orders."""

    model_config = ConfigDict(extra="forbid")

    name: str = "raw"
    events: TableMapping = Field(default_factory=TableMapping)
    orders: TableMapping = Field(default_factory=TableMapping)


class BotRule(BaseModel):
    """The rate rule that flags bot traffic (applied per session, causally).

    A session turns "bot" at the first event that is the ``max_events_per_minute``+1-th event of
    the session within one clock minute, or the ``max_events_per_session``+1-th event of the
    session; that event and every later event of the session are dropped with reason ``bot``.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_events_per_minute: int = Field(30, gt=0)
    max_events_per_session: int = Field(500, gt=0)


class RewardWeights(BaseModel):
    """Weights of the ``weighted`` reward (the recommendation default)."""

    model_config = ConfigDict(extra="forbid")

    click: float = 1.0
    add_to_cart: float = 2.0
    purchase: float = 5.0
    revenue: float = 0.0


class SparkConfig(BaseModel):
    """How the ETL runs on Spark (the ``[etl.spark]`` table; used when ``engine = "spark"``)."""

    model_config = ConfigDict(extra="forbid")

    master: str = Field(
        "local[1]",
        description="Spark master URL: 'local[N]', 'spark://host:7077', 'yarn', 'k8s://...'. "
        "Ignored when a Spark session already exists (spark-submit, Databricks).",
    )
    app_name: str = "ecomrl-etl"
    partitions: int | None = Field(
        None,
        gt=0,
        description="User partitions of the transform (one polars call each). None: twice "
        "Spark's default parallelism.",
    )
    fast_start: bool = Field(
        True, description="For local masters: JVM and Spark settings that cut start-up."
    )
    conf: dict[str, str] = Field(
        default_factory=dict, description="Extra Spark settings (spark.executor.memory, ...)."
    )


class EtlConfig(BaseModel):
    """How raw logs become transitions."""

    model_config = ConfigDict(extra="forbid")

    scenario: Literal["promotion", "recommendation"] = "promotion"
    episode_mode: Literal["auto", "promotion", "recommendation", "one_step"] = Field(
        "auto", description="auto: 'promotion' for promotion logs, 'recommendation' for those."
    )
    action_space: Literal["auto", "discrete", "continuous"] = Field(
        "auto", description="auto: continuous when the action column is numeric."
    )
    action_labels: list[str] | None = Field(
        None,
        description=(
            "Discrete action labels in index order. None: the labels stored in the dataset's "
            "manifest (nightly runs), else the scenario's default (the promotion tiers for "
            "promotion, cat_00..cat_{n_categories-1} for recommendation) when the decision "
            "events use any of them, else the sorted labels the decision events use "
            "(discovered)."
        ),
    )
    n_categories: int = Field(8, gt=0, description="K of the recommendation scenario.")
    continuous_low: float = 0.0
    continuous_high: float = 0.3

    reward: Literal["auto", "net_margin", "revenue", "purchase", "weighted"] = Field(
        "auto", description="auto: net_margin for promotion, weighted for recommendation."
    )
    reward_weights: RewardWeights = Field(default_factory=RewardWeights)
    gamma: float = Field(0.9, gt=0.0, le=1.0)

    # time rules
    session_gap_minutes: float = Field(30.0, gt=0)
    settlement_days: float = Field(14.0, ge=0)
    attribution_window_hours: float = Field(
        24.0, gt=0, description="Orders without a session go to the decision this far before."
    )
    max_lateness_days: float = Field(
        2.0, ge=0, description="Rows arriving later than this after they happened are dropped."
    )
    clock_skew_tolerance_minutes: float = Field(
        10.0,
        ge=0,
        description="Rows whose time is later than their arrival (ingest_ts), or whose time or "
        "arrival is later than the end of the run date, by more than this are quarantined as "
        "future_event.",
    )
    horizon_days: float = Field(30.0, gt=0)
    horizon_steps: int = Field(10, gt=0)
    churn_days: float = Field(14.0, gt=0)
    feature_window_days: float = Field(
        28.0, gt=0, description="Features look back this far before the decision."
    )

    # validation
    currencies: dict[str, float] = Field(
        default_factory=lambda: {"EUR": 1.0},
        description="Known currencies and their rate to the reporting currency.",
    )
    max_quarantine_share: float = Field(
        0.05, ge=0.0, le=1.0, description="Fail the run when more rows than this go to quarantine."
    )
    bots: BotRule = Field(default_factory=BotRule)
    max_amount: float = Field(
        1e7,
        gt=0,
        description="Money values above this (absolute, in the row's currency: price, "
        "unit_price, discount_amount, margin) are quarantined as out_of_range.",
    )
    max_count: int = Field(
        100_000, gt=0, description="Counts above this (quantity, position) are quarantined as "
        "out_of_range."
    )
    require_decisions: bool = Field(
        True,
        description="Fail (exit 2) when the events hold no decision event; false loads "
        "clickstream-only sources (e.g. RetailRocket) as history without transitions.",
    )

    # features
    context_columns: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "device": ["mobile", "desktop", "app"],
            "channel": ["direct", "search", "email", "social"],
        },
        description="Context columns of decision events, one-hot encoded over these values.",
    )

    # sources and engine
    mapping: ColumnMapping | None = Field(None, description="Inline column mapping.")
    mapping_name: str | None = Field(
        None, description="A shipped mapping: 'ga4', 'snowplow' or 'retailrocket'."
    )
    scaling_from: str | None = Field(
        None,
        description=(
            "A _manifest.json whose fitted scaling to reuse. None: reuse the output's manifest "
            "when it has one, else fit on this run's decisions."
        ),
    )
    n_buckets: Annotated[int, Field(gt=0)] | Literal["auto"] = Field(
        "auto",
        description="User-hash buckets the local engine processes one after another (peak memory "
        "follows the bucket size). auto: one bucket per events_per_bucket input rows. The output "
        "does not depend on it.",
    )
    events_per_bucket: int = Field(
        500_000, gt=0, description="Input rows (events and order lines) per bucket for 'auto'."
    )
    workers: Annotated[int, Field(gt=0)] | Literal["auto"] = Field(
        "auto",
        description="Threads of the local engine: input files read and buckets transformed at "
        "the same time (peak memory grows with it: about one bucket per worker). auto: the "
        "machine's cores, at most 4. The output does not depend on it.",
    )
    engine: Literal["local", "spark"] = Field(
        "local",
        description="local: polars over user-hash buckets; spark: the same transform in Spark "
        "workers (extra ecomrl[spark]; see docs/spark.md). Both write the same dataset.",
    )
    spark: SparkConfig = Field(default_factory=SparkConfig)

    def bucket_count(self, input_rows: int) -> int:
        """The number of user-hash buckets for an input of ``input_rows`` rows (events and order
        lines): ``n_buckets``, or for ``auto`` one bucket per ``events_per_bucket`` rows."""
        if self.n_buckets != "auto":
            return self.n_buckets
        return max(1, -(-input_rows // self.events_per_bucket))

    def worker_count(self) -> int:
        """Threads of the local engine: ``workers``, or for ``auto`` the cores, at most 4."""
        if self.workers != "auto":
            return self.workers
        return max(1, min(4, os.cpu_count() or 1))
