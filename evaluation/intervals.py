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

import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import stats as st

from evaluation.statistics import EpisodeStatistics

_DENSE_LIMIT = 40_000_000  # cells of the stacked statistics kept dense (float32)
_CHUNK_CELLS = 25_000_000  # resample counts drawn at once (float32 cells, about 100 MB)
_BUCKET_RATIO = 1.5  # staircase buckets: row prefixes shrinking by this factor
# Resample sizes of integer counts are summed in float32 while every partial sum stays an
# integer below 2^24 (exact, so equal to the float64 sum); larger totals are summed in float64.
_FLOAT32_EXACT = 2.0**23
_SHARED_PLANS = 2  # resample plans kept by ``shared_counts`` (least recently used dropped)
_LOOKUP_SLICE = 65_536  # Poisson table lookups per ``take`` (their 64-bit indices stay in cache)
_KEEP_FLOAT32 = 100_000_000  # kept counts stay float32 up to this many cells (400 MB), else uint8

# Poisson(1) quantiles on a 2^16 grid: a uint16 draw per episode and resample becomes a count.
_POISSON_TABLE = np.searchsorted(
    st.poisson.cdf(np.arange(40), 1.0), (np.arange(65536) + 0.5) / 65536
).astype(np.float32)


def resample_counts(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Multinomial bootstrap counts: ``size`` resamples of ``n`` episodes, as (size, n) float32.

    The draws are ``rng.integers(0, n, size=(size, n))`` (the same stream for 32- and 64-bit
    integers), counted one resample at a time (the counts of one row stay in cache).
    """
    idx = rng.integers(0, n, size=(size, n), dtype=np.int32 if n < 2**31 else np.int64)
    out = np.empty((size, n), dtype=np.float32)
    for row, drawn in zip(out, idx, strict=True):
        row[:] = np.bincount(drawn, minlength=n)
    return out


def uniform16(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """``rng.integers(0, 65536, size=(size, n), dtype=np.uint16)``, bit for bit, about 2x faster.

    numpy fills full-range 16-bit draws from its 32-bit stream, low half first, and PCG64 serves
    that stream from 64-bit outputs, low half first (keeping an unused high half in its state).
    On a little-endian machine that is the 64-bit raw stream read as uint16, so it is taken in
    one ``random_raw`` call; the state (the kept half) is left exactly as ``integers`` leaves
    it. Other bit generators fall back to ``integers``; a test checks the equality.
    """
    cells = size * n
    bits = rng.bit_generator
    if type(bits) is not np.random.PCG64 or sys.byteorder != "little" or cells == 0:
        return rng.integers(0, 65536, size=(size, n), dtype=np.uint16)
    words = (cells + 1) // 2  # 32-bit words used; an odd count drops the last one's high half
    state = bits.state
    kept = int(state["has_uint32"])
    stream = bits.random_raw((words - kept + 1) // 2).view(np.uint32)
    if kept:
        stream = np.concatenate([np.array([state["uinteger"]], dtype=np.uint32), stream])
    state = bits.state
    state["has_uint32"], state["uinteger"] = (1, int(stream[-1])) if len(stream) > words else (0, 0)
    bits.state = state
    return stream[:words].view(np.uint16)[:cells].reshape(size, n)


def poisson_counts(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson(1) bootstrap counts (Hanley & MacGibbon 2006), (size, n) float32.

    Each episode enters each resample an independent Poisson(1) number of times: the same
    first-order behaviour as the multinomial bootstrap, with a random resample size, and about
    four times cheaper to draw (one table lookup of a 16-bit random number per cell).
    The lookup runs over slices that fit in cache (``take`` widens its indices to 64 bits, and
    widening the whole block at once would write and read it again through memory), with
    ``mode="wrap"``: every 16-bit draw is a valid index, so no bound needs checking.
    """
    draws = uniform16(rng, size, n).reshape(-1)
    out = np.empty(draws.size, dtype=np.float32)
    for start in range(0, draws.size, _LOOKUP_SLICE):
        stop = start + _LOOKUP_SLICE
        np.take(_POISSON_TABLE, draws[start:stop], out=out[start:stop], mode="wrap")
    return out.reshape(size, n)


class _ResampledSums:
    """``counts @ F`` for the stacked per-episode statistics of several estimators, fast.

    Per-step statistics form a staircase: an episode of length L has entries only in the
    first L step columns. Rows are ordered by their number of non-zeros (longest episodes
    first) so that every column's support is a row prefix; columns are bucketed by the length
    of that prefix, and each bucket is one dense float32 product over its prefix only. The work
    is then about (number of decisions) x (resamples) per per-step block instead of
    (episodes x longest episode) x (resamples).

    ``exact`` multiplies in float64 (float32 by default: the replicates then carry float32
    rounding, about 1e-7 relative, which is far below their spread). A last column of ones
    gives each resample's size in the same product (one pass over the counts instead of two).
    """

    def __init__(self, stats: Sequence[EpisodeStatistics], *, exact: bool = False) -> None:
        n = stats[0].n_episodes
        if any(s.n_episodes != n for s in stats):
            raise ValueError("all statistics must have the same episodes")
        self.n = n
        self.dtype = np.float64 if exact else np.float32
        self.offsets = [0]
        for s in stats:
            self.offsets.append(self.offsets[-1] + s.width)
        self.width = self.offsets[-1]
        # one statistic column alone is a matrix-vector product: a second column would change
        # its float32 rounding, so its resample sizes are then summed apart
        self.ones = int(self.width > 1)
        if n * self.width <= _DENSE_LIMIT:
            dense = np.zeros((n, self.width + self.ones), dtype=self.dtype)
            dense[:, self.width :] = 1.0
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
            ones = sp.csr_matrix(np.ones((n, self.ones)))
            matrix = sp.hstack([*(sp.csr_matrix(s.matrix) for s in stats), ones], format="csr")
            matrix.eliminate_zeros()
            self.perm = np.argsort(-np.diff(matrix.indptr), kind="stable")
            ordered = matrix[self.perm].tocsr()
            coo = ordered.tocoo()
            prefix = np.zeros(self.width + self.ones, dtype=np.int64)
            np.maximum.at(prefix, coo.col, coo.row.astype(np.int64) + 1)
        # rows already in order (e.g. no statistic is 0 anywhere): counts need no reordering
        self.in_order = bool(np.all(self.perm[1:] > self.perm[:-1]))
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
                block = np.asarray(ordered[:top][:, cols].toarray(), dtype=self.dtype)
            self.buckets.append((cols, top, block))
            start = stop

    def __call__(
        self, counts_ordered: np.ndarray, sizes: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sums (B x width) and resample sizes (B,) for counts given in the internal row order
        (iid counts need no reordering); ``sizes``: the resample sizes when already known."""
        counts_ordered = np.asarray(counts_ordered, dtype=self.dtype)
        out = np.zeros((counts_ordered.shape[0], self.width + self.ones))
        for cols, top, block in self.buckets:
            out[:, cols] = counts_ordered[:, :top] @ block
        if sizes is not None:
            return out[:, : self.width], sizes
        totals = out[:, self.width] if self.ones else _integer_totals(counts_ordered)
        # float32 sums of integer counts are exact while every partial sum stays below 2^24
        if self.dtype == np.float32 and totals.size and float(totals.max()) >= _FLOAT32_EXACT:
            totals = counts_ordered.sum(axis=1, dtype=np.float64)
        return out[:, : self.width], totals


class ResampleCounts:
    """The bootstrap's resample counts, drawn in chunks and shareable between summaries.

    Counts depend only on (N, number of resamples, seed, scheme); an evaluation draws them once
    and reuses them for the behaviour policy and every candidate. They are kept, with each
    resample's size, when they fit in ``max_cells``: as read-only float32 blocks up to 100 M
    cells (a later use is then only the matrix product), as uint8 above (a count above 255 has
    probability ~1e-500); else they are redrawn from the seed on each use (identical either way).
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
        cells = n * n_resamples
        self.keep = cells <= max_cells
        self.keep_float32 = cells <= min(max_cells, _KEEP_FLOAT32)
        self._stored: list[np.ndarray] | None = None
        self._sizes: list[np.ndarray] | None = None  # each resample's size, once added up

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """The blocks of :meth:`chunks`, each with its resample sizes when they are known."""
        sizes = self._sizes
        for i, block in enumerate(self.chunks()):
            yield block, (sizes[i] if sizes is not None else None)

    def remember_sizes(self, sizes: list[np.ndarray]) -> None:
        """Keep each block's resample sizes (float64), added up by a first use of kept counts."""
        if self._stored is not None and len(sizes) == len(self._stored):
            self._sizes = sizes

    def chunks(self) -> Iterator[np.ndarray]:
        """Successive (size, N) float32 blocks of counts (read-only when kept), n_resamples rows
        in all."""
        if self._stored is not None:
            for block in self._stored:
                yield block if self.keep_float32 else block.astype(np.float32)
            return
        rng = np.random.default_rng(self.seed)
        draw = poisson_counts if self.scheme == "poisson" else resample_counts
        stored: list[np.ndarray] = []
        done = 0
        while done < self.n_resamples:
            size = min(self.chunk, self.n_resamples - done)
            counts = draw(self.n, size, rng)
            if self.keep:
                kept = counts if self.keep_float32 else counts.astype(np.uint8)
                kept.flags.writeable = False
                stored.append(kept)
            yield counts
            done += size
        if self.keep:
            self._stored = stored


_PLANS: OrderedDict[tuple[int, int, int, str, int], ResampleCounts] = OrderedDict()


def shared_counts(
    n: int, n_resamples: int, *, seed: int = 0, scheme: str = "poisson", chunk_size: int = 100
) -> ResampleCounts:
    """The resample plan for (N, resamples, seed, scheme, chunk size), drawn once per process.

    Every estimator's ``estimate_interval`` and every candidate on the same episodes then share
    one set of counts, kept as uint8 (``ResampleCounts``); they are exactly the counts a fresh
    ``ResampleCounts`` with the same arguments draws, so sharing changes no result. The last
    ``_SHARED_PLANS`` plans are kept; ``clear_shared_counts`` frees them.
    """
    key = (n, n_resamples, seed, scheme, chunk_size)
    plan = _PLANS.pop(key, None)
    if plan is None:
        plan = ResampleCounts(n, n_resamples, seed=seed, scheme=scheme, chunk_size=chunk_size)
    _PLANS[key] = plan
    while len(_PLANS) > _SHARED_PLANS:
        _PLANS.popitem(last=False)
    return plan


def clear_shared_counts() -> None:
    """Forget the shared resample plans (their memory is freed)."""
    _PLANS.clear()


def bootstrap_values(
    stats: Sequence[EpisodeStatistics],
    *,
    n_resamples: int,
    seed: int = 0,
    chunk_size: int = 100,
    scheme: str = "poisson",
    counts: ResampleCounts | None = None,
    exact: bool = False,
) -> np.ndarray:
    """Bootstrap replicates of every estimator: array (n_resamples, len(stats)).

    ``scheme`` is ``poisson`` (default, Poisson(1) counts per episode) or ``multinomial``
    (the classic resampling of exactly N episodes with replacement); ``counts`` reuses counts
    drawn for another summary of the same episodes (``shared_counts``: the same counts as
    drawing them here with the same seed). ``exact``: float64 products (see ``_ResampledSums``).
    """
    sums_of = _ResampledSums(stats, exact=exact)
    if counts is None or counts.n != sums_of.n or counts.n_resamples != n_resamples:
        counts = ResampleCounts(
            sums_of.n, n_resamples, seed=seed, scheme=scheme, chunk_size=chunk_size, max_cells=0
        )
    out = np.empty((n_resamples, len(stats)))
    done = 0
    sizes = []
    for block, known in counts.blocks():
        size = block.shape[0]
        if counts.scheme == "multinomial":  # exactly N episodes in every resample
            known = np.full(size, float(sums_of.n))
        sums, totals = sums_of(block, known)
        sizes.append(totals)
        _combine_into(out[done : done + size], stats, sums, totals, sums_of.offsets)
        done += size
    counts.remember_sizes(sizes)
    return out


def bootstrap_from_counts(
    stats: Sequence[EpisodeStatistics], counts: np.ndarray, *, exact: bool = False
) -> np.ndarray:
    """Replicates for explicit resample counts (size, N) in the episodes' own order.

    ``exact``: float64 products, equal to recomputing each estimator on its resample up to
    float64 rounding (float32 by default, about 1e-7 relative).
    """
    sums_of = _ResampledSums(stats, exact=exact)
    in_order = counts if sums_of.in_order else counts[:, sums_of.perm]
    ordered = np.ascontiguousarray(in_order, dtype=sums_of.dtype)
    out = np.empty((counts.shape[0], len(stats)))
    sums, _ = sums_of(ordered)
    totals = ordered.sum(axis=1, dtype=np.float64)  # the counts may be any numbers here
    _combine_into(out, stats, sums, totals, sums_of.offsets)
    return out


def _integer_totals(counts: np.ndarray) -> np.ndarray:
    """Row sums of integer-valued counts, in float64; summed in float32 (several times faster,
    no conversion of the block) when that is exact."""
    if counts.dtype == np.float32:
        totals = counts.sum(axis=1, dtype=np.float32)
        if totals.size == 0 or float(totals.max()) < _FLOAT32_EXACT:
            return totals.astype(np.float64)
    return np.asarray(counts.sum(axis=1, dtype=np.float64))


def _combine_into(
    out: np.ndarray,
    stats: Sequence[EpisodeStatistics],
    sums: np.ndarray,
    totals: np.ndarray,
    offsets: list[int],
) -> None:
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
    scheme: str = "poisson",
    counts: ResampleCounts | None = None,
) -> tuple[float, float]:
    """The bootstrap interval of one estimator, equal to ``summarise([stats])``'s.

    Only what the interval needs is computed: the replicates, and the jackknife only for BCa.
    ``counts`` (e.g. ``shared_counts``) reuses resample counts drawn for other estimators.
    """
    if n_resamples <= 1:
        summary = summarise([stats], confidence=confidence, n_resamples=n_resamples, seed=seed)
        return summary[0].ci_low, summary[0].ci_high
    reps = bootstrap_values(
        [stats], n_resamples=n_resamples, seed=seed, scheme=scheme, counts=counts
    )[:, 0]
    if method == "bca":
        return bca_interval(reps, stats.value(), jackknife_values(stats), confidence)
    return percentile_interval(reps, confidence)
