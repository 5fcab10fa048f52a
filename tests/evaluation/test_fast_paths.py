"""The fast paths of the importance-sampling estimators and the bootstrap give the same bits as
the plain constructions they replace (the plain ones are rebuilt here as references)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats as st

from evaluation.data import EpisodeData
from evaluation.estimators import OPEInput, WeightedPerDecisionIS
from evaluation.estimators.base import per_step_matrix
from evaluation.intervals import (
    bootstrap_from_counts,
    bootstrap_values,
    poisson_counts,
    resample_counts,
)
from evaluation.statistics import EpisodeStatistics


def _input(seed: int, *, gaps: bool, max_weight: float | None = None) -> OPEInput:
    """Episodes of 1-7 decisions (steps with gaps when ``gaps``), 3 actions."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 8, size=300)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    n = len(episode)
    step = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    if gaps:
        step = step * 2 + (step > 0)  # 0, 3, 5, 7, ...: increasing, starting at 0
    data = EpisodeData.from_arrays(
        episode=episode,
        step=step,
        action=rng.integers(0, 3, size=n),
        reward=rng.normal(1.0, 2.0, size=n),
        behaviour_propensity=rng.uniform(0.2, 0.9, size=n),
        gamma=0.95,
        n_actions=3,
    )
    return OPEInput(data, rng.uniform(0.0, 1.0, size=n), max_weight=max_weight)


def _stacked_reference(inp: OPEInput) -> sp.csr_matrix:
    d = inp.data
    num = per_step_matrix(d, d.discount * inp.w * d.reward)
    delta = per_step_matrix(d, inp.w - inp.w_prev)
    return sp.hstack([num, delta], format="csr")


@pytest.mark.parametrize(("gaps", "max_weight"), [(False, None), (True, None), (True, 1.5)])
def test_wpdis_point_estimate_has_the_bits_of_its_statistics(gaps, max_weight) -> None:  # type: ignore[no-untyped-def]
    for seed in range(5):
        inp = _input(seed, gaps=gaps, max_weight=max_weight)
        est = WeightedPerDecisionIS()
        stats = est.episode_statistics(inp)
        reference = EpisodeStatistics(_stacked_reference(inp), stats.combine)
        assert est.estimate_policy_value(inp) == stats.value() == reference.value()


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (7, 30_001)])
def test_poisson_counts_are_the_table_lookup_of_numpys_16_bit_draws(shape) -> None:  # type: ignore[no-untyped-def]
    table = np.searchsorted(st.poisson.cdf(np.arange(40), 1.0), (np.arange(65536) + 0.5) / 65536)
    ours, numpys = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(2):
        got = poisson_counts(shape[1], shape[0], ours)
        want = table[numpys.integers(0, 65536, size=shape, dtype=np.uint16)]
        assert got.dtype == np.float32 and np.array_equal(got, want)


def test_multinomial_resample_sizes_are_n_as_if_counted() -> None:
    rng = np.random.default_rng(6)
    n = 200
    matrix = rng.normal(size=(n, 2))  # no zero anywhere: rows stay in order
    stats = [EpisodeStatistics(matrix, lambda s, k: s[:, 0] / k + s[:, 1] / (k + 1.0))]
    planned = bootstrap_values(stats, n_resamples=90, seed=2, scheme="multinomial")
    counts = resample_counts(n, 90, np.random.default_rng(2))
    assert np.array_equal(planned, bootstrap_from_counts(stats, counts))


def test_counts_already_in_order_give_the_replicates_of_reordered_ones() -> None:
    rng = np.random.default_rng(4)
    dense = rng.normal(size=(50, 3))  # no zero anywhere: the rows keep their order
    with_zeros = dense.copy()
    with_zeros[::7, 1] = 0.0  # rows with a zero move behind the others
    counts = rng.poisson(1.0, size=(20, 50)).astype(np.float64)
    for matrix in (dense, with_zeros):
        stats = [EpisodeStatistics(matrix, lambda s, n: s.sum(axis=1) / n)]
        want = (counts @ matrix).sum(axis=1) / counts.sum(axis=1)
        got = bootstrap_from_counts(stats, counts, exact=True)[:, 0]
        assert np.allclose(got, want, rtol=1e-12, atol=0.0)
