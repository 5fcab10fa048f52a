"""The approval rule: a candidate ships only if it beats the logging policy with confidence.

Rule (shared/design.md): approved only when the lower confidence bound of the candidate's
*improvement* ``V(candidate) - V(behaviour)`` (primary estimator, paired on the same held-out
episodes, ``EvaluateConfig.lower_bound`` method; see ``evaluation/improvement.py``) exceeds the
margin ``max(min_improvement, min_relative_improvement * |V_b|)``, AND every diagnostic passes
its threshold (``ApprovalConfig``). The improvement check is written in value units (the
behaviour's value plus the improvement's lower bound against the behaviour's value plus the
margin: the same inequality). With ``EvaluateConfig.comparison = "level"`` the lower bound is
the candidate's own, unpaired. The verdict names the rule that decided in plain words, lists
every check with its value, threshold and result, and, when the evidence is too thin, says how
much more data would decide (``PowerAnalysis``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from evaluation.config import ApprovalConfig
from evaluation.improvement import PowerAnalysis


@dataclass(frozen=True)
class Check:
    """One rule: ``value`` against ``threshold`` (``comparison`` is ``>=``, ``<=`` or ``>``)."""

    name: str
    value: float | None
    threshold: float
    comparison: str
    passed: bool
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """Approve or reject, the rule that decided (in words a manager reads), and every check."""

    approved: bool
    decided_by: str
    checks: list[Check] = field(default_factory=list)
    lower_bound: float | None = None
    baseline_value: float | None = None
    margin: float | None = None
    lower_bound_level: float | None = None
    improvement: float | None = None
    power: PowerAnalysis | None = None

    @property
    def decision(self) -> str:
        return "approve" if self.approved else "reject"

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "approved": self.approved,
            "decided_by": self.decided_by,
            "checks": [c.to_dict() for c in self.checks],
            "lower_bound": self.lower_bound,
            "baseline": "the current (logging) policy",
            "baseline_value": self.baseline_value,
            "margin": self.margin,
            "lower_bound_level": self.lower_bound_level,
            "improvement": self.improvement,
            "power": None if self.power is None else self.power.to_dict(),
        }


def _check(name: str, value: float | None, threshold: float, comparison: str, text: str) -> Check:
    if value is None:
        return Check(name, None, threshold, comparison, True, text + " (not applicable)")
    ok = {
        ">=": value >= threshold,
        "<=": value <= threshold,
        ">": value > threshold,
    }[comparison]
    return Check(name, float(value), float(threshold), comparison, bool(ok), text)


def approve(
    *,
    lower_bound: float,
    behaviour_value: float,
    diagnostics: dict[str, Any],
    config: ApprovalConfig | None = None,
    estimator: str = "dr",
    bound_method: str = "t",
    confidence: float = 0.95,
    improvement: float | None = None,
    power: PowerAnalysis | None = None,
    selection_note: str | None = None,
) -> Verdict:
    """Apply the approval rule to one candidate.

    ``diagnostics`` holds ``ess``, ``ess_fraction``, ``max_weight_share``, ``unsupported_share``,
    and optionally ``clipping_effect_se``, ``family_spread``, ``family_spread_se``,
    ``primary_se``, ``calibration_error`` (when the propensities were estimated).
    ``improvement`` (the paired point estimate of the gain) and ``power`` come with a paired
    comparison; ``lower_bound`` is then the behaviour's value plus the gain's lower bound.
    ``selection_note`` (the nightly job's candidate selection, when no member was predicted to
    clear the margin) is added to the words of a rejection.
    """
    cfg = config or ApprovalConfig()
    margin = cfg.margin(behaviour_value)
    bar = behaviour_value + margin
    spread = diagnostics.get("family_spread")
    se = float(diagnostics.get("family_spread_sd") or diagnostics.get("primary_se") or 0.0)
    spread_allowed = max(
        cfg.max_family_spread_se * se, cfg.max_family_spread_relative * abs(behaviour_value)
    )
    subject = (
        f"{estimator} estimate" if improvement is None
        else f"current policy's value plus the paired {estimator} estimate of the gain"
    )
    checks = [
        _check(
            "improvement",
            lower_bound,
            bar,
            ">",
            f"the {confidence:.0%} lower bound ({bound_method}) of the {subject} must "
            f"exceed the current policy's value {behaviour_value:.4g} plus the margin "
            f"{margin:.4g}",
        ),
        _check(
            "effective_sample_size",
            diagnostics.get("ess"),
            cfg.min_ess,
            ">=",
            "enough logged episodes must resemble what the candidate would do",
        ),
        _check(
            "effective_sample_share",
            diagnostics.get("ess_fraction"),
            cfg.min_ess_fraction,
            ">=",
            "the effective sample must be a large enough share of the episodes",
        ),
        _check(
            "largest_weight_share",
            diagnostics.get("max_weight_share"),
            cfg.max_weight_share,
            "<=",
            "no single episode may carry too much of the estimate",
        ),
        _check(
            "unsupported_actions",
            diagnostics.get("unsupported_share"),
            cfg.max_unsupported_share,
            "<=",
            "the candidate must rarely choose actions the current policy almost never took",
        ),
        _check(
            "clipping_effect",
            diagnostics.get("clipping_effect_se"),
            cfg.max_clipping_effect_se,
            "<=",
            "clipping the weights must not move the estimate by more than this many standard "
            "errors",
        ),
        _check(
            "estimator_agreement",
            spread,
            spread_allowed,
            "<=",
            "the importance-sampling, doubly-robust, marginal and model-based estimates must "
            "agree (within this many standard errors of their difference, or the relative "
            "allowance)",
        ),
        _check(
            "propensity_calibration",
            diagnostics.get("calibration_error"),
            cfg.max_calibration_error,
            "<=",
            "estimated logging probabilities must be well calibrated",
        ),
    ]
    failed = [c for c in checks if not c.passed]
    extra = (lower_bound, behaviour_value, margin, confidence, improvement, power)
    if not failed:
        text = (
            f"Approved: with {confidence:.0%} confidence the candidate is worth at least "
            f"{lower_bound:.4g} per episode, above the current policy's {behaviour_value:.4g} "
            f"plus the required margin {margin:.4g}, and every reliability check passed."
        )
        if improvement is not None:
            text = (
                f"Approved: with {confidence:.0%} confidence the candidate earns at least "
                f"{lower_bound - behaviour_value:.4g} per episode more than the current policy "
                f"(estimated gain {improvement:.4g}, measured on the same held-out episodes), "
                f"above the required margin {margin:.4g}, and every reliability check passed."
            )
        return Verdict(True, text, checks, *extra)
    first = failed[0]
    if first.name == "improvement":
        text = (
            f"Rejected: the candidate is not shown to beat the current policy. Its value is at "
            f"least {lower_bound:.4g} per episode with {confidence:.0%} confidence, which does "
            f"not exceed the current policy's {behaviour_value:.4g} plus the margin {margin:.4g}."
        )
        if improvement is not None:
            text = (
                f"Rejected: the candidate is not shown to beat the current policy. Its estimated "
                f"gain is {improvement:.4g} per episode, but with {confidence:.0%} confidence "
                f"only {lower_bound - behaviour_value:.4g}, which does not exceed the margin "
                f"{margin:.4g}."
            )
        if power is not None:
            text += " " + power.sentence(margin)
        others = [c.name for c in failed[1:]]
        if others:
            text += f" Reliability checks also failed: {', '.join(others)}."
    else:
        names = ", ".join(c.name for c in failed)
        text = (
            f"Rejected: the estimate cannot be trusted ({names} failed): {first.explanation}; "
            f"measured {first.value:.4g}, allowed {first.comparison} {first.threshold:.4g}."
        )
    if selection_note:
        text += " " + selection_note
    return Verdict(False, text, checks, *extra)
