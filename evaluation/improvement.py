"""The improvement a candidate brings, estimated paired on the same episodes, and its power.

The gate tests ``Delta = V(candidate) - V(behaviour)``, not the candidate's level. On the same
logged episodes the behaviour policy's on-policy estimate is the mean discounted return
``G_i = sum_t gamma^t r_{i,t}``, so for a mean-type estimator with per-episode contributions
``X_i`` the paired estimate is ``mean(X_i - G_i)``: the purchase luck an episode had enters
both terms and cancels (the logged return is its own control variate). For a candidate close
to the behaviour policy ``X_i - G_i`` is small even when ``G_i`` varies a lot, which is what
makes small real gains certifiable. Self-normalised estimators are differenced inside the
resampling (numerators, denominators and returns resampled together), so every interval of
:mod:`evaluation.intervals` applies to ``Delta`` unchanged.

The power analysis inverts the one-sided t bound
``LB = Delta_hat - t_{1-delta, n-1} * sd / sqrt(n)`` (Thomas, Theocharous & Ghavamzadeh,
ICML 2015): with the per-episode standard deviation ``sd`` of the paired differences,

* the smallest gain these ``n`` episodes can certify is ``margin + t * sd / sqrt(n)`` (a true
  gain at that size clears the bar about half the time; ``margin + (t + z_{0.8}) sd / sqrt(n)``
  clears it with 80 % power);
* the estimated gain ``Delta_hat > margin`` would be certified with about
  ``n* = (t * sd / (Delta_hat - margin))^2`` episodes, i.e. ``(n* - n) / episodes_per_day``
  more days of logs at the current rate of held-out episodes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import stats as st

from evaluation.data import FloatArray
from evaluation.statistics import EpisodeStatistics

_Z_POWER = float(st.norm.ppf(0.8))


def paired_difference(stats: EpisodeStatistics, returns: FloatArray) -> EpisodeStatistics:
    """Per-episode statistics of ``estimate - mean logged return`` on the same episodes.

    ``returns`` are the episodes' discounted logged returns (``EpisodeData.returns``).
    """
    g = np.asarray(returns, dtype=np.float64).reshape(-1, 1)
    if g.shape[0] != stats.n_episodes:
        raise ValueError("returns must have one value per episode of the statistics")
    if stats.mean_type and stats.width == 1:
        return EpisodeStatistics.mean_of(stats.contributions()[:, None] - g)
    width = stats.width
    inner = stats.combine
    matrix = (
        sp.hstack([sp.csr_matrix(stats.matrix), sp.csr_matrix(g)], format="csr")
        if sp.issparse(stats.matrix)
        else np.hstack([np.asarray(stats.matrix, dtype=np.float64), g])
    )

    def combine(s: np.ndarray, n: np.ndarray) -> np.ndarray:
        return np.asarray(inner(s[:, :width], n) - s[:, width] / n)

    return EpisodeStatistics(matrix, combine)


@dataclass(frozen=True)
class PowerAnalysis:
    """How much evidence the logs hold for the improvement, and how much more would decide."""

    n_episodes: int
    sd_per_episode: float
    """Standard deviation of the per-episode paired differences (jackknife for ratio forms)."""
    smallest_certifiable_gain: float
    """The gain whose estimate would just clear the bar with these episodes."""
    gain_for_80_percent_power: float
    """A true gain of this size is certified about 80 % of the time with these episodes."""
    episodes_needed: float | None
    """Episodes that would certify the ESTIMATED gain; None when it is not above the margin."""
    episodes_per_day: float | None = None
    more_days: float | None = None
    """Days of logs still needed at the current rate (None when unknown or not reachable)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sentence(self, margin: float) -> str:
        """In words a manager reads."""
        base = (
            f"With {self.n_episodes} held-out episodes the smallest gain these logs can certify "
            f"is {self.smallest_certifiable_gain:.3g} per episode (80 % power at "
            f"{self.gain_for_80_percent_power:.3g})."
        )
        if self.episodes_needed is None:
            return base + (
                f" The estimated gain is not above the margin {margin:.3g}: more logs of the "
                "same kind would not certify it."
            )
        if self.more_days is not None and self.more_days > 0:
            return base + (
                f" Not proven yet: at the current rate about {math.ceil(self.more_days)} more "
                f"days of logs ({self.episodes_needed:.0f} episodes in all) would certify the "
                "estimated gain, if it is real."
            )
        needed = f"{self.episodes_needed:.0f}"
        return base + f" About {needed} episodes would certify the estimated gain."


def power_analysis(
    estimate: float,
    se: float,
    n_episodes: int,
    margin: float,
    delta: float,
    episodes_per_day: float | None = None,
) -> PowerAnalysis:
    """The power analysis of a paired improvement estimate (see the module docstring)."""
    n = max(int(n_episodes), 2)
    t = float(st.t.ppf(1.0 - delta, n - 1))
    sd = float(se) * math.sqrt(n)
    half = t * sd / math.sqrt(n)
    needed: float | None = None
    more: float | None = None
    gap = estimate - margin
    if gap > 0 and sd > 0:
        needed = float((t * sd / gap) ** 2)
        if episodes_per_day is not None and episodes_per_day > 0:
            more = max(0.0, (needed - n) / episodes_per_day)
    return PowerAnalysis(
        n_episodes=n,
        sd_per_episode=sd,
        smallest_certifiable_gain=margin + half,
        gain_for_80_percent_power=margin + (t + _Z_POWER) * sd / math.sqrt(n),
        episodes_needed=needed,
        episodes_per_day=episodes_per_day,
        more_days=more,
    )
