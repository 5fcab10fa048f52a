"""Configuration of the ETL (the ``[etl]`` table of the TOML config).

Every field has a default, so ``[etl]`` may be omitted. Durations are given in the units their
names say and turned into integer microseconds inside the ETL (Arrow-friendly, exact).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from etl.schema import EVENT_COLUMNS

TimeUnit = Literal["s", "ms", "us", "ns"]


class CsvOptions(BaseModel):
    """How CSV files of one table are read (the ``[etl.mapping.<table>.csv]`` table)."""

    model_config = ConfigDict(extra="forbid")

    separator: str = Field(
        ",",
        description="One character, 'tab', or 'whitespace' (runs of spaces and tabs, leading "
        "and trailing ones ignored: fixed-width text exports such as CDNOW_master.txt).",
    )
    has_header: bool = Field(True, description="The first line holds the column names.")
    columns: list[str] | None = Field(
        None,
        description="Column names in file order: required without a header, else they replace "
        "the header's names.",
    )

    @model_validator(mode="after")
    def _known_separator(self) -> CsvOptions:
        if self.separator not in ("tab", "whitespace") and len(self.separator.encode()) != 1:
            raise ValueError(
                f"separator must be one character, 'tab' or 'whitespace', got {self.separator!r}"
            )
        if not self.has_header and not self.columns:
            raise ValueError("has_header = false needs columns (the names, in file order)")
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            raise ValueError("columns: a name is given twice")
        return self


TIME_FORMATS = ("iso", "yyyymmdd", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns")


class TableMapping(BaseModel):
    """How one source table maps onto the raw-log schema (``docs/architecture.md``).

    Applied in this order: ``csv`` (how CSV files are split into columns), ``derive`` (new
    columns from SQL expressions over the source columns, evaluated by polars), ``rename``
    (source name -> our name), ``constant`` (add a column with a fixed value), ``parse_time``
    (our timestamp column -> its format), ``cast`` (our name -> polars dtype name such as
    ``"Float64"`` or ``"String"``), ``event_type_map`` (source event names -> ours; unmapped
    names are kept and usually end in quarantine as ``unknown_event_type``), ``status_map`` (the
    same for order statuses). ``time_unit``: integer timestamp columns are epoch values in that
    unit, UTC (without it, and without ``parse_time``, an integer timestamp is refused).
    """

    model_config = ConfigDict(extra="forbid")

    csv: CsvOptions = Field(default_factory=CsvOptions)
    derive: dict[str, str] = Field(
        default_factory=dict,
        description="Column -> SQL expression over the source columns (polars.sql_expr), e.g. "
        "order_id = \"customer_id || '-' || CAST(date AS VARCHAR)\", unit_price = "
        "\"dollar_value / number_of_cds\", session_id = \"user_id\" (a copy). Every "
        "expression sees the source columns as read (and _row_nr, the 1-based row of the "
        "file); a derived column may replace a source column of the same name.",
    )
    parse_time: dict[str, str] = Field(
        default_factory=dict,
        description="Timestamp column (our name) -> its format: 'yyyymmdd' (integers or "
        "strings), 'epoch_s', 'epoch_ms', 'epoch_us', 'epoch_ns', 'iso', or a strftime "
        "pattern such as '%d/%m/%Y' or '%d/%m/%Y %H:%M'. Days without a time of day are "
        "midnight UTC (in naive_timezone when set).",
    )
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
    time_unit: TimeUnit | None = Field(
        None,
        description="Unit of integer epoch timestamps. None: integer timestamps need a "
        "parse_time format (an integer date such as 19970101 is not epoch microseconds).",
    )
    naive_timezone: str | None = Field(
        None,
        description=(
            "Time zone to assume for timestamps without one (e.g. 'UTC' for exports whose "
            "timestamps are UTC by definition). None: such rows are quarantined."
        ),
    )

    @model_validator(mode="after")
    def _known_time_formats(self) -> TableMapping:
        for col, fmt in self.parse_time.items():
            if fmt not in TIME_FORMATS and "%" not in fmt:
                raise ValueError(
                    f"parse_time.{col} = {fmt!r}: not a format; use one of "
                    f"{', '.join(TIME_FORMATS)} or a strftime pattern such as '%d/%m/%Y'"
                )
        return self


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
        description="User-hash buckets of the transform (one task each). None: the local "
        "engine's bucket count, and at least Spark's parallelism.",
    )
    fast_start: bool = Field(
        True, description="For local masters: JVM and Spark settings that cut start-up."
    )
    conf: dict[str, str] = Field(
        default_factory=dict, description="Extra Spark settings (spark.executor.memory, ...)."
    )


class DecisionEvents(BaseModel):
    """Decisions logged as impression events (the ``[etl.decisions]`` table).

    Events whose source event type is ``event_type`` (before ``event_type_map``: GA4
    ``view_promotion`` or ``view_item_list``, a Snowplow promotion view) become decision events;
    their action is the ``action_column`` value and their decision id the ``decision_id_column``
    value, or the event id when that is None. Propensities are rarely logged with impressions:
    missing ones are estimated downstream (``propensity_source`` tells which).
    """

    model_config = ConfigDict(extra="forbid")

    event_type: str | None = Field(
        None, description="Source event type that records a decision. None: event_type_map "
        "maps the decision events (the default)."
    )
    action_column: str = Field("action", description="Source column holding the action shown.")
    decision_id_column: str | None = Field(
        None, description="Source column holding the decision id. None: the event id."
    )


class DecisionOutcomes(BaseModel):
    """Outcome columns on the decision row itself (the ``[etl.outcomes]`` table): a log with one
    row per decision (a bandit impression log) maps straight to reward parts, without synthetic
    click or purchase events.

    Each entry names a column of the decision events; where set, its value (null counts as 0)
    replaces the part attribution would compute: ``click`` and ``add_to_cart`` counts (a 0/1 or
    boolean flag, or a count), ``purchase`` (purchased when > 0), ``revenue`` (an amount in the
    row's currency, converted like prices). The reward kinds combine them as usual
    (``weighted``, ``revenue``, ``purchase``; ``auto`` is ``weighted`` when outcomes are set).
    """

    model_config = ConfigDict(extra="forbid")

    click: str | None = None
    add_to_cart: str | None = None
    purchase: str | None = None
    revenue: str | None = None

    def columns(self) -> dict[str, str]:
        """Reward part -> source column, for the parts that are set."""
        parts = {"click": self.click, "add_to_cart": self.add_to_cart,
                 "purchase": self.purchase, "revenue": self.revenue}
        return {part: col for part, col in parts.items() if col is not None}


class SourceFeatures(BaseModel):
    """State features read from the decision event's own columns (the ``[etl.features]`` table).

    ``numeric`` columns are used as they are (null as 0), ``categorical`` ones one-hot over
    their ``top_k`` most frequent values on decision events plus ``<column>__other``, ``lists``
    are fixed-length numeric list columns (column -> length, one feature per element), and
    ``position`` adds the decision's slot (the ``position`` column). All are scaled like the
    built-in features. ``vocabulary`` and ``constant`` are filled by the ETL (discovered on the
    first run, stored in the manifest's config and reused by nightly runs); a vocabulary given
    here is used as it is. Source features that are constant over the decision events are
    dropped (listed in ``constant``) unless ``drop_constant`` is false.
    """

    model_config = ConfigDict(extra="forbid")

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    lists: dict[str, Annotated[int, Field(gt=0)]] = Field(default_factory=dict)
    position: bool = False
    top_k: int = Field(10, gt=0)
    drop_constant: bool = True
    vocabulary: dict[str, list[str]] = Field(default_factory=dict)
    constant: list[str] | None = Field(
        None, description="Feature names dropped as constant (set by the ETL; None: not yet "
        "determined)."
    )

    def columns(self) -> list[str]:
        """Every source column these features read, in declaration order."""
        cols = [*self.numeric, *self.categorical, *self.lists]
        return [*cols, "position"] if self.position else cols

    @property
    def declared(self) -> bool:
        """Whether any source feature is declared."""
        return bool(self.columns())


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
    max_drop_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Fail the run when one drop reason (bot, duplicate_event_id, "
        "duplicate_order_line, too_late) takes more than this share of its table's rows, "
        "unless max_reason_share sets that reason's own ceiling (e.g. {bot = 0.2} where bots "
        "are filtered upstream).",
    )
    max_reason_share: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=dict,
        description="Ceiling per drop or quarantine reason (share of its table's rows), e.g. "
        "{bot = 0.4, future_event = 0.01}; reasons not listed: max_drop_share for drops, only "
        "max_quarantine_share (all reasons together) for quarantine.",
    )
    min_date: dt.date = Field(
        dt.date(1990, 1, 1),
        description="A time read through the mapping (strings, epoch numbers, parse_time "
        "formats) before this day stops the run: usually a wrong format or unit (an integer "
        "date read as epoch microseconds lands in 1970). Lower it for older data.",
    )

    # features
    context_columns: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "device": ["mobile", "desktop", "app"],
            "channel": ["direct", "search", "email", "social"],
        },
        description="Context columns of decision events, one-hot encoded over these values.",
    )
    features: SourceFeatures = Field(default_factory=SourceFeatures)
    decisions: DecisionEvents = Field(default_factory=DecisionEvents)
    outcomes: DecisionOutcomes = Field(default_factory=DecisionOutcomes)

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

    @model_validator(mode="after")
    def _source_columns_are_distinct(self) -> EtlConfig:
        """Context and source-feature columns must not shadow the contract's columns (a crash
        at read time otherwise), nor each other."""
        for col in self.context_columns:
            if col in EVENT_COLUMNS or col == "action" or col.startswith("_"):
                raise ValueError(
                    f"[etl] context_columns: '{col}' is a column of the raw-event contract "
                    "(docs/architecture.md); declare it under [etl.features] (numeric, "
                    "categorical or position) instead"
                )
        feats = self.features
        for col in feats.columns():
            if col == "action" or col.startswith("_"):
                raise ValueError(f"[etl.features]: '{col}' cannot be a feature column")
        for col in feats.lists:
            if col in EVENT_COLUMNS:
                raise ValueError(f"[etl.features] lists: '{col}' is a contract column, "
                                 "not a list")
        seen = [*self.context_columns, *feats.columns()]
        twice = sorted({c for c in seen if seen.count(c) > 1})
        if twice:
            raise ValueError(f"[etl.features]: column '{twice[0]}' is declared twice (context "
                             "columns, numeric, categorical, lists, position)")
        if self.outcomes.columns() and self.reward == "net_margin":
            raise ValueError("[etl.outcomes] give no margin: use reward = 'weighted', "
                             "'revenue' or 'purchase' with outcome columns")
        return self
