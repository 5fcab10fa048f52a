"""Select, then test once: High Confidence Policy Improvement's candidate selection.

Thomas, Theocharous & Ghavamzadeh (ICML 2015, "High confidence policy improvement") split the
logs in two: the *selection* part chooses one candidate, the *test* part (the held-out
episodes) tests only that one, once, so the test's error rate ``delta`` is not spent on many
candidates and nothing chosen looks at the test episodes. The selection predicts, for each
member of a family, the lower bound it would get on a test set of ``n_test`` episodes:

    predicted LB = Delta_sel - k * t_{1-delta, n_test-1} * sd_sel / sqrt(n_test)

with ``Delta_sel`` the paired improvement estimate on the selection episodes
(``evaluation.improvement``), ``sd_sel`` the per-episode standard deviation of the paired
differences there (the jackknife's; for ``mdr`` with the state ratios held fixed, which is
cheaper than the gate's refit bootstrap and slightly narrower), and ``k = 2`` as in the paper
(the doubled width guards against picking a member whose selection estimate is lucky).
Members whose diagnostics would fail the gate on ``n_test`` episodes (effective sample size and
the largest weight's share scaled from the selection episodes; the unsupported share as
measured) are not eligible. As in HCPI, the pick is
the eligible member with the highest *estimated gain* among those predicted to pass (predicted
bound above the margin); when none is, the one closest to passing (the highest predicted
bound). Either way only the pick is tested, once, on the held-out episodes: the test alone
controls false approvals, so the selection never vetoes; when no member was predicted to pass,
the verdict of a rejection says so (HCPI's "no solution found" is that test failing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as st

from evaluation.candidates import Candidate
from evaluation.config import ApprovalConfig, EvaluateConfig
from evaluation.data import EpisodeData
from evaluation.diagnostics import candidate_diagnostics
from evaluation.errors import EvaluationError
from evaluation.estimators import ESTIMATORS
from evaluation.estimators.base import OPEInput
from evaluation.evaluate import make_estimator, marginal_overlap, model_predictions
from evaluation.improvement import paired_difference
from evaluation.intervals import summarise


@dataclass(frozen=True)
class MemberScore:
    """One family member on the selection episodes."""

    label: str
    estimate: float
    """Paired improvement estimate on the selection episodes."""
    sd: float
    """Per-episode standard deviation of the paired differences."""
    predicted_lower_bound: float
    predicted_ess: float
    predicted_max_weight_share: float
    unsupported_share: float
    eligible: bool
    reason: str = ""


@dataclass(frozen=True)
class SelectionResult:
    """The family, each member's score, and the pick."""

    members: list[MemberScore]
    pick: int | None
    margin: float
    n_selection: int
    n_test: int
    inflation: float
    estimator: str
    notes: list[str] = field(default_factory=list)

    @property
    def picked(self) -> MemberScore | None:
        return None if self.pick is None else self.members[self.pick]

    @property
    def certifiable(self) -> bool:
        """Whether the pick's predicted lower bound clears the margin."""
        best = self.picked
        return best is not None and best.eligible and best.predicted_lower_bound > self.margin

    def note(self) -> str | None:
        """What a rejection should add when no member was predicted to pass (else None)."""
        if self.certifiable:
            return None
        best = self.picked
        if best is None:
            return (
                "No member of the candidate family passes the diagnostics predicted for the "
                "held-out size; the member closest to passing was tested."
            )
        return (
            "No member of the candidate family was predicted, on the selection episodes, to "
            f"clear the margin {self.margin:.4g} (best predicted lower bound of the gain "
            f"{best.predicted_lower_bound:.4g}, {best.label}); that closest member was tested."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": [asdict(m) for m in self.members],
            "pick": None if self.picked is None else self.picked.label,
            "certifiable": self.certifiable,
            "margin": self.margin,
            "n_selection": self.n_selection,
            "n_test": self.n_test,
            "inflation": self.inflation,
            "estimator": self.estimator,
            "notes": self.notes,
        }


def _number(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) else default


def _paired_moments(
    data: EpisodeData, inp: OPEInput, estimator: str, cfg: EvaluateConfig
) -> tuple[float, float]:
    stats = make_estimator(estimator, cfg).episode_statistics(inp)
    diff = summarise([paired_difference(stats, data.returns)], n_resamples=0)[0]
    return diff.estimate, diff.se * math.sqrt(data.n_episodes)


def _score(
    data: EpisodeData,
    member: Candidate,
    n_test: int,
    cfg: EvaluateConfig,
    appr: ApprovalConfig,
    inflation: float,
) -> MemberScore:
    probs = member.probabilities(data, cfg.kernel)
    estimator = cfg.primary_estimator
    q_logged = v_hat = None
    if ESTIMATORS[estimator].needs_model:
        model = model_predictions(data, probs, member, cfg)
        if model is None:
            raise EvaluationError(f"{member.name}: {estimator} needs the full distribution")
        q_logged, v_hat = model
    inp = OPEInput(data, probs.logged, probs.distribution, q_logged=q_logged, v_hat=v_hat)
    estimate, sd = _paired_moments(data, inp, estimator, cfg)
    t = float(st.t.ppf(1.0 - cfg.lower_bound_delta, max(n_test - 1, 1)))
    predicted = estimate - inflation * t * sd / math.sqrt(max(n_test, 1))
    diag = candidate_diagnostics(
        inp, target_action=None, support_threshold=cfg.support_threshold,
        support_fraction=cfg.support_fraction,
    )
    if estimator in ("mis", "mdr"):
        diag.update(marginal_overlap(inp, estimator, cfg))
    ess = _number(diag["ess_fraction"]) * n_test
    share = _number(diag["max_weight_share"], 1.0) * data.n_episodes / max(n_test, 1)
    unsupported = _number(diag["unsupported_share"])
    problems = [
        name
        for name, bad in (
            ("effective sample size", ess < appr.min_ess),
            ("largest weight share", share > appr.max_weight_share),
            ("unsupported actions", unsupported > appr.max_unsupported_share),
        )
        if bad
    ]
    return MemberScore(
        label=member.name,
        estimate=estimate,
        sd=sd,
        predicted_lower_bound=predicted,
        predicted_ess=ess,
        predicted_max_weight_share=share,
        unsupported_share=unsupported,
        eligible=not problems,
        reason=", ".join(problems),
    )


def _pick(scores: list[MemberScore], margin: float) -> int | None:
    """HCPI: the largest estimate among members predicted to pass, else the closest to passing."""
    eligible = [i for i, s in enumerate(scores) if s.eligible]
    passing = [i for i in eligible if scores[i].predicted_lower_bound > margin]
    if passing:
        return max(passing, key=lambda i: scores[i].estimate)
    if eligible:
        return max(eligible, key=lambda i: scores[i].predicted_lower_bound)
    return None


def select_candidate(
    data: EpisodeData,
    members: Sequence[Candidate],
    n_test: int,
    config: EvaluateConfig | None = None,
    approval: ApprovalConfig | None = None,
    *,
    inflation: float = 2.0,
    behaviour_value: float | None = None,
) -> SelectionResult:
    """Score every member on the selection episodes ``data`` and pick one (module docstring).

    ``n_test`` is the number of held-out episodes the gate will test the pick on;
    ``behaviour_value`` sets a relative margin (default: the selection episodes' mean return).
    """
    cfg = config or EvaluateConfig()
    appr = approval or ApprovalConfig()
    if not members:
        raise EvaluationError("the candidate family is empty")
    if data.propensities_known is False:
        raise EvaluationError("selection needs the behaviour propensities of every decision")
    base = float(np.mean(data.returns)) if behaviour_value is None else behaviour_value
    margin = appr.margin(base)
    scores = [_score(data, m, n_test, cfg, appr, inflation) for m in members]
    pick = _pick(scores, margin)
    eligible = any(s.eligible for s in scores)
    notes = [] if eligible else ["no member passes the diagnostics predicted for the test size"]
    return SelectionResult(
        members=scores,
        pick=pick,
        margin=margin,
        n_selection=data.n_episodes,
        n_test=n_test,
        inflation=inflation,
        estimator=cfg.primary_estimator,
        notes=notes,
    )
