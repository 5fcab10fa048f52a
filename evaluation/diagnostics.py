"""Diagnostics of one candidate's evaluation: overlap, weight tails, support, clipping, agreement.

Each number here has a threshold in :class:`evaluation.config.ApprovalConfig`; the approval rule
(``evaluation.approval``) turns them into pass/fail checks.
"""

from __future__ import annotations

import numpy as np

from evaluation.data import EpisodeData, FloatArray
from evaluation.estimators.base import OPEInput, weight_diagnostics

# The estimator standing for each family in the family-spread diagnostic, in preference order.
FAMILY_REPRESENTATIVES: dict[str, tuple[str, ...]] = {
    "importance_sampling": ("wpdis", "kernel_wis", "snipw", "wis", "pdis", "kernel_is", "ipw"),
    "doubly_robust": ("dr", "kernel_dr", "dr_bandit", "wdr", "sndr"),
    "direct": ("dm", "dm_bandit", "fqe"),
    "marginal": ("mdr", "mis"),
}


def decision_weight_diagnostics(weights: FloatArray) -> dict[str, float]:
    """Overlap of the per-decision marginal weights ``mu_t = w_t(s_t) rho_t`` of ``mis``/``mdr``.

    These estimators weight each decision by ``mu_t``, never by a product over the episode, so
    their overlap is that of the decisions: Kish ESS ``(sum mu)^2 / sum mu^2`` over decisions,
    its share of the decisions, and the largest decision's share of the total weight.
    """
    mu = np.asarray(weights, dtype=np.float64)
    total = float(mu.sum())
    if total <= 0:
        return {"ess": 0.0, "ess_fraction": 0.0, "max_weight_share": 1.0}
    ess = total**2 / float(np.sum(mu**2))
    return {
        "ess": ess,
        "ess_fraction": ess / len(mu),
        "max_weight_share": float(mu.max() / total),
    }


def unsupported_share(
    data: EpisodeData,
    *,
    target_distribution: FloatArray | None,
    target_action: FloatArray | None,
    threshold: float,
) -> tuple[float, str]:
    """Share of the candidate's probability on actions the logs barely support, and how measured.

    Discrete: ``mean_t sum_a pi_e(a|s_t) 1{pi_b(a|s_t) < threshold}`` when the behaviour
    distribution per decision is known, else with the logged frequency of each action in place of
    ``pi_b(a|s_t)``. Continuous: share of the candidate's actions falling in one of 20 equal bins
    of the action range that holds less than ``threshold`` of the logged actions.
    """
    space = data.action_space
    if space.is_discrete and target_distribution is not None:
        if data.behaviour_action_probabilities is not None:
            low = data.behaviour_action_probabilities < threshold
            return float(np.mean(np.sum(target_distribution * low, axis=1))), "per decision"
        freq = np.bincount(data.action, minlength=space.n) / data.n_decisions
        low_global = freq < threshold
        return (
            float(np.mean(target_distribution[:, low_global].sum(axis=1))),
            "logged action frequencies",
        )
    if not space.is_discrete and target_action is not None:
        edges = np.linspace(space.low, space.high, 21)
        logged = np.clip(np.asarray(data.action, dtype=np.float64), space.low, space.high)
        share = np.histogram(logged, bins=edges)[0] / data.n_decisions
        bins = np.clip(np.searchsorted(edges, target_action, side="right") - 1, 0, 19)
        return float(np.mean(share[bins] < threshold)), "logged action histogram (20 bins)"
    return 0.0, "not measurable"


def candidate_diagnostics(
    inp: OPEInput,
    *,
    target_action: FloatArray | None,
    support_threshold: float,
) -> dict[str, float | str | bool | None]:
    """Weight diagnostics (unclipped weights) and the support share of one candidate."""
    out: dict[str, float | str | bool | None] = dict(weight_diagnostics(inp.unclipped()))
    out["clipped"] = inp.max_weight is not None
    out["clipped_fraction"] = (
        float(np.mean(inp.raw_rho > inp.max_weight)) if inp.max_weight is not None else 0.0
    )
    share, how = unsupported_share(
        inp.data,
        target_distribution=inp.target_distribution,
        target_action=target_action,
        threshold=support_threshold,
    )
    out["unsupported_share"] = share
    out["unsupported_measured_by"] = how
    return out


def family_spread(estimates: dict[str, float]) -> tuple[float | None, dict[str, str]]:
    """Largest minus smallest estimate among the families' representatives (None if < 2)."""
    chosen: dict[str, str] = {}
    for family, names in FAMILY_REPRESENTATIVES.items():
        for name in names:
            if name in estimates and np.isfinite(estimates[name]):
                chosen[family] = name
                break
    if len(chosen) < 2:
        return None, chosen
    values = [estimates[n] for n in chosen.values()]
    return float(max(values) - min(values)), chosen
