"""Source columns beyond the raw-log contract: what the reader carries, decisions from impression
events, and the vocabulary and constant checks of the source features.

- :func:`source_columns`: the extra event columns the readers (``etl.io.scan_table``,
  :func:`etl.core.normalize_frame`) carry with their types: the context columns (strings, as
  before), the ``[etl.features]`` columns and the ``[etl.outcomes]`` columns. Columns of the
  contract itself (``position``, ``price``, ...) are read as such and never repeated.
- :func:`with_decision_events`: the column mapping with ``[etl.decisions]`` applied (the
  impression event type maps to ``decision``, the action and decision-id columns are renamed).
- :func:`resolve_source_features`: the config with the categorical vocabulary (the ``top_k``
  most frequent values on decision events) and the constant source features filled in, taken
  from a stored manifest when there is one (nightly runs never re-index), else discovered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
import structlog

from etl.config import ColumnMapping, EtlConfig, SourceFeatures
from etl.errors import EtlError
from etl.schema import EVENT_COLUMNS

log = structlog.get_logger(__name__)
DECISION = "decision"


def source_columns(config: EtlConfig) -> dict[str, pl.DataType]:
    """Extra event columns (not in the contract) the readers carry: name -> type, in order."""
    out: dict[str, pl.DataType] = {c: pl.String() for c in config.context_columns}
    feats = config.features
    wanted: list[tuple[str, pl.DataType]] = [(c, pl.Float64()) for c in feats.numeric]
    wanted += [(c, pl.String()) for c in feats.categorical]
    wanted += [(c, pl.Array(pl.Float64, n)) for c, n in feats.lists.items()]
    wanted += [(c, pl.Float64()) for c in config.outcomes.columns().values()]
    for col, dtype in wanted:
        if col not in EVENT_COLUMNS and col != "action" and col not in out:
            out[col] = dtype
    return out


def with_decision_events(mapping: ColumnMapping, config: EtlConfig) -> ColumnMapping:
    """``mapping`` with ``[etl.decisions]`` applied (unchanged when no event type is set)."""
    dec = config.decisions
    if dec.event_type is None:
        return mapping
    events = mapping.events
    type_map = {**events.event_type_map, dec.event_type: DECISION}
    rename = dict(events.rename)
    if dec.action_column != "action":
        rename[dec.action_column] = "action"
    if dec.decision_id_column is not None and dec.decision_id_column != "decision_id":
        rename[dec.decision_id_column] = "decision_id"
    new_events = events.model_copy(update={"event_type_map": type_map, "rename": rename})
    return mapping.model_copy(update={"events": new_events})


def decision_id_fill(config: EtlConfig) -> list[pl.Expr]:
    """Decision events without a decision id take their event id (impression decisions whose
    source has no decision id column); nothing otherwise."""
    dec = config.decisions
    if dec.event_type is None or dec.decision_id_column is not None:
        return []
    is_decision = pl.col("event_type") == DECISION
    return [
        pl.when(is_decision & pl.col("decision_id").is_null())
        .then(pl.col("event_id"))
        .otherwise(pl.col("decision_id"))
        .alias("decision_id")
    ]


# ----------------------------------------------------------------------------- vocabulary
def _range_exprs(feats: SourceFeatures, schema: Mapping[str, pl.DataType]) -> list[pl.Expr]:
    """min and max (nulls as 0) of every numeric source feature, over the rows given."""
    values: list[tuple[str, pl.Expr]] = [(c, pl.col(c)) for c in feats.numeric]
    if feats.position:
        values.append(("position", pl.col("position")))
    for col, n in feats.lists.items():
        values += [(f"{col}_{i}", pl.col(col).arr.get(i, null_on_oob=True)) for i in range(n)]
    exprs: list[pl.Expr] = []
    for name, expr in values:
        v = expr.cast(pl.Float64).fill_null(0.0)
        exprs += [v.min().alias(f"min:{name}"), v.max().alias(f"max:{name}")]
    return exprs


def _stat_queries(lf: pl.LazyFrame, feats: SourceFeatures) -> list[pl.LazyFrame]:
    """Per piece of events: the numeric ranges, then each categorical column's value counts,
    over its decision events."""
    dec = lf.filter(pl.col("event_type") == DECISION)
    queries = [dec.select(pl.len().alias("n"), *_range_exprs(feats, {}))]
    for col in feats.categorical:
        queries.append(
            dec.group_by(pl.col(col).cast(pl.String).alias("value")).agg(
                pl.len().cast(pl.Int64).alias("n")
            )
        )
    return queries


def _combine(
    feats: SourceFeatures, results: Sequence[list[pl.DataFrame]]
) -> tuple[dict[str, tuple[float, float]], dict[str, pl.DataFrame], int]:
    """Per-piece results combined: (name -> (min, max), column -> value counts, decisions)."""
    n = sum(int(r[0]["n"][0]) for r in results)
    ranges: dict[str, tuple[float, float]] = {}
    if results:
        ranges_df = pl.concat([r[0] for r in results])
        names = [c.removeprefix("min:") for c in ranges_df.columns if c.startswith("min:")]
        for name in names:
            lo, hi = ranges_df[f"min:{name}"].min(), ranges_df[f"max:{name}"].max()
            if lo is not None and hi is not None:
                ranges[name] = (float(lo), float(hi))  # type: ignore[arg-type]
    counts: dict[str, pl.DataFrame] = {}
    for i, col in enumerate(feats.categorical):
        parts = [
            pl.DataFrame(schema={"value": pl.String, "n": pl.Int64}),
            *[r[i + 1] for r in results],
        ]
        counts[col] = pl.concat(parts).group_by("value").agg(pl.col("n").sum())
    return ranges, counts, n


def _top(counts: pl.DataFrame, k: int) -> list[str]:
    """The ``k`` most frequent non-null values, most frequent first (ties: by value)."""
    ranked = counts.drop_nulls("value").sort(["n", "value"], descending=[True, False])
    return [str(v) for v in ranked["value"].head(k)]


def _constant(
    feats: SourceFeatures,
    ranges: Mapping[str, tuple[float, float]],
    counts: Mapping[str, pl.DataFrame],
    vocabulary: Mapping[str, list[str]],
    n: int,
) -> list[str]:
    """Source feature names whose value is the same on every decision event."""
    if n == 0:
        return []
    out = [name for name, (lo, hi) in ranges.items() if lo == hi]
    for col in feats.categorical:
        values = set(vocabulary.get(col, []))
        c = counts[col]
        known = c.filter(pl.col("value").is_in(list(values)))
        other = int(
            c.filter(pl.col("value").is_not_null() & ~pl.col("value").is_in(list(values)))[
                "n"
            ].sum()
        )
        nulls = int(c.filter(pl.col("value").is_null())["n"].sum())
        for value, m in known.iter_rows():
            if m in (0, n):
                out.append(f"{col}_{value}")
        if other in (0, n):
            out.append(f"{col}__other")
        if nulls == n:
            out += [f"{col}_{v}" for v in values if f"{col}_{v}" not in out]
    return sorted(set(out))


def stored_features(stored: Mapping[str, Any] | None) -> SourceFeatures | None:
    """The resolved source features of a stored manifest (None without one, or when the
    manifest predates them)."""
    if stored is None:
        return None
    entry = stored.get("config", {}).get("features")
    if not isinstance(entry, Mapping) or entry.get("constant") is None:
        return None
    return SourceFeatures.model_validate(entry)


def resolve_source_features(
    config: EtlConfig,
    events: Sequence[pl.LazyFrame],
    stored: Mapping[str, Any] | None = None,
) -> EtlConfig:
    """``config`` with ``features.vocabulary`` and ``features.constant`` filled.

    ``events``: pieces of the read events (one per file, say); ``stored``: the manifest of the
    dataset a nightly run extends (or ``scaling_from``'s): its vocabulary and constant features
    are reused when it declares the same source features, so the layout never changes.
    """
    feats = config.features
    if not feats.declared or feats.constant is not None:
        return config
    old = stored_features(stored)
    if old is not None:
        same = old.model_dump(exclude={"vocabulary", "constant"}) == feats.model_dump(
            exclude={"vocabulary", "constant"}
        )
        if not same:
            raise EtlError(
                "the dataset's manifest declares other [etl.features] than the config: a "
                "nightly run cannot change the features; write a new dataset folder"
            )
        return config.model_copy(update={"features": old})
    results = [pl.collect_all(_stat_queries(lf, feats)) for lf in events]
    ranges, counts, n = _combine(feats, results)
    vocabulary = {
        col: feats.vocabulary.get(col) or _top(counts[col], feats.top_k)
        for col in feats.categorical
    }
    constant = _constant(feats, ranges, counts, vocabulary, n) if feats.drop_constant else []
    if constant:
        log.warning("constant source features dropped", n=len(constant), features=constant)
    resolved = feats.model_copy(update={"vocabulary": vocabulary, "constant": constant})
    return config.model_copy(update={"features": resolved})


__all__ = [
    "decision_id_fill",
    "resolve_source_features",
    "source_columns",
    "stored_features",
    "with_decision_events",
]
