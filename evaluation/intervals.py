"""Uncertainty: bootstrap over episodes (percentile, BCa) and high-confidence lower bounds.

* Bootstrap (Efron & Tibshirani 1993): episodes are resampled with replacement; every estimator
  is recomputed from the resampled sums of its per-episode statistics, so self-normalised
  estimators resample numerators and denominators together. All estimators share one set of
  resample counts, drawn in chunks (``counts @ statistics``, see ``_ResampledSums``). Counts
  are Poisson(1) per episode by default (the Poisson bootstrap) or multinomial.
* BCa: bias correction ``z0`` from the bootstrap distribution, acceleration ``a`` from the
  jackknife (leave-one-episode-out values, vectorised as ``totals - F_i``).
* Lower bounds (Thomas, Theocharous & Ghavamzadeh 2015, "High confidence off-policy
  evaluation", AAAI, and "High confidence policy improvement", ICML):
  - ``t``: ``V - t_{1-delta, N-1} * SE_jackknife`` (for mean-type estimators the jackknife SE is
    the usual ``sd / sqrt(N)`` of the per-episode contributions);
  - ``bernstein``: the empirical Bernstein bound (Maurer & Pontil 2009) on per-episode
    contributions clipped from above at ``c`` (clipping can only lower the mean, so the bound
    stays a lower bound); ``c`` is chosen on a 5 % split as in Thomas et al. 2015 and the bound
    is computed on the other 95 %. The range's lower end is the smallest observed contribution
    (the rewards have no known lower bound: an approximation, stated in the README). Only for
    mean-type estimators (IS, PDIS, DR, DM, IPW, on-policy).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import stats as st

from evaluation.estimators.base import EpisodeStatistics

_DENSE_LIMIT = 40_000_000  # cells of the stacked statistics kept dense (float32)
_CHUNK_CELLS = 25_000_000  # resample counts drawn at once (float32 cells, about 100 MB)
_BUCKET_RATIO = 1.5  # staircase buckets: row prefixes shrinking by this factor

# Poisson(1) quantiles on a 2^16 grid: a uint16 draw per episode and resample becomes a count.
_POISSON_TABLE = np.searchsorted(
    st.poisson.cdf(np.arange(40), 1.0), (np.arange(65536) + 0.5) / 65536
).astype(np.float32)


def resample_counts(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Multinomial bootstrap counts: ``size`` resamples of ``n`` episodes, as (size, n) float32."""
    dtype = np.int32 if size * n < 2**31 else np.int64
    idx = rng.integers(0, n, size=(size, n), dtype=dtype)
    idx += (np.arange(size, dtype=dtype) * n)[:, None]  # type: ignore[arg-type]
    return np.bincount(idx.ravel(), minlength=size * n).reshape(size, n).astype(np.float32)


def poisson_counts(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson(1) bootstrap counts (Hanley & MacGibbon 2006), (size, n) float32.

    Each episode enters each resample an independent Poisson(1) number of times: the same
    first-order behaviour as the multinomial bootstrap, with a random resample size, and about
    four times cheaper to draw (one table lookup of a 16-bit random number per cell).
    """
    return _POISSON_TABLE[rng.integers(0, 65536, size=(size, n), dtype=np.uint16)]


class _ResampledSums:
    """``counts @ F`` for the stacked per-episode statistics of several estimators, fast.

    Per-step statistics form a staircase: an episode of length L has entries only in the
    first L step columns. Rows are ordered by their number of non-zeros (longest episodes
    first) so that every column's support is a row prefix; columns are bucketed by the length
    of that prefix, and each bucket is one dense float32 product over its prefix only. The work
    is then about (number of decisions) x (resamples) per per-step block instead of
    (episodes x longest episode) x (resamples).
    """

    def __init__(self, stats: Sequence[EpisodeStatistics]) -> None:
        n = stats[0].n_episodes
        if any(s.n_episodes != n for s in stats):
            raise ValueError("all statistics must have the same episodes")
        self.n = n
        self.offsets = [0]
        for s in stats:
            self.offsets.append(self.offsets[-1] + s.width)
        self.width = self.offsets[-1]
        if n * self.width <= _DENSE_LIMIT:
            dense = np.zeros((n, self.width), dtype=np.float32)
            for s, off in zip(stats, self.offsets, strict=False):
                if isinstance(s.matrix, np.ndarray):
                    dense[:, off : off + s.width] = s.matrix
                else:
                    coo = s.matrix.tocoo()
                    dense[coo.row, off + coo.col] = coo.data
            self.perm = np.argsort(-np.count_nonzero(dense, axis=1), kind="stable")
            ordered: np.ndarray | sp.csr_matrix = dense[self.perm]
            del dense
            nonzero = ordered != 0
            any_nz = nonzero.any(axis=0)
            prefix = np.where(any_nz, n - np.argmax(nonzero[::-1], axis=0), 0)
            del nonzero
        else:
            matrix = sp.hstack([sp.csr_matrix(s.matrix) for s in stats], format="csr")
            matrix.eliminate_zeros()
            self.perm = np.argsort(-np.diff(matrix.indptr), kind="stable")
            ordered = matrix[self.perm].tocsr()
            coo = ordered.tocoo()
            prefix = np.zeros(self.width, dtype=np.int64)
            np.maximum.at(prefix, coo.col, coo.row.astype(np.int64) + 1)
        self.buckets: list[tuple[np.ndarray, int, np.ndarray]] = []
        order = np.argsort(-prefix, kind="stable")
        order = order[prefix[order] > 0]
        start = 0
        while start < len(order):
            top = int(prefix[order[start]])
            stop = start
            while stop < len(order) and prefix[order[stop]] * _BUCKET_RATIO >= top:
                stop += 1
            cols = np.sort(order[start:stop])
            if isinstance(ordered, np.ndarray):
                block = np.ascontiguousarray(ordered[:top][:, cols])
            else:
                block = np.asarray(ordered[:top][:, cols].toarray(), dtype=np.float32)
            self.buckets.append((cols, top, block))
            start = stop

    def __call__(self, counts_ordered: np.ndarray) -> np.ndarray:
        """Sums for counts given in the internal row order (iid counts need no reordering)."""
        out = np.zeros((counts_ordered.shape[0], self.width))
        for cols, top, block in self.buckets:
            out[:, cols] = counts_ordered[:, :top] @ block
        return out


class ResampleCounts:
    """The bootstrap's resample counts, drawn in chunks and shareable between summaries.

    Counts depend only on (N, number of resamples, seed, scheme); an evaluation draws them once
    and reuses them for the behaviour policy and every candidate. They are kept as uint8 (a
    count above 255 has probability ~1e-500) when they fit in ``max_cells``, else redrawn from
    the seed on each use (identical either way).
    """

    def __init__(
        self,
        n: int,
        n_resamples: int,
        *,
        seed: int = 0,
        scheme: str = "poisson",
        chunk_size: int = 100,
        max_cells: int = 200_000_000,
    ) -> None:
        if scheme not in ("poisson", "multinomial"):
            raise ValueError(f"unknown bootstrap scheme {scheme!r}")
        self.n = n
        self.n_resamples = n_resamples
        self.seed = seed
        self.scheme = scheme
        # Large chunks keep the matrix products efficient (BLAS is slow for a few rows); the
        # cap bounds the memory of one chunk.
        self.chunk = max(chunk_size, min(n_resamples, _CHUNK_CELLS // max(1, n)))
        self.keep = n * n_resamples <= max_cells
        self._stored: list[np.ndarray] | None = None

    def chunks(self) -> Iterator[np.ndarray]:
        """Successive (size, N) float32 blocks of counts, n_resamples rows in all."""
        if self._stored is not None:
            for block in self._stored:
                yield block.astype(np.float32)
            return
        rng = np.random.default_rng(self.seed)
        draw = poisson_counts if self.scheme == "poisson" else resample_counts
        stored: list[np.ndarray] = []
        done = 0
        while done < self.n_resamples:
            size = min(self.chunk, self.n_resamples - done)
            counts = draw(self.n, size, rng)
            if self.keep:
                stored.append(counts.astype(np.uint8))
            yield counts
            done += size
        if self.keep:
            self._stored = stored


def bootstrap_values(
    stats: Sequence[EpisodeStatistics],
    *,
    n_resamples: int,
    seed: int = 0,
    chunk_size: int = 100,
    scheme: str = "poisson",
    counts: ResampleCounts | None = None,
) -> np.ndarray:
    """Bootstrap replicates of every estimator: array (n_resamples, len(stats)).

    ``scheme`` is ``poisson`` (default, Poisson(1) counts per episode) or ``multinomial``
    (the classic resampling of exactly N episodes with replacement); ``counts`` reuses counts
    drawn for another summary of the same episodes.
    """
    sums_of = _ResampledSums(stats)
    if counts is None or counts.n != sums_of.n or counts.n_resamples != n_resamples:
        counts = ResampleCounts(
            sums_of.n, n_resamples, seed=seed, scheme=scheme, chunk_size=chunk_size, max_cells=0
        )
    out = np.empty((n_resamples, len(stats)))
    done = 0
    for block in counts.chunks():
        size = block.shape[0]
        _combine_into(out[done : done + size], stats, sums_of(block), block, sums_of.offsets)
        done += size
    return out


def bootstrap_from_counts(stats: Sequence[EpisodeStatistics], counts: np.ndarray) -> np.ndarray:
    """Replicates for explicit resample counts (size, N) in the episodes' own order."""
    sums_of = _ResampledSums(stats)
    ordered = np.ascontiguousarray(counts[:, sums_of.perm], dtype=np.float32)
    out = np.empty((counts.shape[0], len(stats)))
    _combine_into(out, stats, sums_of(ordered), ordered, sums_of.offsets)
    return out


def _combine_into(
    out: np.ndarray,
    stats: Sequence[EpisodeStatistics],
    sums: np.ndarray,
    counts: np.ndarray,
    offsets: list[int],
) -> None:
    totals = counts.sum(axis=1, dtype=np.float64)
    for j, s in enumerate(stats):
        out[:, j] = s.combine(sums[:, offsets[j] : offsets[j + 1]], totals)


def jackknife_values(stats: EpisodeStatistics, chunk_cells: int = 5_000_000) -> np.ndarray:
    """Leave-one-episode-out values of the estimator, (N,)."""
    total = stats.totals()
    n = stats.n_episodes
    rows = max(1, chunk_cells // max(1, stats.width))
    out = np.empty(n)
    for start in range(0, n, rows):
        block = stats.matrix[start : start + rows]
        dense = np.asarray(block if isinstance(block, np.ndarray) else block.toarray())
        out[start : start + rows] = stats.combine(
            total[None, :] - dense, np.full(dense.shape[0], float(n - 1))
        )
    return out


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    lo, hi = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bca_interval(
    replicates: np.ndarray, estimate: float, jackknife: np.ndarray, confidence: float
) -> tuple[float, float]:
    """Bias-corrected and accelerated bootstrap interval (Efron 1987)."""
    alpha = 1.0 - confidence
    b = len(replicates)
    below = (np.sum(replicates < estimate) + 0.5 * np.sum(replicates == estimate)) / b
    below = float(np.clip(below, 1.0 / (b + 1), b / (b + 1)))
    z0 = float(st.norm.ppf(below))
    dev = jackknife.mean() - jackknife
    denom = 6.0 * float(np.sum(dev**2)) ** 1.5
    accel = float(np.sum(dev**3)) / denom if denom > 0 else 0.0
    z = st.norm.ppf([alpha / 2, 1 - alpha / 2])
    adj = st.norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    if not np.all(np.isfinite(adj)):
        return percentile_interval(replicates, confidence)
    lo, hi = np.quantile(replicates, adj)
    return float(lo), float(hi)


def jackknife_se(jackknife: np.ndarray) -> float:
    n = len(jackknife)
    return float(np.sqrt((n - 1) / n * np.sum((jackknife - jackknife.mean()) ** 2)))


def t_lower_bound(estimate: float, se: float, n: int, delta: float) -> float:
    """``estimate - t_{1-delta, n-1} * se`` (Thomas et al. 2015, t-test bound)."""
    return float(estimate - st.t.ppf(1 - delta, max(1, n - 1)) * se)


def _bernstein(y: np.ndarray, lo: float, c: float, delta: float, n: int) -> float:
    """Maurer-Pontil empirical Bernstein lower bound on the mean of ``y`` in [lo, c]."""
    log_term = np.log(2.0 / delta)
    var = float(np.var(y, ddof=1)) if len(y) > 1 else 0.0
    return float(
        np.mean(y)
        - np.sqrt(2.0 * var * log_term / n)
        - 7.0 * (c - lo) * log_term / (3.0 * max(1, n - 1))
    )


def bernstein_lower_bound(
    contributions: np.ndarray, delta: float, *, seed: int = 0, split: float = 0.05
) -> float:
    """High-confidence lower bound of the mean of per-episode contributions (Thomas 2015).

    The clipping level ``c`` maximising the bound predicted for the remaining episodes is
    chosen on a random ``split`` share of the episodes; the bound uses the rest.
    """
    x = np.asarray(contributions, dtype=np.float64)
    n = len(x)
    if n < 20:
        return float("-inf")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    k = max(10, int(split * n))
    pre, post = x[perm[:k]], x[perm[k:]]
    lo = float(x.min())
    candidates = np.unique(np.quantile(pre, [0.5, 0.75, 0.9, 0.95, 0.99, 1.0]))
    candidates = candidates[candidates > lo]
    if len(candidates) == 0:
        return lo
    predicted = [_bernstein(np.minimum(pre, c), lo, c, delta, len(post)) for c in candidates]
    c_best = float(candidates[int(np.argmax(predicted))])
    return _bernstein(np.minimum(post, c_best), lo, c_best, delta, len(post))


@dataclass(frozen=True)
class IntervalSummary:
    """Point estimate with its uncertainty, for one estimator."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    percentile_low: float
    percentile_high: float
    bca_low: float
    bca_high: float
    lower_bound_t: float
    lower_bound_bernstein: float | None
    n_resamples: int


def summarise(
    stats: Sequence[EpisodeStatistics],
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    method: str = "bca",
    delta: float = 0.05,
    seed: int = 0,
    chunk_size: int = 100,
    scheme: str = "poisson",
    counts: ResampleCounts | None = None,
) -> list[IntervalSummary]:
    """Estimates, standard errors, intervals and lower bounds of several estimators at once."""
    if not stats:
        return []
    boot = (
        bootstrap_values(
            stats,
            n_resamples=n_resamples,
            seed=seed,
            chunk_size=chunk_size,
            scheme=scheme,
            counts=counts,
        )
        if n_resamples > 1
        else None
    )
    out = []
    for j, s in enumerate(stats):
        estimate = s.value()
        jack = jackknife_values(s)
        se_jack = jackknife_se(jack)
        if boot is not None:
            reps = boot[:, j]
            se = float(np.std(reps, ddof=1))
            p_lo, p_hi = percentile_interval(reps, confidence)
            b_lo, b_hi = bca_interval(reps, estimate, jack, confidence)
        else:
            se = se_jack
            z = float(st.norm.ppf(0.5 + confidence / 2))
            p_lo, p_hi = b_lo, b_hi = estimate - z * se, estimate + z * se
        lo, hi = (b_lo, b_hi) if method == "bca" else (p_lo, p_hi)
        out.append(
            IntervalSummary(
                estimate=estimate,
                se=se,
                ci_low=lo,
                ci_high=hi,
                percentile_low=p_lo,
                percentile_high=p_hi,
                bca_low=b_lo,
                bca_high=b_hi,
                lower_bound_t=t_lower_bound(estimate, se_jack, s.n_episodes, delta),
                lower_bound_bernstein=(
                    bernstein_lower_bound(s.contributions(), delta, seed=seed)
                    if s.mean_type
                    else None
                ),
                n_resamples=n_resamples if boot is not None else 0,
            )
        )
    return out


def bootstrap_interval(
    stats: EpisodeStatistics,
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    method: str = "bca",
    seed: int = 0,
) -> tuple[float, float]:
    """The bootstrap interval of one estimator."""
    summary = summarise(
        [stats], confidence=confidence, n_resamples=n_resamples, method=method, seed=seed
    )[0]
    return summary.ci_low, summary.ci_high
