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

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
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


@dataclass(frozen=True)
class Diagnostics:
    """The reliability measurements the approval rule checks (None: not applicable).

    ``ess`` and ``ess_fraction``: effective sample size of the primary estimator's weights and
    its share of the episodes; ``max_weight_share``: the largest episode's share of the total
    weight; ``unsupported_share``: how often the candidate picks actions the logging policy
    almost never took; ``clipping_effect_se``: how far clipping moves the estimate, in standard
    errors; ``family_spread``: the spread of the estimator families' estimates, judged against
    ``family_spread_sd`` (or ``primary_se``); ``calibration_error``: of estimated propensities.
    """

    ess: float | None = None
    ess_fraction: float | None = None
    max_weight_share: float | None = None
    unsupported_share: float | None = None
    clipping_effect_se: float | None = None
    family_spread: float | None = None
    family_spread_sd: float | None = None
    primary_se: float | None = None
    calibration_error: float | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Diagnostics:
        """The fields found in ``values`` (an evaluation's ``diagnostics`` record); other keys
        (descriptions, counts) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{
            k: None if v is None else float(v) for k, v in values.items() if k in names
        })

    def spread_se(self) -> float:
        """The standard error the family spread is judged against (0 when unknown)."""
        return float(self.family_spread_sd or self.primary_se or 0.0)


@dataclass(frozen=True)
class Evidence:
    """What the gate weighs for one candidate, besides the diagnostics.

    ``lower_bound`` is in value units: the candidate's own lower bound (a level comparison), or
    the logging policy's value plus the lower bound of the paired gain; ``improvement`` (the
    paired point estimate of the gain) and ``power`` come with a paired comparison.
    """

    lower_bound: float
    behaviour_value: float
    estimator: str = "dr"
    bound_method: str = "t"
    confidence: float = 0.95
    improvement: float | None = None
    power: PowerAnalysis | None = None


def approve(
    *,
    lower_bound: float,
    behaviour_value: float,
    diagnostics: Diagnostics,
    config: ApprovalConfig | None = None,
    estimator: str = "dr",
    bound_method: str = "t",
    confidence: float = 0.95,
    improvement: float | None = None,
    power: PowerAnalysis | None = None,
    selection_note: str | None = None,
) -> Verdict:
    """Apply the approval rule to one candidate (the arguments are those of :class:`Evidence`).

    ``selection_note`` (the nightly job's candidate selection, when no member was predicted to
    clear the margin) is added to the words of a rejection.
    """
    cfg = config or ApprovalConfig()
    evidence = Evidence(lower_bound, behaviour_value, estimator, bound_method, confidence,
                        improvement, power)
    margin = cfg.margin(behaviour_value)
    checks = [_improvement_check(evidence, margin), *_reliability_checks(diagnostics, cfg,
                                                                         behaviour_value)]
    failed = [c for c in checks if not c.passed]
    extra = (lower_bound, behaviour_value, margin, confidence, improvement, power)
    if not failed:
        return Verdict(True, _approved_text(evidence, margin), checks, *extra)
    text = _rejected_text(evidence, margin, failed)
    if selection_note:
        text += " " + selection_note
    return Verdict(False, text, checks, *extra)


def _improvement_check(evidence: Evidence, margin: float) -> Check:
    subject = (
        f"{evidence.estimator} estimate" if evidence.improvement is None
        else f"current policy's value plus the paired {evidence.estimator} estimate of the gain"
    )
    return _check(
        "improvement",
        evidence.lower_bound,
        evidence.behaviour_value + margin,
        ">",
        f"the {evidence.confidence:.0%} lower bound ({evidence.bound_method}) of the {subject} "
        f"must exceed the current policy's value {evidence.behaviour_value:.4g} plus the margin "
        f"{margin:.4g}",
    )


def _reliability_checks(
    diagnostics: Diagnostics, cfg: ApprovalConfig, behaviour_value: float
) -> list[Check]:
    d = diagnostics
    spread_allowed = max(
        cfg.max_family_spread_se * d.spread_se(),
        cfg.max_family_spread_relative * abs(behaviour_value),
    )
    return [
        _check("effective_sample_size", d.ess, cfg.min_ess, ">=",
               "enough logged episodes must resemble what the candidate would do"),
        _check("effective_sample_share", d.ess_fraction, cfg.min_ess_fraction, ">=",
               "the effective sample must be a large enough share of the episodes"),
        _check("largest_weight_share", d.max_weight_share, cfg.max_weight_share, "<=",
               "no single episode may carry too much of the estimate"),
        _check("unsupported_actions", d.unsupported_share, cfg.max_unsupported_share, "<=",
               "the candidate must rarely choose actions the current policy almost never took"),
        _check("clipping_effect", d.clipping_effect_se, cfg.max_clipping_effect_se, "<=",
               "clipping the weights must not move the estimate by more than this many "
               "standard errors"),
        _check("estimator_agreement", d.family_spread, spread_allowed, "<=",
               "the importance-sampling, doubly-robust, marginal and model-based estimates "
               "must agree (within this many standard errors of their difference, or the "
               "relative allowance)"),
        _check("propensity_calibration", d.calibration_error, cfg.max_calibration_error, "<=",
               "estimated logging probabilities must be well calibrated"),
    ]


def _approved_text(e: Evidence, margin: float) -> str:
    if e.improvement is None:
        return (
            f"Approved: with {e.confidence:.0%} confidence the candidate is worth at least "
            f"{e.lower_bound:.4g} per episode, above the current policy's "
            f"{e.behaviour_value:.4g} plus the required margin {margin:.4g}, and every "
            "reliability check passed."
        )
    return (
        f"Approved: with {e.confidence:.0%} confidence the candidate earns at least "
        f"{e.lower_bound - e.behaviour_value:.4g} per episode more than the current policy "
        f"(estimated gain {e.improvement:.4g}, measured on the same held-out episodes), "
        f"above the required margin {margin:.4g}, and every reliability check passed."
    )


def _rejected_text(e: Evidence, margin: float, failed: list[Check]) -> str:
    first = failed[0]
    if first.name != "improvement":
        names = ", ".join(c.name for c in failed)
        return (
            f"Rejected: the estimate cannot be trusted ({names} failed): {first.explanation}; "
            f"measured {first.value:.4g}, allowed {first.comparison} {first.threshold:.4g}."
        )
    if e.improvement is None:
        text = (
            f"Rejected: the candidate is not shown to beat the current policy. Its value is at "
            f"least {e.lower_bound:.4g} per episode with {e.confidence:.0%} confidence, which "
            f"does not exceed the current policy's {e.behaviour_value:.4g} plus the margin "
            f"{margin:.4g}."
        )
    else:
        text = (
            f"Rejected: the candidate is not shown to beat the current policy. Its estimated "
            f"gain is {e.improvement:.4g} per episode, but with {e.confidence:.0%} confidence "
            f"only {e.lower_bound - e.behaviour_value:.4g}, which does not exceed the margin "
            f"{margin:.4g}."
        )
    if e.power is not None:
        text += " " + e.power.sentence(margin)
    others = [c.name for c in failed[1:]]
    if others:
        text += f" Reliability checks also failed: {', '.join(others)}."
    return text
