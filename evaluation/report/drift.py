"""Drift of the state features between the training window and today's decisions.

Two measures per feature, both on the raw (scaled) observation values:

* **PSI**, the population stability index, with bins from the *reference* sample's quantiles::

      PSI = sum_b (q_b - p_b) * ln(q_b / p_b)

  where ``p_b`` / ``q_b`` are the shares of the reference / current rows in bin ``b``. The
  interior bin edges are the distinct reference quantiles at ``1/n_bins, ..., (n_bins-1)/n_bins``;
  the outer bins are open (``(-inf, e_1)`` and ``[e_k, +inf)``), a value equal to an edge goes to
  the bin above it. Ties collapse edges, so a binary feature gets its two values as bins. An empty
  bin's share is replaced by ``PSI_EPSILON`` (1e-4) so that the logarithm stays finite; identical
  samples give exactly 0.
  Reading (the usual credit-scoring convention): below 0.1 stable, 0.1 to 0.2 a moderate shift,
  **above 0.2 a significant shift: flagged**.
* **KS**, the two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical
  CDFs, :func:`scipy.stats.ks_2samp`) and its p-value. Shown for information: with thousands of
  rows the p-value is tiny even for harmless shifts, so the flag uses PSI only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import structlog
from scipy import stats

from evaluation.report.errors import ReportError
from evaluation.report.model import DriftSummary, FeatureDriftRow

log = structlog.get_logger(__name__)

PSI_EPSILON = 1e-4
"""Floor on a bin's share in the PSI (an empty bin would make the logarithm infinite)."""
PSI_THRESHOLD = 0.2
"""PSI above this flags a feature as drifted."""
PSI_MODERATE = 0.1
"""PSI above this (and at most PSI_THRESHOLD) is a moderate shift: shown, not flagged."""
DEFAULT_BINS = 10
CALENDAR_PREFIXES = ("dow_",)
"""Features not compared by :func:`drift_from_transitions` when the current window is one day:
the day of the week is constant within a day, so it would always "drift" (``dow_sin``,
``dow_cos`` of the ETL's state)."""


def psi_bin_edges(reference: np.ndarray, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """Interior PSI bin edges of one feature: distinct reference quantiles (see module doc)."""
    probs = np.arange(1, n_bins) / n_bins
    return np.unique(np.quantile(reference, probs))


def population_stability_index(
    reference: np.ndarray, current: np.ndarray, n_bins: int = DEFAULT_BINS
) -> float:
    """PSI of one feature, bins from the reference quantiles, shares floored at PSI_EPSILON."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    edges = psi_bin_edges(ref, n_bins)
    n_cells = edges.size + 1
    p = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=n_cells) / ref.size
    q = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=n_cells) / cur.size
    p = np.maximum(p, PSI_EPSILON)
    q = np.maximum(q, PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def feature_drift(
    reference: np.ndarray,
    current: np.ndarray,
    feature_names: Sequence[str],
    *,
    n_bins: int = DEFAULT_BINS,
    psi_threshold: float = PSI_THRESHOLD,
) -> pl.DataFrame:
    """PSI and KS of every state feature, today's rows against the training window's.

    Args:
        reference: ``(n_reference, n_features)`` observations of the training window.
        current: ``(n_current, n_features)`` observations of the window being checked.
        feature_names: one name per column.
        n_bins: PSI bins (reference quantiles).
        psi_threshold: PSI above this is flagged (default 0.2).

    Returns:
        One row per feature: ``feature``, ``psi``, ``ks_statistic``, ``ks_pvalue``,
        ``reference_mean``, ``current_mean``, ``flagged`` (``psi > psi_threshold``), in the
        order of ``feature_names``.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim != 2 or cur.ndim != 2:
        raise ReportError("feature_drift expects two 2-D arrays (rows, features)")
    names = list(feature_names)
    if ref.shape[1] != len(names) or cur.shape[1] != len(names):
        raise ReportError(
            f"feature_drift: {len(names)} feature names for arrays with "
            f"{ref.shape[1]} and {cur.shape[1]} columns"
        )
    if ref.shape[0] == 0 or cur.shape[0] == 0:
        raise ReportError("feature_drift needs at least one reference and one current row")
    psi = np.array(
        [population_stability_index(ref[:, j], cur[:, j], n_bins) for j in range(len(names))]
    )
    ks = stats.ks_2samp(ref, cur, axis=0)
    return pl.DataFrame(
        {
            "feature": names,
            "psi": psi,
            "ks_statistic": np.atleast_1d(np.asarray(ks.statistic, dtype=np.float64)),
            "ks_pvalue": np.atleast_1d(np.asarray(ks.pvalue, dtype=np.float64)),
            "reference_mean": ref.mean(axis=0),
            "current_mean": cur.mean(axis=0),
        },
        schema={
            "feature": pl.String,
            "psi": pl.Float64,
            "ks_statistic": pl.Float64,
            "ks_pvalue": pl.Float64,
            "reference_mean": pl.Float64,
            "current_mean": pl.Float64,
        },
    ).with_columns(flagged=pl.col("psi") > psi_threshold)


def drift_summary(
    frame: pl.DataFrame,
    *,
    reference_label: str,
    current_label: str,
    n_reference: int,
    n_current: int,
    psi_threshold: float = PSI_THRESHOLD,
) -> DriftSummary:
    """Wrap :func:`feature_drift`'s frame into the report's :class:`DriftSummary`."""
    rows = [
        FeatureDriftRow(
            feature=str(r["feature"]),
            psi=float(r["psi"]),
            ks_statistic=float(r["ks_statistic"]),
            ks_pvalue=float(r["ks_pvalue"]),
            reference_mean=float(r["reference_mean"]),
            current_mean=float(r["current_mean"]),
            flagged=bool(r["flagged"]),
        )
        for r in frame.iter_rows(named=True)
    ]
    return DriftSummary(
        reference_label=reference_label,
        current_label=current_label,
        n_reference=n_reference,
        n_current=n_current,
        psi_threshold=psi_threshold,
        rows=rows,
    )


def _observations(frame: pl.DataFrame) -> np.ndarray:
    if frame.height == 0:
        return np.zeros((0, 0), dtype=np.float32)
    column = frame.get_column("observation")
    if isinstance(column.dtype, pl.Array):
        return column.to_numpy()
    return np.stack(column.to_list()).astype(np.float32)


def drift_from_transitions(
    data_dir: Path,
    feature_names: Sequence[str],
    *,
    current_date: str | None = None,
    max_reference_rows: int = 200_000,
    psi_threshold: float = PSI_THRESHOLD,
    skip_prefixes: Sequence[str] = CALENDAR_PREFIXES,
    seed: int = 0,
) -> DriftSummary | None:
    """Drift of the latest (or ``current_date``'s) decisions against all earlier dates.

    Reads ``<data_dir>/transitions/date=*/`` (the ETL layout). The reference is every decision
    before the current date (subsampled to ``max_reference_rows`` rows, without replacement, for
    speed); returns ``None`` when the data has a single date (nothing to compare against).
    Features whose name starts with one of ``skip_prefixes`` (day of week) are not compared and
    are listed in the summary's ``skipped``.
    """
    root = Path(data_dir) / "transitions"
    parts = sorted(p for p in root.glob("date=*") if p.is_dir())
    if not parts:
        raise ReportError(f"no transition partitions under {root}")
    dates = [p.name.removeprefix("date=") for p in parts]
    current = current_date or dates[-1]
    if current not in dates:
        raise ReportError(f"no transitions for date {current} under {root}")
    earlier = [p for p, d in zip(parts, dates, strict=True) if d < current]
    if not earlier:
        log.info("drift.skipped", reason="no earlier dates to compare against", date=current)
        return None
    cur_frame = pl.scan_parquet(root / f"date={current}" / "*.parquet").select("observation")
    ref_frame = pl.scan_parquet([p / "*.parquet" for p in earlier]).select("observation")
    cur = _observations(cur_frame.collect())
    ref_all = ref_frame.collect()
    if ref_all.height > max_reference_rows:
        ref_all = ref_all.sample(n=max_reference_rows, seed=seed)
    ref = _observations(ref_all)
    if cur.shape[0] == 0 or ref.shape[0] == 0:
        return None
    names = list(feature_names)
    if cur.shape[1] != len(names):
        raise ReportError(
            f"transitions have {cur.shape[1]} state features, the manifest names {len(names)}"
        )
    keep = [j for j, n in enumerate(names) if not n.startswith(tuple(skip_prefixes))]
    frame = feature_drift(
        ref[:, keep], cur[:, keep], [names[j] for j in keep], psi_threshold=psi_threshold
    )
    first = dates[0]
    last_ref = [d for d in dates if d < current][-1]
    summary = drift_summary(
        frame,
        reference_label=f"{first} to {last_ref}" if first != last_ref else first,
        current_label=current,
        n_reference=int(ref.shape[0]),
        n_current=int(cur.shape[0]),
        psi_threshold=psi_threshold,
    )
    skipped = [n for j, n in enumerate(names) if j not in set(keep)]
    return dataclasses.replace(summary, skipped=skipped)
