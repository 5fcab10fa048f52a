"""The state builder: features of a decision as of its time, per user, from earlier rows only.

One implementation serves the ETL (transitions) and the online rollout (the simulator's
observation hook, :class:`ObservationBuilder`), so an agent sees online exactly the features it
was trained on.

**As of the decision time ``t``.** A feature only reads rows with ``event_ts`` (``order_ts``)
strictly before ``t`` and at most ``feature_window_days`` (``W``) before it, of the same user.
Identity is also taken as of ``t``: the decision belongs to its ``user_id``, else to the user its
anonymous id had logged in as *before* ``t``, else to the anonymous id itself; rows of an
anonymous id count for its user only from the moment the id was linked (``max(ts, link_ts)``).
Nothing global across users enters a feature, except the scaling fitted on the training window.

Counts and money are kept as integers (money in micro-units) so that a window's value is exact
whatever rows lie outside the window: this is what makes a nightly run over a lookback window
give the same bytes as a backfill.

Features (``feature_names``):

- ``recency_days``: days since the last placed order in the window (``W`` if none);
  ``n_orders``: placed orders; ``monetary``: revenue of placed lines minus reversed revenue;
  ``discount_share``: discounts / list value of placed lines (0 if none).
- ``n_sessions`` (sessions started), ``n_events``, ``n_views`` (page_view, view_item),
  ``n_carts`` (add_to_cart), ``n_events_1d`` (last 24 h), ``days_since_last_event``.
- ``n_offers`` (earlier decisions whose action is not ``none`` / rate > 0),
  ``days_since_last_offer``; the last decision's action one-hot (``last_action_<label>``), or for
  continuous actions ``last_rate`` and ``mean_past_rate``.
- ``session_events``: earlier events of the decision's own session.
- ``hour_sin``, ``hour_cos``, ``dow_sin``, ``dow_cos`` of the decision time (UTC).
- ``<context>_<value>``: one-hot of each configured context column of the decision event.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from etl.clean import LINK_TS, LINK_USER, MICRO, SESSION, US_PER_DAY, days_us
from etl.config import EtlConfig
from etl.validate import ACTION_IDX, ACTION_VAL, ActionSpace

KEY = "_fkey"
KID = "_kid"
TIE = "_tie"
EVENT_NEED = ["event_id", "event_ts", "event_type", "user_id", "anonymous_id", "session_id",
              SESSION, ACTION_IDX, ACTION_VAL]
ORDER_NEED = ["order_id", "order_ts", "status", "user_id", "anonymous_id", "session_id",
              "quantity", "unit_price", "discount_amount", "_fx"]
SID = "_sid"
AVAIL = "_avail"
T = "_t"


@dataclass(frozen=True)
class FeatureSpec:
    """What decides the feature vector's layout: action space, context columns, window."""

    space: ActionSpace
    context: Mapping[str, list[str]]
    window_days: float

    @classmethod
    def from_config(cls, config: EtlConfig, space: ActionSpace) -> FeatureSpec:
        """The spec an ETL config implies.

        Context columns are laid out in sorted order of their names, so that the layout does not
        depend on the order of a TOML table or of a JSON object read back from a manifest.
        """
        context = {name: config.context_columns[name] for name in sorted(config.context_columns)}
        return cls(space, context, config.feature_window_days)

    @property
    def names(self) -> list[str]:
        """Feature names in column order."""
        names = [
            "recency_days",
            "n_orders",
            "monetary",
            "discount_share",
            "n_sessions",
            "n_events",
            "n_views",
            "n_carts",
            "n_events_1d",
            "days_since_last_event",
            "n_offers",
            "days_since_last_offer",
        ]
        if self.space.continuous:
            names += ["last_rate", "mean_past_rate"]
        else:
            names += [f"last_action_{label}" for label in self.space.labels]
        names += ["session_events", "hour_sin", "hour_cos", "dow_sin", "dow_cos"]
        for ctx, values in self.context.items():
            names += [f"{ctx}_{v}" for v in values]
        return names


@dataclass(frozen=True)
class Scaling:
    """Per-feature mean and standard deviation (std 0 is stored as 1)."""

    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, names: list[str], raw: np.ndarray) -> Scaling:
        """Fit on a (decisions, features) matrix of raw features."""
        if raw.shape[0] == 0:
            return cls.identity(names)
        mean = raw.mean(axis=0, dtype=np.float64)
        std = raw.std(axis=0, dtype=np.float64)
        std = np.where(std > 1e-12, std, 1.0)
        return cls(tuple(names), mean, std)

    @classmethod
    def identity(cls, names: list[str]) -> Scaling:
        """No scaling (mean 0, std 1)."""
        return cls(tuple(names), np.zeros(len(names)), np.ones(len(names)))

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Scaled float32 features."""
        return ((raw - self.mean) / self.std).astype(np.float32)

    def to_manifest(self) -> dict[str, dict[str, float]]:
        """``{"feature": {"mean": m, "std": s}}`` for the manifest."""
        return {
            n: {"mean": float(m), "std": float(s)}
            for n, m, s in zip(self.names, self.mean, self.std, strict=True)
        }

    @classmethod
    def from_manifest(cls, names: list[str], entry: Mapping[str, Mapping[str, float]]) -> Scaling:
        """Inverse of :meth:`to_manifest` (in the order of ``names``)."""
        missing = [n for n in names if n not in entry]
        if missing:
            from etl.errors import EtlError

            raise EtlError(f"scaling lacks features {missing[:3]}")
        mean = np.array([entry[n]["mean"] for n in names], dtype=np.float64)
        std = np.array([entry[n]["std"] for n in names], dtype=np.float64)
        return cls(tuple(names), mean, std)


def _linked(frame: pl.DataFrame, links: pl.DataFrame) -> pl.DataFrame:
    if LINK_USER in frame.columns:
        return frame
    return frame.join(links, on="anonymous_id", how="left", maintain_order="left")


def _select_linked(frame: pl.DataFrame, columns: list[str], links: pl.DataFrame) -> pl.DataFrame:
    """``columns`` of ``frame`` with the identity-map columns of each row's anonymous id: kept
    when the frame carries them already (cleaned rows, joined to the same map), else joined."""
    if LINK_USER in frame.columns and LINK_TS in frame.columns:
        return frame.select(*columns, LINK_USER, LINK_TS)
    return _linked(frame.select(columns), links)


def _money(expr: pl.Expr) -> pl.Expr:
    return (expr * MICRO).round(0).cast(pl.Int64)


def _h(col: str, seed: int) -> pl.Expr:
    """64-bit hash of a string column, null where it is null (polars hashes null too)."""
    return pl.when(pl.col(col).is_not_null()).then(pl.col(col).hash(seed=seed))


def _user_h(col: str) -> pl.Expr:
    return _h(col, 11)


def _history_keys(rows: pl.DataFrame, ts_col: str) -> pl.DataFrame:
    """Each row under the identities it counts for, with the time it becomes known (``_avail``).

    A row counts for its user_id, else for its anonymous id and, once the anonymous id is
    linked, for the linked user from ``max(ts, link_ts)`` on. Identities are 64-bit hashes,
    one seed per namespace (user, anonymous id, session), so the namespaces never mix.
    """
    ts = pl.col(ts_col).dt.epoch("us")
    primary = rows.with_columns(
        pl.coalesce(
            _user_h("user_id"),
            _h("anonymous_id", 12),
            _h("session_id", 13),
        ).alias(KEY),
        ts.alias(AVAIL),
    )
    linked = rows.filter(pl.col("user_id").is_null() & pl.col(LINK_USER).is_not_null())
    linked = linked.with_columns(
        _user_h(LINK_USER).alias(KEY),
        pl.max_horizontal(ts, pl.col(LINK_TS).dt.epoch("us")).alias(AVAIL),
    )
    return pl.concat([primary, linked])


def _decision_key() -> pl.Expr:
    linked_before = pl.col(LINK_USER).is_not_null() & (pl.col(LINK_TS).dt.epoch("us") < pl.col(T))
    return pl.coalesce(
        _user_h("user_id"),
        pl.when(linked_before).then(_user_h(LINK_USER)),
        _h("anonymous_id", 12),
        _h("session_id", 13),
    ).alias(KEY)


def _sorted(both: pl.DataFrame) -> pl.DataFrame:
    """``both`` sorted by (``_kid``, ``_avail``, ``_h``, ``_tie``).

    When they fit, the first three keys are packed into one unsigned 64-bit key (identity in the
    high bits, time since the earliest row, query-or-row in the lowest bit): the same order,
    from a sort on two columns instead of four (a constant ``_tie`` is not sorted on at all).
    """
    if both.height == 0:
        return both.sort(KID, AVAIL, "_h", TIE)
    kmax, lo, hi, nulls, tie_lo, tie_hi = both.select(
        pl.col(KID).max().alias("a"),
        pl.col(AVAIL).min().alias("b"),
        pl.col(AVAIL).max().alias("c"),
        (pl.col(KID).null_count() + pl.col(AVAIL).null_count() + pl.col("_h").null_count())
        .alias("d"),
        pl.col(TIE).min().alias("e"),
        pl.col(TIE).max().alias("f"),
    ).row(0)
    shift = (hi - lo).bit_length() + 1
    if nulls or kmax is None or int(kmax).bit_length() + shift > 64:
        return both.sort(KID, AVAIL, "_h", TIE)
    packed = (
        pl.col(KID).cast(pl.UInt64) * pl.lit(1 << shift, dtype=pl.UInt64)
        + (pl.col(AVAIL) - lo).cast(pl.UInt64) * pl.lit(2, dtype=pl.UInt64)
        + pl.col("_h").cast(pl.UInt64)
    ).alias("_p")
    keys = ["_p"] if tie_lo == tie_hi and both[TIE].null_count() == 0 else ["_p", TIE]
    return both.with_columns(packed).sort(keys).drop("_p")


def _scan_at(
    history: pl.DataFrame,
    dec: pl.DataFrame,
    at: dict[str, str],
    *,
    sums: list[str],
    lasts: dict[str, tuple[str | pl.Expr | None, str]],
    first_in_group: str | None = None,
    first_col: str | None = None,
    first_when: str | None = None,
) -> pl.DataFrame:
    """Values of ``history`` as of several times per decision, in one sort and one scan.

    ``history``: rows of (``_kid``, ``_avail``, ``_tie``, increments...). For each decision row
    and each ``suffix -> time column`` of ``at``, returns per identity the sum of each column of
    ``sums`` over the rows available strictly before that time (``<sum><suffix>``), and, for each
    ``name -> (condition, column)`` of ``lasts``, the column's value on the last such row where
    the condition (a column name, an expression, or ``None``: every row) holds
    (``<name><suffix>``). Sum columns may be boolean or any integer type (summed as Int64).
    ``first_col`` counts the rows that are the first of their ``first_in_group`` value within
    the identity (e.g. sessions started). Decision rows are queries merged into the sorted
    history (queries sort before rows of the same time, which makes "before" strict); no as-of
    join and no per-group hashing is needed. Result rows follow
    ``dec["_row"]``.
    """
    n_q = len(at)
    # condition and value columns are taken from ``history`` by name, each once; an expression
    # condition gets a column of its own and a ``None`` condition holds on every history row
    cond_cols: dict[str, pl.Expr] = {}
    cond_of: dict[str, str | None] = {}
    for i, (name, (cond, _)) in enumerate(lasts.items()):
        if isinstance(cond, pl.Expr):
            cond_cols[f"_c{i}"] = cond.alias(f"_c{i}")
            cond_of[name] = f"_c{i}"
        else:
            cond_of[name] = cond
    extra: list[pl.Expr] = []
    if first_in_group is not None and first_col is not None:
        extra.append(pl.col(first_in_group).hash(seed=1).alias("_g"))
        if first_when is not None:
            extra.append(pl.col(first_when).alias("_gw"))
    taken = [KID, AVAIL, TIE, *[c for c in sums if c != first_col]]
    for name, (_, col) in lasts.items():
        for c in (cond_of[name], col):
            if c is not None and c not in taken and c not in cond_cols:
                taken.append(c)
    hist = history.select(
        KID, AVAIL, TIE, pl.lit(1, dtype=pl.UInt8).alias("_h"),
        pl.lit(None, dtype=pl.UInt32).alias("_q"),
        *taken[3:],
        *extra,
        *cond_cols.values(),
    )
    queries = pl.concat(
        [
            dec.select(
                KID,
                pl.col(col).alias(AVAIL),
                pl.lit(0, dtype=pl.UInt64).alias(TIE),
                pl.lit(0, dtype=pl.UInt8).alias("_h"),
                (pl.col("_row") * n_q + q).cast(pl.UInt32).alias("_q"),
            )
            for q, col in enumerate(at.values())
        ]
    )
    both = _sorted(pl.concat([hist, queries], how="diagonal"))
    both = both.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_idx"),
        (pl.col(KID) != pl.col(KID).shift(1)).fill_null(True).alias("_start"),
    ).with_columns(pl.when("_start").then(pl.col("_idx")).forward_fill().alias("_gs"))
    if extra:
        is_first = pl.col("_g").is_first_distinct().over(KID) & (pl.col("_h") == 1)
        if first_when is not None:
            is_first = is_first & pl.col("_gw").fill_null(False)
        both = both.with_columns(is_first.cast(pl.Int64).alias(str(first_col)))
    idx, start, group_start = pl.col("_idx"), pl.col("_start"), pl.col("_gs")
    is_row = pl.col("_h") == 1
    at_cond: dict[str | None, str] = {}
    for cond in dict.fromkeys(cond_of.values()):
        at_cond[cond] = f"_at{len(at_cond)}"
    if at_cond:
        both = both.with_columns(
            pl.when(is_row if cond is None else is_row & pl.col(cond).fill_null(False))
            .then(idx).forward_fill().alias(alias)
            for cond, alias in at_cond.items()
        )
    exprs: list[pl.Expr] = []
    for c in sums:
        x = pl.col(c).cast(pl.Int64).fill_null(0)
        cs = x.cum_sum()
        base = pl.when(start).then(cs - x).forward_fill()
        exprs.append((cs - base).alias(c))
    for name, (_, col) in lasts.items():
        at_idx = pl.col(at_cond[cond_of[name]])
        valid = at_idx.is_not_null() & (at_idx >= group_start)
        value = pl.col(col).gather(at_idx.fill_null(0))
        exprs.append(pl.when(valid).then(value).alias(name))
    answered = both.with_columns(exprs).filter(pl.col("_h") == 0).sort("_q")
    names = [*sums, *lasts]
    parts = []
    for q, suffix in enumerate(at):
        part = answered.gather_every(n_q, offset=q).select(names)
        parts.append(part.rename({c: f"{c}{suffix}" for c in names}))
    return pl.concat(parts, how="horizontal")


def raw_features(
    events: pl.DataFrame,
    orders: pl.DataFrame,
    decisions: pl.DataFrame,
    links: pl.DataFrame,
    spec: FeatureSpec,
) -> np.ndarray:
    """Unscaled features (float64, ``(len(decisions), n_features)``) in the decisions' row order.

    ``events``: cleaned events with ``_session_key``, ``_action_idx``, ``_action_val``;
    ``orders``: cleaned order lines with amounts in the reporting currency; ``decisions``: the
    decision rows (decision_id, event_ts, user_id, anonymous_id, session_id, ``_session_key``,
    context columns); ``links``: the identity map (:func:`etl.clean.identity_links`). Rows at or
    after a decision's time are ignored for that decision.
    """
    names = spec.names
    n = decisions.height
    if n == 0:
        return np.zeros((0, len(names)), dtype=np.float64)
    win = days_us(spec.window_days)
    space = spec.space

    dec = _select_linked(
        decisions.with_columns(pl.col("event_ts").dt.epoch("us").alias(T)),
        ["user_id", "anonymous_id", "session_id", SESSION, T, *spec.context],
        links,
    ).with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"))
    dec = dec.with_columns(_decision_key(), (pl.col(T) - win).alias("_t0"),
                           (pl.col(T) - US_PER_DAY).alias("_t1"))

    # --- integer codes for identities and sessions (fast sorts, windows and as-of joins)
    keys = dec.select(KEY).unique().with_row_index(KID)
    dec = dec.join(keys, on=KEY, how="left")
    sess_keys = dec.select(pl.col(SESSION).hash(seed=14)).unique().with_row_index(SID)
    dec = dec.join(sess_keys, left_on=pl.col(SESSION).hash(seed=14), right_on=SESSION,
                   how="left")

    # --- event history: integer increments per identity, in order of availability
    ev = _select_linked(events, EVENT_NEED, links)
    ev = _history_keys(ev, "event_ts").join(keys, on=KEY, how="inner")
    etype = pl.col("event_type")
    decision = etype == "decision"
    offer = decision & ((pl.col(ACTION_VAL) > 0) if space.continuous else (pl.col(ACTION_IDX) != 0))
    ev = ev.select(
        KID,
        AVAIL,
        pl.col("event_id").hash(seed=0).alias(TIE),
        pl.lit(1, dtype=pl.UInt8).alias("c_ev"),
        etype.is_in(["page_view", "view_item"]).alias("c_view"),
        (etype == "add_to_cart").alias("c_cart"),
        pl.col(SESSION),
        offer.fill_null(False).alias("c_offer"),
        decision.alias("c_dec"),
        pl.when(decision).then(_money(pl.col(ACTION_VAL).fill_null(0.0))).otherwise(0)
        .alias("c_rate"),
        pl.col(ACTION_IDX),
        pl.col(ACTION_VAL),
    )
    ev_at = _scan_at(
        ev, dec, {"": T, "_0": "_t0", "_1": "_t1"},
        sums=["c_ev", "c_view", "c_cart", "c_sess", "c_offer", "c_dec", "c_rate"],
        lasts={"last_ev": (None, AVAIL), "last_offer": ("c_offer", AVAIL),
               "last_dec": ("c_dec", AVAIL), "last_idx": ("c_dec", ACTION_IDX),
               "last_val": ("c_dec", ACTION_VAL)},
        first_in_group=SESSION, first_col="c_sess",
    )
    # --- order history
    od = _select_linked(orders, ORDER_NEED, links)
    od = _history_keys(od, "order_ts").join(keys, on=KEY, how="inner")
    placed = pl.col("status") == "placed"
    value = pl.col("quantity").cast(pl.Float64) * pl.col("unit_price") * pl.col("_fx")
    disc = pl.col("discount_amount").fill_null(0.0) * pl.col("_fx")
    net = _money(value - disc)
    od = od.select(
        KID,
        AVAIL,
        pl.col("order_id").hash(seed=0).alias(TIE),
        pl.col("order_id"),
        placed.alias("_placed"),
        pl.when(placed).then(net).otherwise(-net).alias("c_money"),
        pl.when(placed).then(_money(value)).otherwise(0).alias("c_gross"),
        pl.when(placed).then(_money(disc)).otherwise(0).alias("c_disc"),
    )
    od_at = _scan_at(
        od, dec, {"": T, "_0": "_t0"},
        sums=["c_orders", "c_money", "c_gross", "c_disc"],
        lasts={"last_order": ("_placed", AVAIL)},
        first_in_group="order_id", first_col="c_orders", first_when="_placed",
    )
    # --- session history (rows of the decision's own session, any identity)
    se = (
        events.select(pl.col(SESSION).hash(seed=14), "event_ts").join(sess_keys, on=SESSION,
                                                                       how="inner")
        .select(pl.col(SID).alias(KID), pl.col("event_ts").dt.epoch("us").alias(AVAIL),
                pl.lit(0, dtype=pl.UInt64).alias(TIE), pl.lit(1, dtype=pl.Int64).alias("c_se"))
    )
    se_at = _scan_at(se, dec.with_columns(pl.col(SID).alias(KID)), {"": T}, sums=["c_se"],
                     lasts={})
    out = pl.concat([dec.sort("_row"), ev_at, od_at, se_at], how="horizontal")

    def window(col: str) -> pl.Expr:
        return (pl.col(col).fill_null(0) - pl.col(f"{col}_0").fill_null(0)).cast(pl.Float64)

    def since(col: str) -> pl.Expr:
        last = pl.col(col)
        inside = last.is_not_null() & (last >= pl.col("_t0"))
        return pl.when(inside).then((pl.col(T) - last) / US_PER_DAY).otherwise(win / US_PER_DAY)

    day_frac = (pl.col(T) % US_PER_DAY) / US_PER_DAY * (2 * math.pi)
    week_frac = ((pl.col(T) // US_PER_DAY + 3) % 7) / 7 * (2 * math.pi)  # 0 = Monday
    last_in = pl.col("last_dec").is_not_null() & (pl.col("last_dec") >= pl.col("_t0"))
    gross = window("c_gross")
    cols: list[pl.Expr] = [
        since("last_order"),
        window("c_orders"),
        window("c_money") / MICRO,
        pl.when(gross > 0).then(window("c_disc") / gross).otherwise(0.0),
        window("c_sess"),
        window("c_ev"),
        window("c_view"),
        window("c_cart"),
        (pl.col("c_ev").fill_null(0) - pl.col("c_ev_1").fill_null(0)).cast(pl.Float64),
        since("last_ev"),
        window("c_offer"),
        since("last_offer"),
    ]
    if space.continuous:
        n_dec = window("c_dec")
        cols += [
            pl.when(last_in).then(pl.col("last_val").fill_null(0.0)).otherwise(0.0),
            pl.when(n_dec > 0).then(window("c_rate") / MICRO / n_dec).otherwise(0.0),
        ]
    else:
        cols += [
            (last_in & (pl.col("last_idx") == i)).fill_null(False).cast(pl.Float64)
            for i in range(space.n)
        ]
    cols += [
        pl.col("c_se").fill_null(0).cast(pl.Float64),
        day_frac.sin(),
        day_frac.cos(),
        week_frac.sin(),
        week_frac.cos(),
    ]
    for ctx, values in spec.context.items():
        cols += [(pl.col(ctx) == v).fill_null(False).cast(pl.Float64) for v in values]
    matrix = out.select([c.cast(pl.Float64).alias(f"f{i}") for i, c in enumerate(cols)])
    return matrix.to_numpy().astype(np.float64, copy=False)


class ObservationBuilder:
    """The observation hook of the simulator's rollout: the ETL's state builder, online.

    ``builder(events, orders, decisions)`` returns the scaled float32 features
    ``(len(decisions), n_features)`` of each pending decision, computed from the raw rows given
    (all rows before the decisions) exactly as the ETL computes them for its transitions.
    """

    def __init__(self, config: EtlConfig, space: ActionSpace, scaling: Scaling | None) -> None:
        self.config = config
        self.space = space
        self.spec = FeatureSpec.from_config(config, space)
        self.scaling = scaling or Scaling.identity(self.spec.names)

    @property
    def feature_names(self) -> list[str]:
        """The names of the observation's columns."""
        return self.spec.names

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any] | Path | str) -> ObservationBuilder:
        """The builder a transition dataset was made with (its ``_manifest.json``)."""
        data: Mapping[str, Any]
        if isinstance(manifest, Mapping):
            data = manifest
        else:
            path = Path(manifest)
            if path.is_dir():
                path = path / "_manifest.json"
            data = json.loads(path.read_text(encoding="utf-8"))
        config = EtlConfig.model_validate(data["config"])
        space = ActionSpace.from_manifest(data["action_space"])
        builder = cls(config, space, None)
        if builder.spec.names != list(data["feature_names"]):
            from etl.errors import EtlError

            raise EtlError(
                "manifest: its feature_names do not match the features its config builds; "
                "the dataset was written by another version of the ETL"
            )
        builder.scaling = Scaling.from_manifest(builder.spec.names, data["scaling"])
        return builder

    @classmethod
    def from_config(
        cls, config: EtlConfig | None = None, *, continuous: bool = False,
        scaling: Scaling | None = None,
    ) -> ObservationBuilder:
        """A builder from an ETL config (identity scaling unless given)."""
        config = config or EtlConfig()
        return cls(config, ActionSpace.from_config(config, continuous), scaling)

    def raw(
        self, events: pl.DataFrame, orders: pl.DataFrame, decisions: pl.DataFrame
    ) -> np.ndarray:
        """Unscaled features of the pending decisions."""
        from etl.core import history_and_pending

        history, od, pending, links = history_and_pending(
            events, orders, _as_events(decisions), self.config, self.space
        )
        return raw_features(history, od, pending, links, self.spec)

    def __call__(
        self, events: pl.DataFrame, orders: pl.DataFrame, decisions: pl.DataFrame
    ) -> np.ndarray:
        """Scaled float32 observations, one row per pending decision, in their order."""
        return self.scaling.apply(self.raw(events, orders, decisions))


def _as_events(decisions: pl.DataFrame) -> pl.DataFrame:
    out = decisions
    if "event_type" not in out.columns:
        out = out.with_columns(pl.lit("decision").alias("event_type"))
    if "event_id" not in out.columns:
        out = out.with_columns(("pending:" + pl.col("decision_id")).alias("event_id"))
    return out


__all__ = ["FeatureSpec", "ObservationBuilder", "Scaling", "raw_features"]
