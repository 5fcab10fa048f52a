"""Diagnostics of one candidate's evaluation: overlap, weight tails, support, clipping, agreement.

Each number here has a threshold in :class:`evaluation.config.ApprovalConfig`; the approval rule
(``evaluation.approval``) turns them into pass/fail checks.
"""

from __future__ import annotations

import numpy as np

from evaluation.candidates import CandidateProbabilities
from evaluation.config import SUPPORT_FRACTION_DEFAULT
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


_SUPPORT_BINS = 20
_SAME = 1e-6


def support_threshold_for_data(
    data: EpisodeData, threshold: float | None, fraction: float = SUPPORT_FRACTION_DEFAULT
) -> float:
    """The threshold in force: ``threshold`` when set, else ``fraction / K``.

    ``K`` is the number of actions (discrete) or of histogram bins (continuous, 20): a uniform
    logging policy gives every action ``1 / K``, so the threshold is the same share of what the
    logging policy would give an action if it had no preference, whatever the number of actions.
    """
    if threshold is not None:
        return threshold
    k = data.action_space.n if data.action_space.is_discrete else _SUPPORT_BINS
    return fraction / max(k, 1)


def unsupported_share(
    data: EpisodeData,
    *,
    target_distribution: FloatArray | None,
    target_action: FloatArray | None,
    threshold: float,
    logged_ratio: FloatArray | None = None,
) -> tuple[float, str]:
    """Share of the candidate's probability on actions the logs barely support, and how measured.

    Discrete: ``mean_t sum_a pi_e(a|s_t) 1{pi_b(a|s_t) < threshold}`` when the behaviour
    distribution per decision is known, else with the logged frequency of each action in place of
    ``pi_b(a|s_t)``. A candidate known only on the logged actions (the logging policy itself,
    ``logged_ratio`` = ``pi_e / pi_b`` per decision) gets the importance-sampling estimate
    ``mean_t rho_t 1{pi_b(a_t|s_t) < threshold}`` from the logged propensities (unbiased for the
    logging policy, ``rho = 1``). Continuous: share of the candidate's actions falling in one of
    20 equal bins of the action range that holds less than ``threshold`` of the logged actions.
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
    if space.is_discrete and logged_ratio is not None:
        known = ~np.isnan(data.behaviour_propensity)
        if known.any():
            low_logged = data.behaviour_propensity[known] < threshold
            return (
                float(np.mean(logged_ratio[known] * low_logged)),
                "logged propensities of the logged actions",
            )
    if not space.is_discrete and target_action is not None:
        edges = np.linspace(space.low, space.high, _SUPPORT_BINS + 1)
        logged = np.clip(np.asarray(data.action, dtype=np.float64), space.low, space.high)
        share = np.histogram(logged, bins=edges)[0] / data.n_decisions
        bins = np.clip(
            np.searchsorted(edges, target_action, side="right") - 1, 0, _SUPPORT_BINS - 1
        )
        return float(np.mean(share[bins] < threshold)), "logged action histogram (20 bins)"
    return 0.0, "not measurable"


def candidate_diagnostics(
    inp: OPEInput,
    *,
    target_action: FloatArray | None,
    support_threshold: float | None,
    support_fraction: float = SUPPORT_FRACTION_DEFAULT,
) -> dict[str, float | str | bool | None]:
    """Weight diagnostics (unclipped weights) and the support share of one candidate.

    ``support_threshold`` None: relative to the number of actions, ``support_fraction / K``.
    """
    out: dict[str, float | str | bool | None] = dict(weight_diagnostics(inp.unclipped()))
    out["clipped"] = inp.max_weight is not None
    out["clipped_fraction"] = (
        float(np.mean(inp.raw_rho > inp.max_weight)) if inp.max_weight is not None else 0.0
    )
    threshold = support_threshold_for_data(inp.data, support_threshold, support_fraction)
    share, how = unsupported_share(
        inp.data,
        target_distribution=inp.target_distribution,
        target_action=target_action,
        threshold=threshold,
        logged_ratio=inp.raw_rho,
    )
    out["unsupported_share"] = share
    out["unsupported_measured_by"] = how
    out["support_threshold"] = threshold
    return out


def logging_policy_match(data: EpisodeData, probs: CandidateProbabilities) -> str | None:
    """How a candidate was found identical to the logging policy, or None if it is not.

    Discrete actions with every propensity logged (none estimated): the candidate's probability
    of each logged action equals the logged propensity (to 1e-6 relative), and its whole
    distribution equals the behaviour's where both are known.
    """
    if not data.action_space.is_discrete or len(probs.logged) != data.n_decisions:
        return None
    prop = data.behaviour_propensity
    source = data.propensity_source
    if np.isnan(prop).any() or (source is not None and bool(np.any(source == "estimated"))):
        return None
    if not np.allclose(probs.logged, prop, rtol=_SAME, atol=1e-12):
        return None
    known = data.behaviour_action_probabilities
    if probs.distribution is not None and known is not None:
        if not np.allclose(probs.distribution, known, rtol=_SAME, atol=1e-12):
            return None
        return "its action distribution equals the logging policy's on every logged decision"
    return (
        "its probability of the logged action equals the logged propensity on all "
        f"{data.n_decisions} logged decisions"
    )


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
