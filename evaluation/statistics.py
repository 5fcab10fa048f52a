"""Per-episode statistics: the representation every estimator and every interval shares.

An estimate is a smooth function of sums over episodes: ``value = combine(sum_i F[i, :], n)``.
:class:`EpisodeStatistics` holds ``F`` and ``combine``; the estimators build it
(``evaluation.estimators``) and the intervals resample it (``evaluation.intervals``), so this
module sits below both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from evaluation.data import FloatArray

Combine = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _column_mean(s: np.ndarray, n: np.ndarray) -> np.ndarray:
    return np.asarray(s[:, 0] / n)


@dataclass(frozen=True, eq=False)
class EpisodeStatistics:
    """Per-episode statistics ``F`` (N x m, dense or sparse) and how to turn sums into a value.

    ``combine(S, n)`` maps sums ``S`` (B x m) over resampled episodes, ``n`` (B,) episodes in
    each resample, to B values. ``mean_type`` marks estimators that are plain means of column 0.
    """

    matrix: np.ndarray | sp.csr_matrix
    combine: Combine
    mean_type: bool = False

    @classmethod
    def mean_of(cls, column: np.ndarray | sp.csr_matrix) -> EpisodeStatistics:
        """The plain mean of per-episode contributions (an N x 1 column)."""
        return cls(column, _column_mean, mean_type=True)

    @property
    def n_episodes(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def width(self) -> int:
        return int(self.matrix.shape[1])

    def totals(self) -> FloatArray:
        if sp.issparse(self.matrix):
            return np.asarray(self.matrix.sum(axis=0), dtype=np.float64).ravel()
        return np.asarray(self.matrix, dtype=np.float64).sum(axis=0)

    def value(self) -> float:
        n = np.array([float(self.n_episodes)])
        return float(self.combine(self.totals()[None, :], n)[0])

    def contributions(self) -> FloatArray:
        """Per-episode contributions of a mean-type estimator (its column 0)."""
        col = self.matrix[:, [0]]
        return np.asarray(
            col if isinstance(col, np.ndarray) else col.toarray(), dtype=np.float64
        ).ravel()
