"""What both engines share after the transform: row accounting, the manifest, atomic writes.

The local engine (:mod:`etl.pipeline`) and the Spark engine (:mod:`etl.spark_engine`) produce the
same dataset; everything here is the common part of how it is accounted for and published:

* accounting: :func:`tally` (per-date counts that must reconcile exactly), :func:`totals`,
  :func:`check_quarantine` (the ceiling on the quarantined share);
* the manifest: :func:`build_manifest`, :func:`load_scaling` (reuse a stored scaling),
  :func:`stored_action_space` (reuse a stored action vocabulary);
* atomic publication: :func:`write_json`, :func:`swap_dir`, :func:`write_day` (a nightly run
  replaces one date's partitions and merges the manifest).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import structlog

from etl.attribute import reward_kind
from etl.config import EtlConfig
from etl.core import RAW_OBS
from etl.episodes import episode_mode
from etl.errors import EtlError
from etl.features import FeatureSpec, Scaling
from etl.manifest import Manifest
from etl.schema import SCHEMA_VERSION
from etl.validate import ActionSpace

log = structlog.get_logger(__name__)
MANIFEST = "_manifest.json"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# ----------------------------------------------------------------------------- accounting
def tally(counts: pl.DataFrame, rows_in: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per-date accounting ``{date: {table: {rows_in, used, quarantined, dropped}}}``.

    ``counts``: the transform's counts (``etl.core.COUNT_SCHEMA``); ``rows_in``: input rows per
    ``table, date`` (``n``). Raises when a table's rows of a date do not reconcile exactly.
    """
    by_date: dict[str, dict[str, Any]] = {}
    for row in rows_in.iter_rows(named=True):
        entry = by_date.setdefault(row["date"].isoformat(), {})
        entry[row["table"]] = {"rows_in": row["n"], "used": 0, "quarantined": {}, "dropped": {}}
    agg = counts.group_by("table", "date", "outcome", "reason").agg(pl.col("n").sum()).sort(
        "table", "date", "outcome", "reason"
    )
    for row in agg.iter_rows(named=True):
        day = row["date"].isoformat()
        if row["table"] == "decisions":  # decisions that make no transition (not input rows)
            ex = by_date.setdefault(day, {}).setdefault("decisions", {"excluded": {}})
            ex.setdefault(row["outcome"], {})[row["reason"]] = row["n"]
            continue
        entry = by_date.setdefault(day, {}).setdefault(
            row["table"], {"rows_in": 0, "used": 0, "quarantined": {}, "dropped": {}}
        )
        if row["outcome"] == "used":
            entry["used"] += row["n"]
        else:
            entry[row["outcome"]][row["reason"]] = row["n"]
    for day, tables in by_date.items():
        for table, c in tables.items():
            if table == "decisions":
                continue
            total = c["used"] + sum(c["quarantined"].values()) + sum(c["dropped"].values())
            if total != c["rows_in"]:
                raise RuntimeError(
                    f"row accounting does not reconcile for {table} on {day}: "
                    f"{c['rows_in']} in, {total} accounted for"
                )
    return dict(sorted(by_date.items()))


def totals(by_date: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The per-date accounting of :func:`tally` summed over dates (the manifest's ``counts``)."""
    out: dict[str, Any] = {}
    for tables in by_date.values():
        for table, c in tables.items():
            if table == "decisions":
                dec = out.setdefault("decisions", {"excluded": {}})
                for outcome, reasons in c.items():
                    ex = dec.setdefault(outcome, {})
                    for reason, n in reasons.items():
                        ex[reason] = ex.get(reason, 0) + n
                continue
            t = out.setdefault(table, {"rows_in": 0, "used": 0, "quarantined": {}, "dropped": {}})
            t["rows_in"] += c["rows_in"]
            t["used"] += c["used"]
            for kind in ("quarantined", "dropped"):
                for reason, n in c[kind].items():
                    t[kind][reason] = t[kind].get(reason, 0) + n
    for name, t in out.items():
        if name == "decisions":
            for outcome in t:
                t[outcome] = dict(sorted(t[outcome].items()))
            continue
        t["quarantined"] = dict(sorted(t["quarantined"].items()))
        t["dropped"] = dict(sorted(t["dropped"].items()))
    return dict(sorted(out.items()))


def check_quarantine(counts: dict[str, Any], config: EtlConfig, action_hint: str = "") -> None:
    """Raise :class:`EtlError` when the quarantined share of the input rows is above
    ``config.max_quarantine_share`` (``counts``: the totals of :func:`totals`); log the
    decisions quarantined for their action and those with unknown context values.
    ``action_hint``: the labels expected and found (:func:`etl.validate.action_hint`), added
    when actions were quarantined."""
    tables = [t for name, t in counts.items() if name != "decisions"]
    rows = sum(t["rows_in"] for t in tables)
    bad = sum(sum(t["quarantined"].values()) for t in tables)
    events = counts.get("events", {}).get("quarantined", {})
    wrong_action = {r: events[r] for r in ("bad_action", "unknown_action") if events.get(r)}
    hint = f"; {action_hint}" if wrong_action and action_hint else ""
    if wrong_action:
        log.warning("decisions quarantined for their action", **wrong_action, hint=action_hint)
    unknown_context = counts.get("decisions", {}).get("unknown_context")
    if unknown_context:
        log.warning("decisions with context values outside [etl] context_columns (all-zero "
                    "one-hot features)", **unknown_context)
    if rows and bad / rows > config.max_quarantine_share:
        reasons: dict[str, int] = {}
        for t in tables:
            for r, n in t["quarantined"].items():
                reasons[r] = reasons.get(r, 0) + n
        top = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:3])
        raise EtlError(
            f"{bad} of {rows} rows ({bad / rows:.1%}) failed validation, above "
            f"max_quarantine_share={config.max_quarantine_share:.1%} ({top}); nothing "
            f"written{hint}{_time_hint(reasons)}"
        )
    check_reason_shares(counts, config)


def reason_ceiling(kind: str, reason: str, config: EtlConfig) -> float | None:
    """The largest share of its table's rows one reason may take (``[etl] max_reason_share``,
    else ``max_drop_share`` for drop reasons); None: no ceiling of its own."""
    if reason in config.max_reason_share:
        return config.max_reason_share[reason]
    return config.max_drop_share if kind == "dropped" else None


def check_reason_shares(counts: dict[str, Any], config: EtlConfig) -> None:
    """Raise :class:`EtlError` with the counts when one drop or quarantine reason takes more of
    its table's rows than its ceiling (:func:`reason_ceiling`): no silent large losses."""
    for table, t in counts.items():
        if table == "decisions" or not t["rows_in"]:
            continue
        for kind in ("dropped", "quarantined"):
            for reason, n in t[kind].items():
                ceiling = reason_ceiling(kind, reason, config)
                if ceiling is None or n / t["rows_in"] <= ceiling:
                    continue
                key = f"max_reason_share.{reason}" if reason in config.max_reason_share \
                    else "max_drop_share"
                raise EtlError(
                    f"{n} of {t['rows_in']} {table} rows ({n / t['rows_in']:.1%}) {kind} as "
                    f"{reason}, above [etl] {key} = {ceiling:.1%}; nothing written "
                    f"({describe_counts(counts)}); set [etl] max_reason_share.{reason} to "
                    f"accept it{_time_hint({reason: n})}"
                )


def _time_hint(reasons: dict[str, int]) -> str:
    if not reasons or max(reasons, key=lambda r: reasons[r]) != "future_event":
        return ""
    return ("; times after the run date: a wrong time format or unit? see [etl.mapping] "
            "parse_time in docs/mapping.md")


def describe_counts(counts: dict[str, Any]) -> str:
    """The row accounting of :func:`totals` on one line: ``orders: 10 in = 8 used + 1
    quarantined (bad_price 10.0%) + 1 dropped (duplicate_order_line 10.0%)``."""
    parts = []
    for table, t in counts.items():
        if table == "decisions":
            continue
        rows = t["rows_in"]
        text = f"{table}: {rows} in = {t['used']} used"
        for kind in ("quarantined", "dropped"):
            total = sum(t[kind].values())
            shares = ", ".join(f"{r} {n / rows:.1%}" for r, n in t[kind].items())
            text += f" + {total} {kind}" + (f" ({shares})" if shares else "")
        parts.append(text)
    return "; ".join(parts) or "no input rows"


def refuse_without_decisions(counts: dict[str, Any], n_decisions: int, config: EtlConfig
                             ) -> None:
    """Raise :class:`EtlError` for logs without decision events (unless ``require_decisions``
    is off), once every input row is accounted for, with the counts: the user sees the rows were
    read, and why nothing can be learnt from them."""
    if n_decisions or not config.require_decisions:
        return
    events = counts.get("events", {}).get("rows_in", 0)
    raise EtlError(
        f"no decision events in {events} rows: map the events that record what the platform "
        f"chose (event_type 'decision' with decision_id and action; see the [etl.mapping] "
        f"event_type_map and docs/mapping.md), or set [etl] require_decisions = false to load "
        f"clickstream history only; nothing written ({describe_counts(counts)})"
    )


# ----------------------------------------------------------------------------- manifest
def build_manifest(
    config: EtlConfig,
    space: ActionSpace,
    spec: FeatureSpec,
    scaling: Scaling,
    by_date: dict[str, dict[str, Any]],
    inputs: list[dict[str, str]],
    dates: list[str],
) -> dict[str, Any]:
    """The ``_manifest.json`` of a dataset (the same for both engines), checked against the typed
    contract (:class:`etl.manifest.Manifest`) before it is written."""
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "scenario": config.scenario,
        "episode_mode": episode_mode(config),
        "gamma": config.gamma,
        "feature_names": spec.names,
        "scaling": scaling.to_manifest(),
        "action_space": space.to_manifest(),
        "reward": {
            "kind": reward_kind(config),
            "weights": config.reward_weights.model_dump(),
            "settlement_days": config.settlement_days,
        },
        "inputs": inputs,
        "counts": totals(by_date),
        "counts_by_date": by_date,
        "date_range": [dates[0], dates[-1]] if dates else None,
        # how it ran (engine, buckets, Spark settings) is not what it means: every engine and
        # bucket count writes the same manifest
        "config": config.model_dump(
            mode="json", exclude={"engine", "spark", "n_buckets", "events_per_bucket",
                                  "workers"}
        ),
    }
    Manifest.from_dict(manifest, source="the manifest being written")
    return manifest


def stored_manifest(config: EtlConfig, out_root: Path, prefer_existing: bool
                    ) -> dict[str, Any] | None:
    """The manifest whose scaling and action vocabulary a run reuses: ``config.scaling_from``,
    else (``prefer_existing``, nightly runs) the output's manifest, else None."""
    path = _stored_path(config, out_root, prefer_existing)
    if path is None:
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def stored_action_space(config: EtlConfig, out_root: Path, prefer_existing: bool
                        ) -> ActionSpace | None:
    """The action space of :func:`stored_manifest` (None without one)."""
    manifest = stored_manifest(config, out_root, prefer_existing)
    if manifest is None or not isinstance(manifest.get("action_space"), dict):
        return None
    return ActionSpace.from_manifest(manifest["action_space"])


def _stored_path(config: EtlConfig, out_root: Path, prefer_existing: bool) -> Path | None:
    if config.scaling_from is not None:
        path = Path(config.scaling_from)
        if path.is_dir():
            path = path / MANIFEST
        if not path.is_file():
            raise EtlError(f"scaling_from: manifest not found: {path}")
        return path
    if prefer_existing and (out_root / MANIFEST).is_file():
        return out_root / MANIFEST
    return None


def load_scaling(config: EtlConfig, out_root: Path, spec: FeatureSpec,
                 prefer_existing: bool) -> Scaling | None:
    """The scaling to reuse: ``config.scaling_from``'s, else (``prefer_existing``, nightly runs)
    the output's manifest's, else None (fit on this run's decisions)."""
    path = _stored_path(config, out_root, prefer_existing)
    if path is None:
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("feature_names") != spec.names:
        raise EtlError(f"{path}: its features differ from this config's; cannot reuse its scaling")
    return Scaling.from_manifest(spec.names, manifest["scaling"])


# ----------------------------------------------------------------------------- atomic writes
def apply_scaling(trans: pl.DataFrame, scaling: Scaling, n_features: int) -> pl.DataFrame:
    """Replace the raw features ``_raw_obs`` by the scaled float32 ``observation`` (both
    engines)."""
    if RAW_OBS not in trans.columns:
        return trans
    raw = trans[RAW_OBS].to_numpy().reshape(trans.height, n_features).astype(np.float64)
    obs = pl.Series("observation", scaling.apply(raw), dtype=pl.Array(pl.Float32, n_features))
    idx = trans.columns.index(RAW_OBS)
    return trans.drop(RAW_OBS).insert_column(idx, obs)


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """One dataset file (zstd, with statistics); creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path, compression="zstd", statistics=True)


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write JSON next to ``path`` and rename it into place (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def swap_dir(new: Path, target: Path) -> None:
    """Move ``new`` into place at ``target`` (the old one, if any, is removed afterwards)."""
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _remove_dir(target: Path) -> None:
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
    os.replace(target, old)
    shutil.rmtree(old, ignore_errors=True)


def replace_partition(frame: pl.DataFrame, root: Path, day: dt.date) -> None:
    """Atomically replace ``root/date=day`` by ``frame`` (removed when ``frame`` is empty)."""
    target = root / f"date={day.isoformat()}"
    if frame.height == 0:
        if target.exists():
            _remove_dir(target)
        return
    tmp = root / f".date={day.isoformat()}.tmp-{uuid.uuid4().hex}"
    try:
        write_parquet(frame, tmp / "part-00000.parquet")
        swap_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_day(
    out_root: Path,
    day: dt.date,
    trans: pl.DataFrame,
    quarantine: pl.DataFrame,
    config: EtlConfig,
    space: ActionSpace,
    spec: FeatureSpec,
    scaling: Scaling,
    by_date: dict[str, dict[str, Any]],
    inputs: list[dict[str, str]],
) -> dict[str, Any]:
    """A nightly run's output: replace day D's partitions, merge and rewrite the manifest."""
    out_root.mkdir(parents=True, exist_ok=True)
    replace_partition(trans, out_root / "transitions", day)
    replace_partition(quarantine, out_root / "quarantine", day)
    path = out_root / MANIFEST
    old: dict[str, Any] = (
        json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    )
    merged_dates = {k: v for k, v in old.get("counts_by_date", {}).items()
                    if k != day.isoformat()}
    merged_dates.update(by_date)
    merged_dates = dict(sorted(merged_dates.items()))
    by_path = {i["path"]: i for i in old.get("inputs", [])}
    by_path.update({i["path"]: i for i in inputs})
    tdir = out_root / "transitions"
    dates = sorted(p.name.removeprefix("date=") for p in tdir.glob("date=*")) if tdir.is_dir() \
        else []
    manifest = build_manifest(config, space, spec, scaling, merged_dates,
                              [by_path[k] for k in sorted(by_path)], dates)
    write_json(manifest, path)
    return manifest


__all__ = [
    "EPOCH",
    "MANIFEST",
    "build_manifest",
    "check_quarantine",
    "check_reason_shares",
    "describe_counts",
    "load_scaling",
    "reason_ceiling",
    "refuse_without_decisions",
    "replace_partition",
    "stored_action_space",
    "stored_manifest",
    "swap_dir",
    "tally",
    "totals",
    "write_day",
    "write_json",
    "write_parquet",
]
