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

**Like with like.** Most state features are histories (orders, sessions, offers so far, days
since the last visit) that grow with a user's tenure; today's users are, on average, older
customers than the training window's, so a plain comparison flags them in a perfectly stable
world. :func:`drift_from_transitions` therefore compares today's decisions with the earlier
decisions *of users of the same tenure* (whole days since the user's first decision in the
data): every reference row is weighted by ``c_t / r_t``, the number of today's rows over the
number of reference rows at its tenure ``t`` (today's tenures beyond the reference's are matched
to the nearest tenure the reference has), so the weighted reference has today's tenure mix.
Context features (channel, device, hour) are compared the same way; a shift in who arrives, or
in what the site shows them, still moves them.

**Noise.** Under no drift, ``PSI * n m / (n + m)`` is about chi-square with (bins - 1) degrees
of freedom, ``n`` and ``m`` the independent units of today and of the reference, so a small day
has a PSI of about ``(bins - 1) (1/n + 1/m)`` from sampling alone (0.2 for 93 rows against
115). A user's decisions move together (same session, same device, same history), so the
units are users: ``n`` today's users, ``m`` Kish's effective size ``(sum W)^2 / sum W^2`` of the
reference users' total weights ``W`` (rows and Kish's size of the row weights when the
transitions have no ``user_id``). A feature is flagged only when its PSI is above the threshold
*and* above the chi-square quantile at ``1 - NOISE_ALPHA / features`` (Bonferroni over the
compared features) times ``1/n + 1/m``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
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
NOISE_ALPHA = 0.01
"""Chance of at least one feature flagged by sampling noise alone on a day without drift
(Bonferroni over the compared features)."""
CALENDAR_PREFIXES = ("dow_",)
"""Features not compared by :func:`drift_from_transitions` when the current window is one day:
the day of the week is constant within a day, so it would always "drift" (``dow_sin``,
``dow_cos`` of the ETL's state)."""


def psi_bin_edges(
    reference: np.ndarray, n_bins: int = DEFAULT_BINS, weights: np.ndarray | None = None
) -> np.ndarray:
    """Interior PSI bin edges of one feature: distinct reference quantiles (see module doc);
    weighted quantiles (inverted CDF) when the reference rows carry ``weights``."""
    probs = np.arange(1, n_bins) / n_bins
    if weights is None:
        return np.unique(np.quantile(reference, probs))
    return np.unique(np.quantile(reference, probs, weights=weights, method="inverted_cdf"))


def population_stability_index(
    reference: np.ndarray,
    current: np.ndarray,
    n_bins: int = DEFAULT_BINS,
    weights: np.ndarray | None = None,
) -> float:
    """PSI of one feature, bins from the reference quantiles, shares floored at PSI_EPSILON;
    ``weights`` (one per reference row, >= 0) weight the reference's shares."""
    return _psi_and_cells(reference, current, n_bins, weights)[0]


def _psi_and_cells(
    reference: np.ndarray, current: np.ndarray, n_bins: int, weights: np.ndarray | None
) -> tuple[float, int]:
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    w = np.ones(ref.size) if weights is None else np.asarray(weights, dtype=np.float64)
    edges = psi_bin_edges(ref, n_bins, weights)
    n_cells = edges.size + 1
    ref_cells = np.searchsorted(edges, ref, side="right")
    p = np.bincount(ref_cells, weights=w, minlength=n_cells) / w.sum()
    q = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=n_cells) / cur.size
    p = np.maximum(p, PSI_EPSILON)
    q = np.maximum(q, PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p))), n_cells


def effective_size(weights: np.ndarray | None, n: int) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (``n`` without weights)."""
    if weights is None:
        return float(n)
    w = np.asarray(weights, dtype=np.float64)
    return float(w.sum() ** 2 / np.sum(w**2))


def psi_noise_bound(
    n_current: float, n_reference: float, n_cells: int, alpha: float = NOISE_ALPHA
) -> float:
    """The PSI that sampling noise alone exceeds with probability ``alpha`` (module doc)."""
    if n_cells < 2:
        return 0.0
    quantile = float(stats.chi2.ppf(1.0 - alpha, n_cells - 1))
    return quantile * (1.0 / n_current + 1.0 / n_reference)


def _weighted_ks(
    ref: np.ndarray, cur: np.ndarray, weights: np.ndarray, n_cur: float, n_ref: float
) -> tuple[np.ndarray, np.ndarray]:
    """KS statistic per column with a weighted reference ECDF; asymptotic p-value with the
    effective sizes."""
    statistic = np.empty(ref.shape[1])
    for j in range(ref.shape[1]):
        order = np.argsort(ref[:, j], kind="stable")
        sorted_ref = ref[order, j]
        cum = np.concatenate([[0.0], np.cumsum(weights[order])]) / weights.sum()
        points = np.concatenate([ref[:, j], cur[:, j]])
        f_ref = cum[np.searchsorted(sorted_ref, points, side="right")]
        f_cur = np.searchsorted(np.sort(cur[:, j]), points, side="right") / cur.shape[0]
        statistic[j] = float(np.max(np.abs(f_ref - f_cur)))
    en = max(1, round(n_ref * n_cur / (n_ref + n_cur)))
    return statistic, np.asarray(stats.kstwo.sf(statistic, en), dtype=np.float64)


def feature_drift(
    reference: np.ndarray,
    current: np.ndarray,
    feature_names: Sequence[str],
    *,
    n_bins: int = DEFAULT_BINS,
    psi_threshold: float = PSI_THRESHOLD,
    reference_weights: np.ndarray | None = None,
    noise_alpha: float = NOISE_ALPHA,
    sizes: tuple[float, float] | None = None,
) -> pl.DataFrame:
    """PSI and KS of every state feature, today's rows against the training window's.

    Args:
        reference: ``(n_reference, n_features)`` observations of the training window.
        current: ``(n_current, n_features)`` observations of the window being checked.
        feature_names: one name per column.
        n_bins: PSI bins (reference quantiles).
        psi_threshold: PSI above this is flagged (default 0.2) when it is also beyond sampling
            noise (module doc).
        reference_weights: one weight >= 0 per reference row (e.g. :func:`tenure_weights`);
            shares, quantiles, means and the KS CDF of the reference are then weighted.
        noise_alpha: chance that noise alone flags any feature (Bonferroni over the features).
        sizes: effective sizes ``(current, reference)`` for the noise bound and the weighted
            KS p-value; default the current rows and Kish's size of the reference weights.

    Returns:
        One row per feature: ``feature``, ``psi``, ``ks_statistic``, ``ks_pvalue``,
        ``reference_mean``, ``current_mean``, ``flagged``, in the order of ``feature_names``.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    names = list(feature_names)
    _check_shapes(ref, cur, names, reference_weights)
    weights = None if reference_weights is None else np.asarray(reference_weights, np.float64)
    cells = [_psi_and_cells(ref[:, j], cur[:, j], n_bins, weights) for j in range(len(names))]
    psi = np.array([c[0] for c in cells])
    n_cur, n_ref = sizes or (float(cur.shape[0]), effective_size(weights, ref.shape[0]))
    alpha = noise_alpha / max(len(names), 1)
    noise = np.array([psi_noise_bound(n_cur, n_ref, c[1], alpha) for c in cells])
    if weights is None:
        ks = stats.ks_2samp(ref, cur, axis=0)
        ks_stat, ks_p = ks.statistic, ks.pvalue
    else:
        ks_stat, ks_p = _weighted_ks(ref, cur, weights, n_cur, n_ref)
    return pl.DataFrame(
        {
            "feature": names,
            "psi": psi,
            "ks_statistic": np.atleast_1d(np.asarray(ks_stat, dtype=np.float64)),
            "ks_pvalue": np.atleast_1d(np.asarray(ks_p, dtype=np.float64)),
            "reference_mean": np.average(ref, axis=0, weights=weights),
            "current_mean": cur.mean(axis=0),
            "flagged": (psi > psi_threshold) & (psi > noise),
        },
        schema={
            "feature": pl.String,
            "psi": pl.Float64,
            "ks_statistic": pl.Float64,
            "ks_pvalue": pl.Float64,
            "reference_mean": pl.Float64,
            "current_mean": pl.Float64,
            "flagged": pl.Boolean,
        },
    )


def _check_shapes(
    ref: np.ndarray, cur: np.ndarray, names: list[str], weights: np.ndarray | None
) -> None:
    if ref.ndim != 2 or cur.ndim != 2:
        raise ReportError("feature_drift expects two 2-D arrays (rows, features)")
    if ref.shape[1] != len(names) or cur.shape[1] != len(names):
        raise ReportError(
            f"feature_drift: {len(names)} feature names for arrays with "
            f"{ref.shape[1]} and {cur.shape[1]} columns"
        )
    if ref.shape[0] == 0 or cur.shape[0] == 0:
        raise ReportError("feature_drift needs at least one reference and one current row")
    if weights is not None and (
        np.shape(weights) != (ref.shape[0],) or np.any(weights < 0) or not np.sum(weights) > 0
    ):
        raise ReportError("feature_drift: one weight >= 0 per reference row, not all zero")


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


def tenure_weights(reference_tenure: np.ndarray, current_tenure: np.ndarray) -> np.ndarray:
    """Weights of the reference rows that give them the current rows' tenure mix.

    A reference row of tenure ``t`` weighs ``c_t / r_t``: ``c_t`` current rows matched to ``t``
    (their own tenure, or the nearest one the reference has, the lower on a tie) over the
    ``r_t`` reference rows of that tenure. Tenures no current row matches weigh 0.
    """
    ref_t = np.asarray(reference_tenure, dtype=np.int64)
    cur_t = np.asarray(current_tenure, dtype=np.int64)
    available, ref_counts = np.unique(ref_t, return_counts=True)
    above = np.clip(np.searchsorted(available, cur_t), 0, available.size - 1)
    below = np.clip(above - 1, 0, available.size - 1)
    nearer_below = np.abs(available[below] - cur_t) <= np.abs(available[above] - cur_t)
    matched = np.where(nearer_below, below, above)
    cur_counts = np.bincount(matched, minlength=available.size)
    return np.asarray(
        (cur_counts / ref_counts)[np.searchsorted(available, ref_t)], dtype=np.float64
    )


def _observations(frame: pl.DataFrame) -> np.ndarray:
    if frame.height == 0:
        return np.zeros((0, 0), dtype=np.float32)
    column = frame.get_column("observation")
    if isinstance(column.dtype, pl.Array):
        return column.to_numpy()
    return np.stack(column.to_list()).astype(np.float32)


def _decisions_up_to(parts: list[Path], dates: list[str]) -> pl.DataFrame:
    """``observation``, ``day`` and, when the transitions name their users, ``tenure`` (whole
    days since the user's first decision in these partitions) of every decision."""
    columns = pl.scan_parquet(parts[0] / "*.parquet").collect_schema().names()
    with_users = "user_id" in columns
    frame = pl.concat(
        [
            pl.scan_parquet(p / "*.parquet")
            .select("observation", *(["user_id"] if with_users else []))
            .with_columns(day=pl.lit(d).str.to_date())
            for p, d in zip(parts, dates, strict=True)
        ]
    )
    if with_users:
        first = pl.col("day").min().over("user_id")
        frame = frame.with_columns(tenure=(pl.col("day") - first).dt.total_days().fill_null(0))
    return frame.collect()


def drift_from_transitions(
    data_dir: Path,
    feature_names: Sequence[str],
    *,
    current_date: str | None = None,
    max_reference_rows: int = 200_000,
    psi_threshold: float = PSI_THRESHOLD,
    skip_prefixes: Sequence[str] = CALENDAR_PREFIXES,
    seed: int = 0,
    match_tenure: bool = True,
) -> DriftSummary | None:
    """Drift of the latest (or ``current_date``'s) decisions against all earlier dates.

    Reads ``<data_dir>/transitions/date=*/`` (the ETL layout). The reference is every decision
    before the current date (subsampled to ``max_reference_rows`` rows, without replacement, for
    speed), weighted to the current decisions' tenure mix (:func:`tenure_weights`, module doc)
    when ``match_tenure`` and the transitions have a ``user_id``; returns ``None`` when the data
    has a single date (nothing to compare against). Features whose name starts with one of
    ``skip_prefixes`` (day of week) are not compared and are listed in the summary's ``skipped``.
    """
    root = Path(data_dir) / "transitions"
    parts = sorted(p for p in root.glob("date=*") if p.is_dir())
    if not parts:
        raise ReportError(f"no transition partitions under {root}")
    dates = [p.name.removeprefix("date=") for p in parts]
    current = current_date or dates[-1]
    if current not in dates:
        raise ReportError(f"no transitions for date {current} under {root}")
    if dates[0] == current:
        log.info("drift.skipped", reason="no earlier dates to compare against", date=current)
        return None
    upto = [(p, d) for p, d in zip(parts, dates, strict=True) if d <= current]
    frame = _decisions_up_to([p for p, _ in upto], [d for _, d in upto])
    today = dt.date.fromisoformat(current)
    cur_frame = frame.filter(pl.col("day") == today)
    ref_frame = frame.filter(pl.col("day") < today)
    if ref_frame.height > max_reference_rows:
        ref_frame = ref_frame.sample(n=max_reference_rows, seed=seed)
    cur, ref = _observations(cur_frame), _observations(ref_frame)
    if cur.shape[0] == 0 or ref.shape[0] == 0:
        return None
    names = list(feature_names)
    if cur.shape[1] != len(names):
        raise ReportError(
            f"transitions have {cur.shape[1]} state features, the manifest names {len(names)}"
        )
    weights, sizes = None, None
    if "user_id" in frame.columns:
        if match_tenure:
            weights = tenure_weights(ref_frame["tenure"].to_numpy(), cur_frame["tenure"].to_numpy())
        sizes = (_users(cur_frame, None), _users(ref_frame, weights))
    keep = [j for j, n in enumerate(names) if not n.startswith(tuple(skip_prefixes))]
    table = feature_drift(
        ref[:, keep], cur[:, keep], [names[j] for j in keep],
        psi_threshold=psi_threshold, reference_weights=weights, sizes=sizes,
    )  # fmt: skip
    summary = drift_summary(
        table,
        reference_label=_reference_label(dates, current, weights, sizes),
        current_label=current,
        n_reference=int(ref.shape[0]),
        n_current=int(cur.shape[0]),
        psi_threshold=psi_threshold,
    )
    skipped = [n for j, n in enumerate(names) if j not in set(keep)]
    return dataclasses.replace(summary, skipped=skipped)


def _users(frame: pl.DataFrame, weights: np.ndarray | None) -> float:
    """Effective number of independent rows when a user's decisions move together: Kish's
    size of the users' total weights (the number of users without weights)."""
    w = np.ones(frame.height) if weights is None else weights
    per_user = (
        frame.select("user_id").with_columns(w=pl.Series(w)).group_by("user_id").agg(pl.sum("w"))
    )
    return effective_size(per_user["w"].to_numpy(), per_user.height)


def _reference_label(
    dates: list[str],
    current: str,
    weights: np.ndarray | None,
    sizes: tuple[float, float] | None,
) -> str:
    first, last = dates[0], [d for d in dates if d < current][-1]
    window = f"{first} to {last}" if first != last else first
    if weights is None:
        return window
    size = effective_size(weights, weights.size) if sizes is None else sizes[1]
    return f"{window}, weighted to the tenure of today's users (effective users {size:,.0f})"
