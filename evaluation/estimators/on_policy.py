"""The behaviour policy's own value, straight from the logs (no weights, no model).

``V_b = 1/N sum_i sum_{t<H_i} gamma^t r_{i,t}``: the on-policy average discounted return, reported
beside every candidate and used as the bar of the approval rule.
"""

from __future__ import annotations

from evaluation.estimators.base import OffPolicyEstimator, OPEInput
from evaluation.statistics import EpisodeStatistics


class OnPolicyValue(OffPolicyEstimator):
    """Average discounted return of the logged episodes (the logging policy's value)."""

    name = "on_policy"
    family = "on_policy"
    uses_weights = False
    unbiased = True

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        return EpisodeStatistics.mean_of(inp.data.returns[:, None])
