"""Importance weights over variable-length episodes, vectorised.

Conventions (evaluation/README.md):

* the per-decision ratio is ``rho_t = pi_e(a_t | s_t) / pi_b(a_t | s_t)``;
* the cumulative weight of decision t is ``w_t = prod_{t' <= t} rho_t'`` within its episode, and
  ``w_{-1} = 1``;
* after an episode's last decision it sits in an absorbing state where both policies agree, so
  its weight stays frozen at its last value and its rewards are 0. Per-step self-normalisation
  (WPDIS, WDR) therefore divides by the sum over ALL episodes of their (frozen) weights, which is
  an unbiased estimate of the number of episodes at every step. Dividing only by the episodes
  still running would make the estimators inconsistent whenever the candidate changes how long
  episodes last.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluation.data import EpisodeData, FloatArray, IntArray

_PAD_RATIO = 1.5  # pad episodes to the longest one while that adds at most half the cells


def positions(data: EpisodeData) -> IntArray:
    """Row position within its episode (0 for the first decision, even if ``step`` has gaps)."""
    return np.arange(data.n_decisions, dtype=np.int64) - data.first_row[data.episode]


def cumulative_weights(data: EpisodeData, rho: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-decision cumulative weights ``w_t`` and the previous ones ``w_{t-1}`` (1 at t = 0).

    Episodes are contiguous rows, so ``w_t = w_{t-1} * rho_t`` is a cumulative product along
    each episode: one ``cumprod`` over an (episodes x longest) array when padding to the longest
    episode costs little (a plain reshape when every episode has the same length), else a loop
    over positions within episodes, each a vectorised gather over the episodes that are that
    long. Both multiply in the same order, so they give the same bits.
    """
    rho = np.asarray(rho, dtype=np.float64)
    lengths = data.lengths
    n_episodes, longest = len(lengths), int(lengths.max())
    if n_episodes * longest == data.n_decisions:
        w = np.cumprod(rho.reshape(n_episodes, longest), axis=1).ravel()
    elif n_episodes * longest <= _PAD_RATIO * data.n_decisions:
        w = _padded_cumprod(data, rho, longest)
    else:
        w = _positional_cumprod(data, rho)
    w_prev = np.empty_like(w)
    w_prev[1:] = w[:-1]
    w_prev[data.first_row] = 1.0
    return w, w_prev


def _padded_cumprod(data: EpisodeData, rho: FloatArray, longest: int) -> FloatArray:
    """Cumulative products along episodes through a ones-padded (episodes x longest) array."""
    col = positions(data)
    padded = np.ones((data.n_episodes, longest))
    padded[data.episode, col] = rho
    return np.asarray(np.cumprod(padded, axis=1)[data.episode, col])


def _positional_cumprod(data: EpisodeData, rho: FloatArray) -> FloatArray:
    """Cumulative products along episodes, one vectorised step per position within episodes."""
    first = data.first_row
    lengths = data.lengths
    by_length = np.argsort(-lengths, kind="stable")
    # number of episodes longer than t, for t = 0..max_len-1
    longer = np.searchsorted(-lengths[by_length], -np.arange(int(lengths.max())), side="left")
    w = np.empty_like(rho, dtype=np.float64)
    w[first] = rho[first]
    for t in range(1, len(longer)):
        rows = first[by_length[: longer[t]]] + t
        w[rows] = w[rows - 1] * rho[rows]
    return w


def effective_sample_size(weights: np.ndarray[Any, np.dtype[np.float64]]) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (0 when every weight is 0)."""
    total_sq = float(np.sum(weights**2))
    if total_sq == 0.0:
        return 0.0
    return float(np.sum(weights) ** 2 / total_sq)
