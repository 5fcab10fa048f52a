"""Hand-built report inputs for the report tests (every number chosen, nothing estimated)."""

from __future__ import annotations

from evaluation.report.model import (
    BehaviourModelCheck,
    CandidateSummary,
    Check,
    DataSummary,
    DriftSummary,
    EstimateRow,
    FeatureDriftRow,
    PolicyValue,
    ReportInputs,
    ReportVerdict,
    TrainingCurves,
    WeightSummary,
)

EVIL = "<script>alert(1)</script>"


def checks(*, ess: float = 250.0, support: float = 0.01) -> list[Check]:
    """Two diagnostics: ESS (at least 100) and unsupported share (at most 0.05)."""
    return [
        Check(
            "effective sample size",
            ess >= 100,
            ess,
            100.0,
            "min",
            "few episodes carry the estimate",
        ),
        Check(
            "unsupported share",
            support <= 0.05,
            support,
            0.05,
            "max",
            "the candidate picks actions the logs rarely show",
        ),
    ]


def make_inputs(
    *,
    lower_bound: float = 3.1,
    baseline_value: float = 3.4,
    margin: float = 0.1,
    approved: bool | None = None,
    ess: float = 250.0,
    support: float = 0.01,
    feature: str = "recency_days",
    reason: str = "null_user_id",
    candidate_name: str = "cql-2026-11-28",
    with_extras: bool = True,
) -> ReportInputs:
    """A one-candidate report; ``approved`` defaults to what the rule says."""
    check_list = checks(ess=ess, support=support)
    rule_ok = lower_bound - baseline_value >= margin and all(c.passed for c in check_list)
    decided = rule_ok if approved is None else approved
    estimates = [
        EstimateRow(
            "dr",
            "doubly robust (DR)",
            "doubly robust",
            lower_bound + 0.5,
            lower_bound + 0.05,
            lower_bound + 0.95,
            0.25,
            "bca",
        ),
        EstimateRow(
            "wis",
            "weighted IS (WIS)",
            "importance sampling",
            lower_bound + 0.4,
            lower_bound - 0.1,
            lower_bound + 0.9,
            0.3,
            "bca",
        ),
        EstimateRow("dm", "direct method (DM)", "direct", lower_bound + 0.6, None, None, None),
    ]
    candidate = CandidateSummary(
        name=candidate_name,
        kind="artifact",
        estimates=estimates,
        primary_estimator="dr",
        lower_bound=lower_bound,
        lower_bound_method="t (one-sided 95 %)",
        checks=check_list,
        approved=decided,
        weights=WeightSummary(
            quantiles={"50%": 0.8, "90%": 2.5, "99%": 9.0},
            max=31.0,
            mean=1.0,
            histogram_edges=[0.0, 1.0, 2.0, 4.0, 8.0, 32.0],
            histogram_counts=[600, 250, 100, 40, 10],
        ),
    )
    verdict = ReportVerdict(
        approved=decided,
        candidate=candidate.name,
        lower_bound=lower_bound,
        lower_bound_level=0.95,
        baseline="the current policy",
        baseline_value=baseline_value,
        margin=margin,
        checks=check_list,
    )
    behaviour = PolicyValue(
        "logging policy", baseline_value, baseline_value - 0.2, baseline_value + 0.2, 1000
    )
    if not with_extras:
        return ReportInputs(
            "Policy approval", "2026-11-28T18:00:00Z", verdict, behaviour, [candidate]
        )
    data = DataSummary(
        date_range=("2026-11-01", "2026-11-28"),
        scenario="promotion",
        gamma=0.9,
        rows_in=12_000,
        rows_used=11_500,
        quarantined={reason: 300, "negative_quantity": 50},
        dropped={"duplicate_event_id": 150},
        feature_names=[feature, "frequency"],
        n_episodes=1000,
        n_decisions=4200,
        episode_length={"mean": 4.2, "median": 4.0, "max": 10.0},
        reward={"mean": 1.3, "std": 4.1, "min": -12.0, "max": 80.0},
        episode_return={"mean": 3.4, "std": 6.0},
        propensity_source={"logged": 4200},
        reward_histogram=([-12.0, 0.0, 20.0, 80.0], [100, 4000, 100]),
    )
    drift = DriftSummary(
        reference_label="2026-11-01 to 2026-11-27",
        current_label="2026-11-28",
        n_reference=4000,
        n_current=200,
        psi_threshold=0.2,
        rows=[
            FeatureDriftRow(feature, 0.35, 0.21, 1e-6, 0.0, 0.4, True),
            FeatureDriftRow("frequency", 0.02, 0.03, 0.8, 0.0, 0.01, False),
        ],
    )
    training = TrainingCurves(
        "DiscreteCQL",
        {"loss": [(0, 5.0), (100, 2.0), (200, 1.5)], "td_loss": [(0, 3.0), (200, 1.0)]},
    )
    behaviour_model = BehaviourModelCheck(
        n=4200,
        calibration_error=0.012,
        threshold=0.05,
        passed=True,
        mean_abs_error=0.02,
        bins=[(0.1, 0.12, 500), (0.4, 0.38, 2000), (0.8, 0.79, 1700)],
    )
    return ReportInputs(
        title="Policy approval",
        generated_at="2026-11-28T18:00:00Z",
        verdict=verdict,
        behaviour=behaviour,
        candidates=[candidate],
        data=data,
        drift=drift,
        training=training,
        behaviour_model=behaviour_model,
        sources={"ope.json": "/runs/x/ope.json"},
        notes=["Weights are computed from logged propensities."],
    )
