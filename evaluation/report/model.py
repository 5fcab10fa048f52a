"""What the approval report shows: a small typed model, independent of how it was computed.

The renderer (:func:`evaluation.report.render_report`) only reads these dataclasses, so a report
can be built by hand (tests, notebooks) or from a run's files with
:func:`evaluation.report.report_inputs_from_run` (``ope.json``, the ETL's ``_manifest.json``, an
optional training artifact and transition data).

Every number a reader sees is a plain ``float``/``int`` here; ``None`` means "not available" and
is shown as such rather than hidden.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["min", "max"]


def fmt_number(value: float | int | None, digits: int = 4) -> str:
    """Format a number the same way in the HTML, the Markdown and the verdict sentence.

    ``None`` and non-finite values become ``"n/a"``; integers keep all digits (with thousands
    separators); floats get ``digits`` significant digits (``3.14159 -> "3.142"``).
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return "n/a"
    if value.is_integer() and 1000 <= abs(value) < 1e15:
        return f"{int(value):,}"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    text = f"{value:.{digits}g}"
    return "0" if text == "-0" else text


@dataclass(frozen=True)
class EstimateRow:
    """One estimator's estimate of one policy's value, with its confidence interval."""

    estimator: str
    """Short id, e.g. ``"dr"``."""
    label: str
    """What a reader sees, e.g. ``"doubly robust (DR)"``."""
    family: str
    """Estimator family: ``direct``, ``importance sampling``, ``doubly robust`` or ``on-policy``."""
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    std_error: float | None = None
    ci_method: str | None = None
    """How the interval was computed (``bca``, ``percentile``, ``normal``, ...)."""


@dataclass(frozen=True)
class Check:
    """One approval diagnostic: a measured value against its documented threshold."""

    name: str
    """Plain name, e.g. ``"effective sample size"``."""
    passed: bool
    value: float | None
    threshold: float | None
    direction: Direction
    """``"min"``: the value must be at least the threshold; ``"max"``: at most."""
    meaning: str = ""
    """One sentence: what a failure means for trusting the estimate."""

    @property
    def rule(self) -> str:
        """The threshold in words: ``"at least 100"`` or ``"at most 0.05"``."""
        word = "at least" if self.direction == "min" else "at most"
        return f"{word} {fmt_number(self.threshold)}"

    @property
    def applicable(self) -> bool:
        """False when the check could not be measured here (e.g. no estimated propensities)."""
        return self.value is not None

    @property
    def status(self) -> str:
        """``"pass"``, ``"FAIL"`` or ``"n/a"`` (not applicable: counts as passed)."""
        if not self.passed:
            return "FAIL"
        return "pass" if self.applicable else "n/a"

    @property
    def short(self) -> str:
        """The check and its numbers in words: ``"effective sample size 35, below the minimum
        100"`` (no ``<``/``>``, so it reads the same in HTML, Markdown and a terminal)."""
        if self.value is None or self.threshold is None:
            return self.name
        value, threshold = fmt_number(self.value), fmt_number(self.threshold)
        if self.direction == "min":
            where = "at least the minimum" if self.passed else "below the minimum"
        else:
            where = "within the maximum" if self.passed else "above the maximum"
        return f"{self.name} {value}, {where} {threshold}"


@dataclass(frozen=True)
class WeightSummary:
    """The distribution of a candidate's trajectory importance weights."""

    quantiles: dict[str, float]
    """Quantile label (``"50%"``) to weight."""
    max: float
    mean: float | None = None
    histogram_edges: list[float] | None = None
    """Bin edges of the weight histogram (len = counts + 1), in weight units."""
    histogram_counts: list[int] | None = None
    clipped_share: float | None = None
    """Share of decisions whose ratio was clipped, when clipping was on."""
    zero_share: float | None = None
    """Share of episodes with weight 0 (the candidate would never have acted as logged)."""


@dataclass(frozen=True)
class PolicyValue:
    """A policy value with its interval (the behaviour policy's own value from the logs)."""

    name: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n_episodes: int | None = None


@dataclass(frozen=True)
class ImprovementRow:
    """The paired estimate of the candidate's gain over the current policy."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    lower_bound: float | None
    level_lower_bound: float | None
    """The gain's bound had the candidate's value been compared unpaired (for contrast)."""
    estimator: str = ""


@dataclass(frozen=True)
class SelectionMember:
    """One member of the candidate family, as the selection episodes scored it."""

    label: str
    estimate: float | None
    predicted_lower_bound: float | None
    eligible: bool
    reason: str = ""


@dataclass(frozen=True)
class SelectionSummary:
    """How the candidate was chosen (HCPI): the family, the pick, predicted against realised."""

    members: list[SelectionMember]
    pick: str | None
    certifiable: bool
    margin: float | None
    n_selection: int | None
    n_test: int | None
    predicted_lower_bound: float | None
    realised_lower_bound: float | None


@dataclass(frozen=True)
class CandidateSummary:
    """Everything the report says about one candidate policy."""

    name: str
    kind: str
    """How the candidate was given: ``artifact``, ``rule``, ``table``, ..."""
    estimates: list[EstimateRow]
    primary_estimator: str
    """The estimator whose lower bound the approval rule uses."""
    lower_bound: float | None
    """High-confidence lower bound of the primary estimator's value."""
    lower_bound_method: str
    checks: list[Check]
    approved: bool
    weights: WeightSummary | None = None
    notes: list[str] = field(default_factory=list)
    improvement: ImprovementRow | None = None

    @property
    def primary(self) -> EstimateRow | None:
        """The primary estimator's row, if it was computed."""
        for row in self.estimates:
            if row.estimator == self.primary_estimator:
                return row
        return None

    @property
    def failed_checks(self) -> list[Check]:
        """The diagnostics that failed."""
        return [c for c in self.checks if not c.passed]


@dataclass(frozen=True)
class ReportVerdict:
    """The approval decision for the candidate the report is about, with the numbers behind it.

    The rule (see ``evaluation/README.md``): approve only when the lower bound of the candidate's
    value exceeds the baseline's value by at least the margin AND every diagnostic passes.
    ``approved`` is the decision the evaluation took; :attr:`sentence` explains it in words.
    """

    approved: bool
    candidate: str
    lower_bound: float | None
    lower_bound_level: float
    """Confidence of the one-sided lower bound, e.g. 0.95."""
    baseline: str
    """Who the candidate must beat, in words (``"the current policy"``)."""
    baseline_value: float
    margin: float
    checks: list[Check] = field(default_factory=list)
    margin_detail: str = ""
    """How the margin was set, e.g. ``"the larger of 0.1 and 2 % of the current value"``."""
    improvement: float | None = None
    """The paired estimate of the gain, when the gate tested the improvement."""
    power: str | None = None
    """When the evidence is too thin: the smallest certifiable gain and the data still needed."""

    @property
    def decision(self) -> str:
        """``"APPROVE"`` or ``"REJECT"``."""
        return "APPROVE" if self.approved else "REJECT"

    @property
    def failed_checks(self) -> list[Check]:
        """The diagnostics that failed."""
        return [c for c in self.checks if not c.passed]

    @property
    def required_value(self) -> float:
        """The value the lower bound must exceed: the baseline's value plus the margin."""
        return self.baseline_value + self.margin

    @property
    def beats_margin(self) -> bool:
        """Whether the lower bound exceeds the baseline value plus the margin (strictly)."""
        if self.lower_bound is None or not math.isfinite(self.lower_bound):
            return False
        return self.lower_bound > self.required_value

    @property
    def value_clause(self) -> str:
        """The value rule with the numbers, e.g. "the lower 95 % bound ... (3.1) does not ..."."""
        level = fmt_number(round(100 * self.lower_bound_level, 2))
        if self.improvement is not None and self.lower_bound is not None:
            verb = "clears" if self.beats_margin else "does not clear"
            return (
                f"the lower {level} % bound of the candidate's gain over {self.baseline}, "
                "measured paired on the same held-out episodes "
                f"({fmt_number(self.lower_bound - self.baseline_value)}; estimated gain "
                f"{fmt_number(self.improvement)}) {verb} the required margin "
                f"({fmt_number(self.margin)})"
            )
        verb = "beats" if self.beats_margin else "does not beat"
        text = (
            f"the lower {level} % bound of the candidate's value "
            f"({fmt_number(self.lower_bound)}) {verb} {self.baseline}'s value "
            f"({fmt_number(self.baseline_value)})"
        )
        if self.margin > 0:
            text += f" by the required margin ({fmt_number(self.margin)})"
        return text

    @property
    def sentence(self) -> str:
        """The decision and the rule that decided it, in words a manager reads."""
        failed = self.failed_checks
        failed_text = "; ".join(c.short for c in failed)
        if self.approved:
            n = sum(c.applicable for c in self.checks)
            checks = f"all {n} diagnostic checks pass" if n else "no diagnostic checks were run"
            return f"Approved: {self.value_clause}, and {checks}."
        if not self.beats_margin:
            text = f"Rejected: {self.value_clause}."
            if failed:
                text += f" Failed checks: {failed_text}."
            if self.power:
                text += f" {self.power}"
            return text
        if failed:
            return (
                f"Rejected: {self.value_clause}, but the estimate cannot be trusted because "
                f"these checks failed: {failed_text}."
            )
        return (
            f"Rejected by the evaluation although {self.value_clause} and no check failed "
            "(see the evaluation's own reasons below)."
        )


@dataclass(frozen=True)
class DataSummary:
    """The logged data behind the evaluation: where it came from and what was dropped."""

    date_range: tuple[str, str] | None = None
    scenario: str | None = None
    action_space: str | None = None
    """The decisions' action space in words, e.g. ``discrete: 4 actions (none, pct_5, ...)``."""
    gamma: float | None = None
    rows_in: int | None = None
    rows_used: int | None = None
    quarantined: dict[str, int] = field(default_factory=dict)
    """Reason to number of rows moved to quarantine."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Reason to number of rows dropped (duplicates, bots, ...)."""
    excluded_decisions: dict[str, int] = field(default_factory=dict)
    """Reason to number of decisions that make no transition (e.g. bot sessions)."""
    rows_by_table: dict[str, dict[str, int]] = field(default_factory=dict)
    """Input table to ``{"rows in", "used", "quarantined", "dropped"}`` (reconciles exactly)."""
    feature_names: list[str] = field(default_factory=list)
    n_episodes: int | None = None
    n_decisions: int | None = None
    episode_length: dict[str, float] = field(default_factory=dict)
    """Summary of decisions per episode (mean, median, max, ...)."""
    reward: dict[str, float] = field(default_factory=dict)
    """Summary of the per-decision reward (mean, std, min, median, max, share non-zero)."""
    episode_return: dict[str, float] = field(default_factory=dict)
    """Summary of the discounted return per episode."""
    propensity_source: dict[str, int] = field(default_factory=dict)
    """How the behaviour propensities are known: ``logged``/``estimated``/``missing`` counts."""
    reward_histogram: tuple[list[float], list[int]] | None = None
    """(edges, counts) of the per-decision reward, for a small plot."""

    @property
    def rows_quarantined(self) -> int:
        """Total rows quarantined."""
        return sum(self.quarantined.values())

    @property
    def rows_dropped(self) -> int:
        """Total rows dropped with a reason."""
        return sum(self.dropped.values())


@dataclass(frozen=True)
class FeatureDriftRow:
    """Drift of one state feature between the training window and the current window."""

    feature: str
    psi: float
    ks_statistic: float
    ks_pvalue: float
    reference_mean: float
    current_mean: float
    flagged: bool


@dataclass(frozen=True)
class DriftSummary:
    """Per-feature drift of the current window's states against the training window."""

    reference_label: str
    current_label: str
    n_reference: int
    n_current: int
    psi_threshold: float
    rows: list[FeatureDriftRow]
    skipped: list[str] = field(default_factory=list)
    """Features not compared (day of week: constant within one day)."""

    @property
    def flagged(self) -> list[FeatureDriftRow]:
        """Features whose drift exceeds the threshold."""
        return [r for r in self.rows if r.flagged]


@dataclass(frozen=True)
class TrainingCurves:
    """Loss curves of the trained candidate, from its artifact's metrics."""

    algorithm: str | None
    series: dict[str, list[tuple[float, float]]]
    """Metric name to (step, value) points."""
    facts: dict[str, float] = field(default_factory=dict)
    """Training facts (transitions and episodes used, ...)."""
    validation: dict[str, float] = field(default_factory=dict)
    """Validation metrics on the held-out episodes (action match, TD error, initial value)."""
    behaviour_check: dict[str, float] = field(default_factory=dict)
    """The training run's behaviour model beside the logged propensities (held out)."""


@dataclass(frozen=True)
class BehaviourModelCheck:
    """How well the behaviour-policy model reproduces the logged propensities."""

    n: int | None
    calibration_error: float | None
    """Expected calibration error (mean |logged - estimated|, binned)."""
    threshold: float | None
    passed: bool | None
    mean_abs_error: float | None = None
    bins: list[tuple[float, float, int]] = field(default_factory=list)
    """(mean estimated propensity, mean logged propensity or observed frequency, count)."""
    propensities_estimated: bool = False
    """True when the importance weights use estimated (not logged) propensities."""
    note: str = ""


@dataclass(frozen=True)
class ReportInputs:
    """Everything one approval report shows."""

    title: str
    generated_at: str
    verdict: ReportVerdict
    behaviour: PolicyValue
    candidates: list[CandidateSummary]
    data: DataSummary | None = None
    drift: DriftSummary | None = None
    training: TrainingCurves | None = None
    behaviour_model: BehaviourModelCheck | None = None
    sources: dict[str, str] = field(default_factory=dict)
    """Input name to path, shown at the bottom of the report."""
    notes: list[str] = field(default_factory=list)
    """Plain-language caveats (estimated propensities, clipping, missing inputs)."""
    selection: SelectionSummary | None = None
    holdout: str | None = None
    """How the evaluated episodes were held out, in words."""


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def inputs_to_dict(inputs: ReportInputs) -> dict[str, Any]:
    """The report's facts as JSON-ready data (non-finite floats become ``null``).

    The verdict carries its decision and sentence, each check its rule, so that ``report.json``
    says exactly what the HTML says.
    """
    data: dict[str, Any] = dataclasses.asdict(inputs)
    verdict = inputs.verdict
    data["verdict"].update(
        decision=verdict.decision,
        sentence=verdict.sentence,
        beats_margin=verdict.beats_margin,
        failed_checks=[c.name for c in verdict.failed_checks],
    )
    for cand_dict, cand in zip(data["candidates"], inputs.candidates, strict=True):
        cand_dict["failed_checks"] = [c.name for c in cand.failed_checks]
        for check_dict, check in zip(cand_dict["checks"], cand.checks, strict=True):
            check_dict["rule"] = check.rule
    for check_dict, check in zip(data["verdict"]["checks"], verdict.checks, strict=True):
        check_dict["rule"] = check.rule
    return dict(_clean(data))
