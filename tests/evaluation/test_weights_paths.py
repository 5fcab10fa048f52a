"""Cumulative importance weights: every computation path against a per-episode loop."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.data import EpisodeData
from evaluation.weights import _padded_cumprod, _positional_cumprod, cumulative_weights


@pytest.mark.parametrize("lengths", ["equal", "close", "spread", "one_step"])
def test_cumulative_weights_equal_a_product_per_episode_bit_for_bit(lengths: str) -> None:
    rng = np.random.default_rng(4)
    n_episodes = 300
    sizes = {
        "equal": np.full(n_episodes, 6),  # reshape path
        "close": rng.integers(5, 7, n_episodes),  # padded path
        "spread": np.minimum(rng.geometric(0.2, n_episodes), 30),  # positional path
        "one_step": np.ones(n_episodes, dtype=int),
    }[lengths]
    episode = np.repeat(np.arange(n_episodes), sizes)
    n = len(episode)
    data = EpisodeData.from_arrays(
        episode=episode,
        action=np.zeros(n, dtype=int),
        reward=np.zeros(n),
        behaviour_propensity=np.full(n, 0.5),
        n_actions=2,
    )
    rho = rng.uniform(0.0, 2.0, n)
    rho[rng.random(n) < 0.05] = 0.0
    w, w_prev = cumulative_weights(data, rho)
    expected, expected_prev = np.empty(n), np.empty(n)
    for start, size in zip(data.first_row, data.lengths, strict=True):
        acc = 1.0
        for row in range(start, start + size):
            expected_prev[row] = acc
            acc = acc * rho[row]
            expected[row] = acc
    assert np.array_equal(w, expected) and np.array_equal(w_prev, expected_prev)
    longest = int(data.lengths.max())
    assert np.array_equal(_padded_cumprod(data, rho, longest), expected)
    assert np.array_equal(_positional_cumprod(data, rho), expected)
