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
- recommendation scenario: per category ``<c>`` (the action labels), ``views_<c>`` (item views
  of that category) and ``recommended_<c>`` (earlier decisions that recommended it).
- ``hour_sin``, ``hour_cos``, ``dow_sin``, ``dow_cos`` of the decision time (UTC).
- ``<context>_<value>``: one-hot of each configured context column of the decision event.
- source features (``[etl.features]``, :mod:`etl.source`): numeric columns (``<column>``), the
  decision's ``position``, list elements (``<column>_<i>``), categorical one-hot over the
  stored vocabulary (``<column>_<value>``, ``<column>__other``), less those found constant.

Each group of features is one function of :data:`FEATURE_GROUPS` (name and polars expression
per feature, over the as-of history columns and the decision row); the history columns come
from shared as-of scans (:func:`_pack`, :func:`_search`, :func:`_scan_at`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from etl.clean import LINK_TS, LINK_USER, MICRO, SESSION, US_PER_DAY, days_us
from etl.config import EtlConfig, SourceFeatures
from etl.errors import EtlError
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
    """What decides the feature vector's layout: action space, context columns, window, and the
    source features (resolved: vocabulary and constant features filled in).

    The layout is the features of :data:`FEATURE_GROUPS` in order, less the source features
    found constant (``source.constant``); the built-in features are never dropped.
    """

    space: ActionSpace
    context: Mapping[str, list[str]]
    window_days: float
    source: SourceFeatures = field(default_factory=SourceFeatures)
    categories: tuple[str, ...] = ()
    """Recommendation scenario: the categories (the action labels) whose views and earlier
    recommendations are counted per user (:func:`category_features`); empty otherwise."""

    @classmethod
    def from_config(cls, config: EtlConfig, space: ActionSpace) -> FeatureSpec:
        """The spec an ETL config implies.

        Context columns are laid out in sorted order of their names, so that the layout does not
        depend on the order of a TOML table or of a JSON object read back from a manifest.
        Raises :class:`EtlError` when categorical source features have no vocabulary yet
        (:func:`etl.source.resolve_source_features` fills it) or when two features share a name.
        """
        context = {name: config.context_columns[name] for name in sorted(config.context_columns)}
        if config.features.declared and config.features.constant is None:
            raise EtlError(
                "[etl.features]: the source features are not resolved (vocabulary, constant "
                "features): etl.source.resolve_source_features does it in the local engine; "
                "the Spark engine does not yet, and an observation hook takes them from a "
                "manifest (ObservationBuilder.from_manifest)"
            )
        missing = [c for c in config.features.categorical if c not in config.features.vocabulary]
        if missing:
            raise EtlError(
                f"[etl.features] categorical column '{missing[0]}' has no vocabulary: this "
                "engine does not discover it; give [etl.features] vocabulary or use the local "
                "engine"
            )
        categories = (
            tuple(space.labels)
            if config.scenario == "recommendation" and not space.continuous else ()
        )
        spec = cls(space, context, config.feature_window_days, config.features, categories)
        names = [name for group in FEATURE_GROUPS for name, _ in group(spec)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise EtlError(f"[etl.features]: feature name '{twice[0]}' is built twice; rename "
                           "the source column or drop it")
        return spec

    @property
    def row_columns(self) -> list[str]:
        """The decision row's own columns the features read (context and source columns)."""
        return list(dict.fromkeys([*self.context, *self.source.columns()]))

    def features(self) -> list[tuple[str, pl.Expr]]:
        """(name, expression) of every feature, in column order."""
        dropped = set(self.source.constant or [])
        return [(name, expr) for group in FEATURE_GROUPS for name, expr in group(self)
                if name not in dropped or group in BUILT_IN_GROUPS]

    @property
    def names(self) -> list[str]:
        """Feature names in column order."""
        return [name for name, _ in self.features()]


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


def _with_kid(rows: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
    """The rows whose identity ``_fkey`` is among ``keys``, with its code ``_kid``; joining the
    key column alone and attaching the codes is cheaper than joining the whole frame."""
    kid = rows.select(KEY).join(keys, on=KEY, how="left", maintain_order="left")[KID]
    rows = rows.with_columns(kid)
    return rows.filter(pl.col(KID).is_not_null()) if kid.null_count() else rows


def _session_starts(rows: pl.DataFrame, keys: np.ndarray) -> np.ndarray:
    """The packed key of the first row of each (identity, session) pair.

    ``rows``: (``_kid``, ``_sh``: the session's hash) per history row; ``keys``: their packed
    (identity, time) keys. Grouped by session alone first (one 64-bit key, cheaper): for a
    session seen under one identity only, its smallest key is the pair's; only sessions seen
    under several identities are grouped by both.
    """
    frame = rows.with_columns(pl.Series("_o", keys))
    spans = frame.group_by("_sh").agg(pl.col("_o").min().alias("lo"),
                                      pl.col(KID).min().alias("k0"),
                                      pl.col(KID).max().alias("k1"))
    single = spans.filter(pl.col("k0") == pl.col("k1"))
    if single.height == spans.height:
        return _np(single, "lo", np.uint64)
    shared = spans.filter(pl.col("k0") != pl.col("k1")).select("_sh")
    several = frame.join(shared, on="_sh", how="semi").group_by(KID, "_sh").agg(
        pl.col("_o").min().alias("lo")
    )
    return np.concatenate([_np(single, "lo", np.uint64), _np(several, "lo", np.uint64)])


def _decision_key() -> pl.Expr:
    linked_before = pl.col(LINK_USER).is_not_null() & (pl.col(LINK_TS).dt.epoch("us") < pl.col(T))
    return pl.coalesce(
        _user_h("user_id"),
        pl.when(linked_before).then(_user_h(LINK_USER)),
        _h("anonymous_id", 12),
        _h("session_id", 13),
    ).alias(KEY)


@dataclass(frozen=True)
class _Packed:
    """(identity, time) pairs packed into unsigned 64-bit keys whose order is the pairs' order.

    Bits from the top: the identity code, the time (an offset from the earliest history row, or
    when that does not fit, the rank among the history's distinct times), then ``flag_bits`` low
    bits the caller may use. A query key is (identity, query time) with zero flags, so the
    history rows strictly before the query time are exactly the keys below it.
    """

    hist: np.ndarray  # uint64 key of each history row (flags zero)
    queries: list[np.ndarray]  # uint64 key of each query, per query time
    starts: np.ndarray  # uint64 key of each query's identity at the earliest time
    flag_bits: int
    time_mask: int
    lo: int
    ranked: np.ndarray | None  # the history's sorted distinct times when keys hold ranks

    def time_of(self, keys: np.ndarray) -> np.ndarray:
        """The (int64) time of history keys."""
        off = (keys >> np.uint64(self.flag_bits)) & np.uint64(self.time_mask)
        if self.ranked is not None:
            return np.asarray(self.ranked[off.astype(np.int64)], dtype=np.int64)
        return off.astype(np.int64) + self.lo


def _pack(
    kid_h: np.ndarray, t_h: np.ndarray, kid_q: np.ndarray, t_qs: list[np.ndarray],
    flag_bits: int = 0,
) -> _Packed:
    """Pack history rows (identity codes ``kid_h``, times ``t_h``) and queries (``kid_q``, one
    time array per query time) into :class:`_Packed` keys."""
    lo = int(t_h.min()) if len(t_h) else 0
    hi = int(t_h.max()) if len(t_h) else 0
    kmax = max(int(kid_h.max()) if len(kid_h) else 0, int(kid_q.max()) if len(kid_q) else 0)
    time_bits = (hi - lo + 1).bit_length()  # query offsets are clamped to [0, hi - lo + 1]
    ranked: np.ndarray | None = None
    if kmax.bit_length() + time_bits + flag_bits <= 64:
        off_h = (t_h - lo).astype(np.uint64)
        off_q = [(np.clip(t, lo, hi + 1) - lo).astype(np.uint64) for t in t_qs]
    else:  # the order of times is all that matters: ranks need fewer bits
        ranked = np.unique(t_h)
        off_h = np.searchsorted(ranked, t_h).astype(np.uint64)
        # a query's rank: the number of distinct history times before it
        off_q = [np.searchsorted(ranked, t, side="left").astype(np.uint64) for t in t_qs]
        time_bits, lo = len(ranked).bit_length(), 0
        if kmax.bit_length() + time_bits + flag_bits > 64:
            raise ValueError("too many identities and times to pack into 64-bit keys")
    shift = np.uint64(time_bits + flag_bits)
    fb = np.uint64(flag_bits)
    kq = kid_q.astype(np.uint64) << shift
    return _Packed(
        hist=(kid_h.astype(np.uint64) << shift) | (off_h << fb),
        queries=[kq | (o << fb) for o in off_q],
        starts=kq,
        flag_bits=flag_bits,
        time_mask=(1 << time_bits) - 1,
        lo=lo,
        ranked=ranked,
    )


def _search(keys: np.ndarray, packed: _Packed) -> tuple[np.ndarray, list[np.ndarray]]:
    """Positions in the sorted ``keys`` of each query's identity start and of each query time:
    the history rows of the identity strictly before the time are ``keys[start:pos]``.

    Binary searches are several times faster for needles in sorted order: unless the queries
    come sorted already (decisions in order of identity and time), the needles are searched in
    the order of the first query time and the positions put back in query order.
    """
    first = packed.queries[0]
    if len(first) < 2 or bool(np.all(first[1:] >= first[:-1])):
        return (np.searchsorted(keys, packed.starts, side="left"),
                [np.searchsorted(keys, q, side="left") for q in packed.queries])
    order = np.argsort(first)

    def search(needles: np.ndarray) -> np.ndarray:
        pos = np.empty(len(needles), dtype=np.int64)
        pos[order] = np.searchsorted(keys, needles[order], side="left")
        return pos

    return search(packed.starts), [search(q) for q in packed.queries]


def _running(values: np.ndarray) -> np.ndarray:
    """Running totals with a leading 0: ``out[i]`` is the sum of the first ``i`` values."""
    out = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=out[1:])
    return out


def _masked(name: str, values: np.ndarray | pl.Series, valid: np.ndarray) -> pl.Series:
    """``values`` where ``valid``, else null."""
    frame = pl.DataFrame({"v": values, "ok": valid})
    return frame.select(pl.when("ok").then("v").alias(name)).to_series()


def _np(frame: pl.DataFrame, col: str, dtype: type[np.generic]) -> np.ndarray:
    return frame[col].to_numpy().astype(dtype, copy=False)


def _scan_at(
    history: pl.DataFrame,
    dec: pl.DataFrame,
    at: dict[str, str],
    *,
    sums: list[str],
    lasts: dict[str, tuple[str | None, str]],
    first_in_group: str | None = None,
    first_col: str | None = None,
    first_when: str | None = None,
) -> dict[str, pl.Series]:
    """Values of ``history`` as of several times per decision, from one sort of the history.

    ``history``: rows of (``_kid``, ``_avail``, ``_tie``, increments...); ``dec``: the decisions
    (``_kid`` and the time columns), fastest in order of identity and time. For each
    ``suffix -> time column`` of ``at``, returns per decision the sum of each column of ``sums``
    (booleans or integers, summed as Int64) over the rows of its identity available strictly
    before that time (``<sum><suffix>``).
    At the first time of ``at`` only, for each ``name -> (condition, column)`` of ``lasts``:
    the column's value on the last such row where the condition (a boolean column, or ``None``:
    every row) holds, null if none (``name``). ``first_col`` counts the rows that are the first
    of their ``first_in_group`` value within the identity (orders placed: the first row of each
    order_id), only where ``first_when`` holds.

    The history is sorted once by (identity, time, ``_tie``) on a packed 64-bit key; each query
    time is a binary search into it; sums are differences of running totals, and a "last row
    where" is a forward-filled row index read at the row before. Values follow the rows of
    ``dec``.
    """
    extra: list[pl.Expr] = []
    if first_in_group is not None and first_col is not None:
        extra.append(pl.col(first_in_group).hash(seed=1).alias("_g"))
        if first_when is not None:
            extra.append(pl.col(first_when).alias("_gw"))
    taken = [KID, AVAIL, TIE, *[c for c in sums if c != first_col]]
    for cond, col in lasts.values():
        for c in (cond, col):
            if c is not None and c not in taken:
                taken.append(c)
    hist = history.select(*taken, *extra)
    q = dec.select(KID, *at.values())
    packed = _pack(_np(hist, KID, np.int64), _np(hist, AVAIL, np.int64), _np(q, KID, np.int64),
                   [_np(q, c, np.int64) for c in at.values()])
    hist = hist.with_columns(pl.Series("_p", packed.hist))
    constant_tie = hist[TIE].null_count() == 0 and hist[TIE].min() == hist[TIE].max()
    hist = hist.sort(["_p"] if constant_tie else ["_p", TIE])
    if extra:
        is_first = pl.col("_g").is_first_distinct().over(KID)
        if first_when is not None:
            is_first = is_first & pl.col("_gw").fill_null(False)
        hist = hist.with_columns(is_first.alias(str(first_col)))

    start, at_pos = _search(hist["_p"].to_numpy(), packed)
    out: dict[str, pl.Series] = {}
    for c in sums:
        total = _running(hist[c].cast(pl.Int64).fill_null(0).to_numpy())
        for suffix, pos in zip(at, at_pos, strict=True):
            out[f"{c}{suffix}"] = pl.Series(f"{c}{suffix}", total[pos] - total[start])
    if lasts:
        pos = at_pos[0]
        has_row = pos > start
        before = np.where(has_row, pos - 1, 0)
        rows = np.arange(hist.height, dtype=np.int64)
        for cond in dict.fromkeys(cond for cond, _ in lasts.values()):
            if cond is None:
                last = rows
            else:  # the index of the last row at or before each row where ``cond`` holds
                holds = hist[cond].fill_null(False).to_numpy()
                last = np.maximum.accumulate(np.where(holds, rows, -1))
            k = last[before] if hist.height else before
            found = _masked("k", k, has_row & (k >= start))
            for name, (c, col) in lasts.items():
                if c == cond:
                    out[name] = hist[col].gather(found).alias(name)
    return out


def _decision_frame(
    decisions: pl.DataFrame, links: pl.DataFrame, spec: FeatureSpec
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The decisions as queries: (decision frame in order of identity and time, identity codes,
    session codes). The frame keeps ``_row`` (the decisions' row order), the query times ``_t``,
    ``_t0`` (window start), ``_t1`` (a day before) and the decision row's own columns."""
    win = days_us(spec.window_days)
    dec = _select_linked(
        decisions.with_columns(pl.col("event_ts").dt.epoch("us").alias(T)),
        ["user_id", "anonymous_id", "session_id", SESSION, T, *spec.row_columns],
        links,
    ).with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"))
    dec = dec.with_columns(_decision_key(), (pl.col(T) - win).alias("_t0"),
                           (pl.col(T) - US_PER_DAY).alias("_t1"),
                           pl.col(SESSION).hash(seed=14).alias("_sh"))
    # integer codes for identities and sessions (small packed sort keys)
    keys = dec.select(KEY).unique().with_row_index(KID)
    sess_keys = dec.select("_sh").unique().with_row_index(SID)
    codes = dec.select(KEY, "_sh").join(keys, on=KEY, how="left", maintain_order="left").join(
        sess_keys, on="_sh", how="left", maintain_order="left"
    )
    # decisions in order of identity and time: the binary searches find sorted needles
    dec = dec.select("_row", T, "_t0", "_t1", *spec.row_columns).with_columns(
        codes[KID], codes[SID]
    ).sort(KID, T)
    return dec, keys, sess_keys


def _event_history(
    ev: pl.DataFrame, dec: pl.DataFrame, keys: pl.DataFrame
) -> tuple[dict[str, pl.Series], pl.DataFrame]:
    """Counts of events, views and carts (now, at the window start, a day before), the time of
    the last event and sessions started, from one sort of packed keys (identity, time, and the
    view and cart flags in the two lowest bits); sessions started from one key per (identity,
    session) at the session's first row. Also returns the keyed history (for the decisions)."""
    etype = pl.col("event_type")
    hist = _with_kid(_history_keys(ev, "event_ts"), keys).select(
        KID, AVAIL, "_sh", "event_id", ACTION_IDX, ACTION_VAL,
        (etype.is_in(["page_view", "view_item"]).cast(pl.UInt8) * 2
         + (etype == "add_to_cart").cast(pl.UInt8)).alias("_f"),
        (etype == "decision").alias("c_dec"),
    )
    times = {"": T, "_0": "_t0", "_1": "_t1"}
    packed = _pack(_np(hist, KID, np.int64), _np(hist, AVAIL, np.int64), _np(dec, KID, np.int64),
                   [_np(dec, c, np.int64) for c in times.values()], flag_bits=2)
    flags = _np(hist, "_f", np.uint64)
    ev_keys = np.sort(packed.hist | flags)
    start, at_pos = _search(ev_keys, packed)
    views = _running(((ev_keys >> np.uint64(1)) & np.uint64(1)).astype(np.int64))
    carts = _running((ev_keys & np.uint64(1)).astype(np.int64))
    out: dict[str, pl.Series] = {}
    for suffix, pos in zip(times, at_pos, strict=True):
        out[f"c_ev{suffix}"] = pl.Series(pos - start)
        out[f"c_view{suffix}"] = pl.Series(views[pos] - views[start])
        out[f"c_cart{suffix}"] = pl.Series(carts[pos] - carts[start])
    has_ev = at_pos[0] > start
    last_key = ev_keys[np.where(has_ev, at_pos[0] - 1, 0)] if len(ev_keys) else at_pos[0]
    out["last_ev"] = _masked("last_ev", packed.time_of(last_key.astype(np.uint64)), has_ev)
    sess_keys_sorted = np.sort(_session_starts(hist.select(KID, "_sh"), packed.hist))
    s_start, s_pos = _search(sess_keys_sorted, packed)
    for suffix, pos in zip(times, s_pos, strict=True):
        out[f"c_sess{suffix}"] = pl.Series(pos - s_start)
    return out, hist


def _decision_history(hist: pl.DataFrame, dec: pl.DataFrame, spec: FeatureSpec
                      ) -> dict[str, pl.Series]:
    """Earlier decisions: offers, decisions, rates, the last action, and per category how
    often it was recommended (``c_rec<i>``, recommendation scenario)."""
    space = spec.space
    offer = (pl.col(ACTION_VAL) > 0) if space.continuous else (pl.col(ACTION_IDX) != 0)
    recs = [f"c_rec{i}" for i in range(len(spec.categories))]
    dh = hist.filter("c_dec").select(
        KID,
        AVAIL,
        pl.col("event_id").hash(seed=0).alias(TIE),
        "c_dec",
        offer.fill_null(False).alias("c_offer"),
        _money(pl.col(ACTION_VAL).fill_null(0.0)).alias("c_rate"),
        ACTION_IDX,
        ACTION_VAL,
        *[(pl.col(ACTION_IDX) == i).fill_null(False).alias(c) for i, c in enumerate(recs)],
    )
    last_action = ("last_val", ACTION_VAL) if space.continuous else ("last_idx", ACTION_IDX)
    return _scan_at(
        dh, dec, {"": T, "_0": "_t0"},
        sums=["c_offer", "c_dec", *(["c_rate"] if space.continuous else []), *recs],
        lasts={"last_offer": ("c_offer", AVAIL), "last_dec": ("c_dec", AVAIL),
               last_action[0]: ("c_dec", last_action[1])},
    )


def _category_views(ev: pl.DataFrame, dec: pl.DataFrame, keys: pl.DataFrame,
                    categories: tuple[str, ...]) -> dict[str, pl.Series]:
    """Earlier item views per category (``c_view<i>``, now and at the window start)."""
    views = _with_kid(_history_keys(ev.filter(pl.col("event_type") == "view_item"), "event_ts"),
                      keys)
    cols = [f"c_view{i}" for i in range(len(categories))]
    views = views.select(
        KID, AVAIL, pl.col("event_id").hash(seed=0).alias(TIE),
        *[(pl.col("item_category") == c).fill_null(False).alias(col)
          for c, col in zip(categories, cols, strict=True)],
    )
    return _scan_at(views, dec, {"": T, "_0": "_t0"}, sums=cols, lasts={})


def _order_history(orders: pl.DataFrame, dec: pl.DataFrame, keys: pl.DataFrame,
                   links: pl.DataFrame) -> dict[str, pl.Series]:
    """Earlier orders: orders placed, net money, gross and discount, the last placed order."""
    od = _select_linked(orders, ORDER_NEED, links)
    od = _with_kid(_history_keys(od, "order_ts"), keys)
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
    return _scan_at(
        od, dec, {"": T, "_0": "_t0"},
        sums=["c_orders", "c_money", "c_gross", "c_disc"],
        lasts={"last_order": ("_placed", AVAIL)},
        first_in_group="order_id", first_col="c_orders", first_when="_placed",
    )


def _session_history(ev: pl.DataFrame, dec: pl.DataFrame, sess_keys: pl.DataFrame
                     ) -> dict[str, pl.Series]:
    """Earlier events of the decision's own session, of any identity."""
    se = ev.select("_sh", pl.col("event_ts").dt.epoch("us").alias(AVAIL)).join(
        sess_keys, on="_sh", how="inner"
    )
    s_packed = _pack(_np(se, SID, np.int64), _np(se, AVAIL, np.int64), _np(dec, SID, np.int64),
                     [_np(dec, T, np.int64)])
    se_start, (se_pos,) = _search(np.sort(s_packed.hist), s_packed)
    return {"c_se": pl.Series(se_pos - se_start)}


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
    context and source-feature columns); ``links``: the identity map
    (:func:`etl.clean.identity_links`). Rows at or after a decision's time are ignored for that
    decision. The as-of scans below compute the history columns once; the feature groups of
    ``spec`` (:data:`FEATURE_GROUPS`) turn them and the decision row into features.
    """
    names = spec.names
    n = decisions.height
    if n == 0:
        return np.zeros((0, len(names)), dtype=np.float64)
    dec, keys, sess_keys = _decision_frame(decisions, links, spec)
    need = [*EVENT_NEED, "item_category"] if spec.categories else EVENT_NEED
    ev = _select_linked(events, need, links).with_columns(
        pl.col(SESSION).hash(seed=14).alias("_sh")
    )
    out, hist = _event_history(ev, dec, keys)
    out.update(_decision_history(hist, dec, spec))
    if spec.categories:
        out.update(_category_views(ev, dec, keys, spec.categories))
    out.update(_order_history(orders, dec, keys, links))
    out.update(_session_history(ev, dec, sess_keys))
    frame = dec.with_columns(pl.Series(name, s) for name, s in out.items())
    cols = spec.features()
    matrix = frame.select([c.cast(pl.Float64).alias(f"f{i}") for i, (_, c) in enumerate(cols)])
    result = np.empty((n, len(cols)), dtype=np.float64)
    result[_np(frame, "_row", np.int64)] = matrix.to_numpy()  # back in the decisions' order
    return result


# ----------------------------------------------------------------------------- feature groups
# Each group turns the as-of history columns and the decision row's own columns into named
# feature expressions; the feature vector is the groups' features in this order. Adding a
# feature means adding (or extending) one group.
Feature = tuple[str, pl.Expr]


def _window(col: str) -> pl.Expr:
    """A count or sum over the window: its value now minus its value at the window start."""
    return (pl.col(col).fill_null(0) - pl.col(f"{col}_0").fill_null(0)).cast(pl.Float64)


def _since(col: str, spec: FeatureSpec) -> pl.Expr:
    """Days since the time in ``col`` when within the window, else the window's length."""
    win = days_us(spec.window_days)
    last = pl.col(col)
    inside = last.is_not_null() & (last >= pl.col("_t0"))
    return pl.when(inside).then((pl.col(T) - last) / US_PER_DAY).otherwise(win / US_PER_DAY)


def order_features(spec: FeatureSpec) -> list[Feature]:
    """Recency, frequency, money and discount share of the placed orders in the window."""
    gross = _window("c_gross")
    return [
        ("recency_days", _since("last_order", spec)),
        ("n_orders", _window("c_orders")),
        ("monetary", _window("c_money") / MICRO),
        ("discount_share", pl.when(gross > 0).then(_window("c_disc") / gross).otherwise(0.0)),
    ]


def activity_features(spec: FeatureSpec) -> list[Feature]:
    """Sessions, events, views, carts in the window; events in the last day; days since the
    last event."""
    return [
        ("n_sessions", _window("c_sess")),
        ("n_events", _window("c_ev")),
        ("n_views", _window("c_view")),
        ("n_carts", _window("c_cart")),
        ("n_events_1d",
         (pl.col("c_ev").fill_null(0) - pl.col("c_ev_1").fill_null(0)).cast(pl.Float64)),
        ("days_since_last_event", _since("last_ev", spec)),
    ]


def offer_features(spec: FeatureSpec) -> list[Feature]:
    """Offers in the window, days since the last, and the last decision's action (one-hot, or
    the last and mean rate for continuous actions)."""
    feats: list[Feature] = [
        ("n_offers", _window("c_offer")),
        ("days_since_last_offer", _since("last_offer", spec)),
    ]
    last_in = pl.col("last_dec").is_not_null() & (pl.col("last_dec") >= pl.col("_t0"))
    if spec.space.continuous:
        n_dec = _window("c_dec")
        return [*feats,
                ("last_rate",
                 pl.when(last_in).then(pl.col("last_val").fill_null(0.0)).otherwise(0.0)),
                ("mean_past_rate",
                 pl.when(n_dec > 0).then(_window("c_rate") / MICRO / n_dec).otherwise(0.0))]
    return feats + [
        (f"last_action_{label}",
         (last_in & (pl.col("last_idx") == i)).fill_null(False).cast(pl.Float64))
        for i, label in enumerate(spec.space.labels)
    ]


def session_features(spec: FeatureSpec) -> list[Feature]:
    """Earlier events of the decision's own session."""
    return [("session_events", pl.col("c_se").fill_null(0).cast(pl.Float64))]


def category_features(spec: FeatureSpec) -> list[Feature]:
    """Recommendation scenario: per category, the user's item views and the times it was
    recommended to them in the window: what a category's appeal and its fatigue depend on."""
    return [
        feature
        for i, label in enumerate(spec.categories)
        for feature in ((f"views_{label}", _window(f"c_view{i}")),
                        (f"recommended_{label}", _window(f"c_rec{i}")))
    ]


def time_features(spec: FeatureSpec) -> list[Feature]:
    """Hour of day and day of week of the decision (UTC), on the circle."""
    day_frac = (pl.col(T) % US_PER_DAY) / US_PER_DAY * (2 * math.pi)
    week_frac = ((pl.col(T) // US_PER_DAY + 3) % 7) / 7 * (2 * math.pi)  # 0 = Monday
    return [("hour_sin", day_frac.sin()), ("hour_cos", day_frac.cos()),
            ("dow_sin", week_frac.sin()), ("dow_cos", week_frac.cos())]


def context_features(spec: FeatureSpec) -> list[Feature]:
    """One-hot of each configured context column over its configured values."""
    return [
        (f"{ctx}_{v}", (pl.col(ctx) == v).fill_null(False).cast(pl.Float64))
        for ctx, values in spec.context.items() for v in values
    ]


def _number(expr: pl.Expr) -> pl.Expr:
    """A source number as a feature: null and non-finite values as 0."""
    v = expr.cast(pl.Float64)
    return pl.when(v.is_finite()).then(v).otherwise(0.0)


def numeric_features(spec: FeatureSpec) -> list[Feature]:
    """``[etl.features] numeric`` columns of the decision row, as they are."""
    return [(col, _number(pl.col(col))) for col in spec.source.numeric]


def position_features(spec: FeatureSpec) -> list[Feature]:
    """The decision's slot (``position``), when ``[etl.features] position`` is set."""
    return [("position", _number(pl.col("position")))] if spec.source.position else []


def list_features(spec: FeatureSpec) -> list[Feature]:
    """One feature per element of each fixed-length ``[etl.features] lists`` column."""
    return [
        (f"{col}_{i}", _number(pl.col(col).arr.get(i, null_on_oob=True)))
        for col, n in spec.source.lists.items() for i in range(n)
    ]


def categorical_features(spec: FeatureSpec) -> list[Feature]:
    """One-hot of each ``[etl.features] categorical`` column over its vocabulary (the most
    frequent values), plus ``<column>__other`` for any other non-null value."""
    feats: list[Feature] = []
    for col in spec.source.categorical:
        values = spec.source.vocabulary.get(col, [])
        feats += [(f"{col}_{v}", (pl.col(col) == v).fill_null(False).cast(pl.Float64))
                  for v in values]
        other = pl.col(col).is_not_null() & ~pl.col(col).is_in(values)
        feats.append((f"{col}__other", other.fill_null(False).cast(pl.Float64)))
    return feats


BUILT_IN_GROUPS: tuple[Callable[[FeatureSpec], list[Feature]], ...] = (
    order_features,
    activity_features,
    offer_features,
    session_features,
    time_features,
    context_features,
    category_features,
)
FEATURE_GROUPS: tuple[Callable[[FeatureSpec], list[Feature]], ...] = (
    *BUILT_IN_GROUPS,
    numeric_features,
    position_features,
    list_features,
    categorical_features,
)


__all__ = ["FeatureSpec", "Scaling", "raw_features"]
