"""Evaluate candidate policies on logged data: estimates, intervals, diagnostics, verdicts.

:func:`evaluate_candidates` is what ``ecomrl evaluate``, the report and the nightly job call. It
returns an :class:`EvaluationResult` (dataclasses) whose :meth:`~EvaluationResult.to_frame` is a
tidy polars frame (one row per candidate and estimator) and :meth:`~EvaluationResult.write`
writes ``ope.json`` and ``ope.parquet``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import structlog
from scipy import stats as st
from tqdm.auto import tqdm

from evaluation.approval import Diagnostics, Verdict, approve
from evaluation.artifact_check import check_artifact_data
from evaluation.candidates import Candidate, CandidateProbabilities, parse_policy_spec
from evaluation.config import ApprovalConfig, EvaluateConfig
from evaluation.data import EpisodeData, TransitionsDataset, load_transitions
from evaluation.diagnostics import (
    candidate_diagnostics,
    decision_weight_diagnostics,
    family_spread,
    logging_policy_match,
)
from evaluation.errors import EvaluationError
from evaluation.estimators import ESTIMATORS
from evaluation.estimators.base import EpisodeStatistics, OffPolicyEstimator, OPEInput
from evaluation.estimators.direct import (
    DirectMethod,
    FittedQEvaluation,
    QPredictions,
    d3rlpy_fqe,
)
from evaluation.estimators.marginal import (
    MarginalizedDR,
    MarginalizedIS,
    marginal_bootstrap,
    state_ratios,
)
from evaluation.estimators.on_policy import OnPolicyValue
from evaluation.fit_bootstrap import fit_bootstrap_dm
from evaluation.improvement import PowerAnalysis, paired_difference, power_analysis
from evaluation.intervals import IntervalSummary, ResampleCounts, summarise
from evaluation.propensity import CalibrationReport, fill_missing_propensities

log = structlog.get_logger(__name__)

_BANDIT = {"ipw", "snipw", "dr_bandit", "sndr", "dm_bandit"}
_KERNEL = {"kernel_is", "kernel_wis", "kernel_dr"}
_CONTINUOUS_NAME = {
    "pdis": "kernel_is", "wpdis": "kernel_wis", "dr": "kernel_dr", "mdr": "kernel_dr",
    "mis": "kernel_is",
}
_MARGINAL = {"mis", "mdr"}


@dataclass(frozen=True)
class EstimatorResult:
    """One estimator's answer for one policy."""

    estimator: str
    family: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    ci_method: str
    percentile_low: float
    percentile_high: float
    bca_low: float
    bca_high: float
    lower_bound_t: float
    lower_bound_bernstein: float | None
    unbiased: bool
    n_resamples: int

    @classmethod
    def from_summary(
        cls, est: OffPolicyEstimator, s: IntervalSummary, ci_method: str
    ) -> EstimatorResult:
        return cls(
            estimator=est.name,
            family=est.family,
            estimate=s.estimate,
            se=s.se,
            ci_low=s.ci_low,
            ci_high=s.ci_high,
            ci_method=ci_method,
            percentile_low=s.percentile_low,
            percentile_high=s.percentile_high,
            bca_low=s.bca_low,
            bca_high=s.bca_high,
            lower_bound_t=s.lower_bound_t,
            lower_bound_bernstein=s.lower_bound_bernstein,
            unbiased=est.unbiased,
            n_resamples=s.n_resamples,
        )


@dataclass(frozen=True)
class ImprovementResult:
    """The paired estimate of ``V(candidate) - V(behaviour)`` on the same episodes.

    ``lower_bound`` is the one-sided bound the gate compares with ``margin``;
    ``level_lower_bound`` is what the unpaired comparison would have used (the candidate's own
    lower bound minus the behaviour's value), kept to show how much the pairing tightens it.
    """

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    lower_bound: float
    lower_bound_method: str
    level_lower_bound: float
    margin: float
    power: PowerAnalysis

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CandidateResult:
    """Every estimate of one candidate, its diagnostics and the approval verdict."""

    name: str
    estimates: list[EstimatorResult]
    diagnostics: dict[str, Any]
    verdict: Verdict
    primary_estimator: str
    lower_bound: float
    lower_bound_method: str
    clipped: bool
    skipped: dict[str, str] = field(default_factory=dict)
    improvement: ImprovementResult | None = None
    """The primary estimator's paired improvement (what the gate tested)."""
    improvements: dict[str, ImprovementResult] = field(default_factory=dict)
    """Every estimator's paired improvement (for comparison; the gate uses the primary's)."""
    notes: list[str] = field(default_factory=list)
    """Plain-language remarks: the logging policy recognised, the reward model's fit."""

    def estimate(self, estimator: str) -> EstimatorResult:
        for e in self.estimates:
            if e.estimator == estimator:
                return e
        raise KeyError(estimator)

    @property
    def primary(self) -> EstimatorResult:
        return self.estimate(self.primary_estimator)


@dataclass(frozen=True)
class EvaluationResult:
    """The whole evaluation: the behaviour policy's value and every candidate's result."""

    behaviour: EstimatorResult
    candidates: list[CandidateResult]
    n_episodes: int
    n_decisions: int
    gamma: float
    action_space: str
    propensity: dict[str, Any]
    config: dict[str, Any]
    approval_config: dict[str, Any]
    data_path: str | None = None
    selection: dict[str, Any] | None = None
    """The candidate selection behind the candidate (the nightly job's family), if any."""
    holdout: str | None = None
    """How the evaluated episodes were held out, in words (the nightly job)."""

    def candidate(self, name: str) -> CandidateResult:
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (what ``ope.json`` holds)."""
        primary = next((c.name for c in self.candidates if c.name != "rule:behaviour"), None)
        calibration = self.propensity.get("calibration") or {}
        return _clean(
            {
                "data": self.data_path,
                "primary_candidate": primary,
                "primary_estimator": self.config.get("primary_estimator"),
                "confidence": self.config.get("confidence"),
                "lower_bound_delta": self.config.get("lower_bound_delta"),
                "approval": self.approval_config,
                "behaviour_model": {
                    "propensities_estimated": bool(self.propensity.get("estimated")),
                    "note": self.propensity.get("note"),
                    "calibration_error": calibration.get("expected_calibration_error"),
                    "threshold": self.approval_config.get("max_calibration_error"),
                    "mean_abs_error": calibration.get("mean_abs_error_vs_logged"),
                    "bins": calibration.get("reliability", []),
                    "method": calibration.get("method"),
                },
                "notes": self.notes(),
                "n_episodes": self.n_episodes,
                "n_decisions": self.n_decisions,
                "holdout": self.holdout,
                "selection": self.selection,
                "gamma": self.gamma,
                "action_space": self.action_space,
                "propensity": self.propensity,
                "behaviour": asdict(self.behaviour),
                "candidates": [
                    {
                        "name": c.name,
                        "primary_estimator": c.primary_estimator,
                        "lower_bound": c.lower_bound,
                        "lower_bound_method": c.lower_bound_method,
                        "clipped": c.clipped,
                        "verdict": c.verdict.to_dict(),
                        "diagnostics": c.diagnostics,
                        "estimates": [asdict(e) for e in c.estimates],
                        "skipped": c.skipped,
                        "improvement": None if c.improvement is None else c.improvement.to_dict(),
                        "improvements": {k: v.to_dict() for k, v in c.improvements.items()},
                        "notes": [f"{k} not computed: {v}" for k, v in c.skipped.items()] + c.notes,
                    }
                    for c in self.candidates
                ],
                "config": self.config,
                "approval_config": self.approval_config,
            }
        )

    def notes(self) -> list[str]:
        """Plain-language caveats of this evaluation (shown by the report)."""
        out = []
        if self.propensity.get("estimated"):
            out.append(str(self.propensity.get("note")))
        estimators = self.config.get("estimators", [])
        refit = bool(self.config.get("fit_bootstrap", {}).get("enabled"))
        if ("dm" in estimators and not refit) or "dm_bandit" in estimators:
            out.append(
                "The direct method's interval resamples episodes but not the model fit, so it "
                "understates its uncertainty; the approval rule uses "
                f"{self.config.get('primary_estimator')}."
            )
        if self.config.get("clipping", {}).get("max_weight") is not None:
            out.append(
                f"Importance weights were clipped at {self.config['clipping']['max_weight']}: "
                "the clipped estimates are biased; see each candidate's clipping_effect."
            )
        return out

    def to_frame(self) -> pl.DataFrame:
        """Tidy frame: one row per (policy, estimator); the behaviour's own value included."""
        rows: list[dict[str, Any]] = []
        base = asdict(self.behaviour)
        rows.append(
            {
                "policy": "behaviour (logged)",
                **base,
                "decision": None,
                "approved": None,
                "ess": None,
                "ess_fraction": None,
                "max_weight_share": None,
                "unsupported_share": None,
                "propensity_estimated": bool(self.propensity.get("estimated", False)),
            }
        )
        for c in self.candidates:
            for e in c.estimates:
                rows.append(
                    {
                        "policy": c.name,
                        **asdict(e),
                        "decision": c.verdict.decision,
                        "approved": c.verdict.approved,
                        "ess": c.diagnostics.get("ess"),
                        "ess_fraction": c.diagnostics.get("ess_fraction"),
                        "max_weight_share": c.diagnostics.get("max_weight_share"),
                        "unsupported_share": c.diagnostics.get("unsupported_share"),
                        "propensity_estimated": bool(self.propensity.get("estimated", False)),
                    }
                )
        schema = {
            "policy": pl.String,
            "estimator": pl.String,
            "family": pl.String,
            "estimate": pl.Float64,
            "se": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
            "ci_method": pl.String,
            "percentile_low": pl.Float64,
            "percentile_high": pl.Float64,
            "bca_low": pl.Float64,
            "bca_high": pl.Float64,
            "lower_bound_t": pl.Float64,
            "lower_bound_bernstein": pl.Float64,
            "unbiased": pl.Boolean,
            "n_resamples": pl.Int64,
            "decision": pl.String,
            "approved": pl.Boolean,
            "ess": pl.Float64,
            "ess_fraction": pl.Float64,
            "max_weight_share": pl.Float64,
            "unsupported_share": pl.Float64,
            "propensity_estimated": pl.Boolean,
        }
        return pl.DataFrame(rows, schema=schema)

    def write(self, out_dir: Path | str) -> tuple[Path, Path]:
        """Write ``ope.json`` and ``ope.parquet`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / "ope.json"
        json_path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        parquet_path = out / "ope.parquet"
        self.to_frame().write_parquet(parquet_path)
        return json_path, parquet_path


def _clean(obj: Any) -> Any:
    """Make floats JSON-safe (NaN/inf -> None) and numpy scalars plain."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _as_episode_data(
    data: EpisodeData | TransitionsDataset | pl.DataFrame | Path | str, gamma: float | None
) -> EpisodeData:
    if isinstance(data, EpisodeData):
        return data
    if isinstance(data, str | Path):
        data = load_transitions(data)
    if isinstance(data, TransitionsDataset):
        return data.to_episode_data(gamma)
    return EpisodeData.from_frame(data, gamma=0.9 if gamma is None else gamma)


def make_estimator(name: str, cfg: EvaluateConfig) -> OffPolicyEstimator:
    """The estimator called ``name``, with its ``[evaluate]`` settings where it has any."""
    if name in ("mis", "mdr"):
        return MarginalizedIS(cfg.marginal) if name == "mis" else MarginalizedDR(cfg.marginal)
    return ESTIMATORS[name]()


def _resolve_estimators(
    names: Sequence[str], data: EpisodeData
) -> tuple[list[str], dict[str, str]]:
    """The estimators that apply to this data, and why the others were skipped."""
    one_step = data.n_episodes == data.n_decisions
    continuous = not data.action_space.is_discrete
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        resolved = _CONTINUOUS_NAME.get(name, name) if continuous else name
        if resolved in _BANDIT and not one_step:
            skipped[name] = "one-step estimator; the episodes have several decisions"
            continue
        if resolved in _KERNEL and not continuous:
            skipped[name] = "kernel estimator; the action space is discrete"
            continue
        if resolved in ("on_policy", "fqe"):
            continue
        if resolved not in chosen:
            chosen.append(resolved)
    return chosen, skipped


def model_predictions(
    data: EpisodeData, probs: CandidateProbabilities, candidate: Candidate, cfg: EvaluateConfig
) -> tuple[np.ndarray, np.ndarray] | None:
    pred = model_fit(data, probs, candidate, cfg)
    return None if pred is None else (pred.q_logged, pred.v_hat)


def model_fit(
    data: EpisodeData,
    probs: CandidateProbabilities,
    candidate: Candidate,
    cfg: EvaluateConfig,
    *,
    fitter: FittedQEvaluation | None = None,
    as_logging_policy: bool = False,
) -> QPredictions | None:
    """The model ``q`` for one candidate (None when the candidate's distribution is unknown).

    The logging policy (``rule:behaviour``, or a candidate found identical to it) is modelled
    on the logged actions: ``v(s_t) = q(s_t, a_t)`` and SARSA backups, an unbiased sample of
    ``E_{a ~ pi_b} q(s_t, a)`` that needs no estimate of the behaviour distribution; its doubly
    robust estimates then equal the on-policy value exactly.
    """
    fitter = fitter or FittedQEvaluation(cfg.direct)
    if data.action_space.is_discrete:
        dist = probs.distribution
        if candidate.is_behaviour or as_logging_policy:
            dist = np.zeros((data.n_decisions, data.action_space.n))
            dist[np.arange(data.n_decisions), data.action] = 1.0
        if dist is None:
            return None
        return fitter.predict(data, target_distribution=dist)
    action = probs.action
    if candidate.is_behaviour:
        action = np.asarray(data.action, dtype=np.float64)
    if action is None:
        return None
    return fitter.predict(data, target_action=action)


def evaluate_candidates(
    data: EpisodeData | TransitionsDataset | pl.DataFrame | Path | str,
    candidates: Sequence[Candidate | str],
    config: EvaluateConfig | None = None,
    approval: ApprovalConfig | None = None,
    *,
    data_path: Path | str | None = None,
    episodes_per_day: float | None = None,
    selection_notes: Mapping[str, str] | None = None,
) -> EvaluationResult:
    """Evaluate each candidate off-policy against the logged behaviour policy.

    ``data`` is an ETL output folder, a transitions frame or :class:`EpisodeData`; ``candidates``
    are :class:`~evaluation.candidates.Candidate` objects or policy SPEC strings
    (``rule:constant=2``, ``rule:behaviour``, ``table:PATH``, ``artifact:PATH``).
    ``episodes_per_day``: how many such episodes the logs gain per day (the power analysis
    turns the episodes still needed into days of logs). ``selection_notes``: per candidate name,
    what the candidate selection said when no member was predicted to clear the margin.
    """
    cfg = config or EvaluateConfig()
    appr = approval or ApprovalConfig()
    if data_path is None and isinstance(data, str | Path):
        data_path = data
    if isinstance(data, str | Path):
        data = load_transitions(data)
    policies = [parse_policy_spec(c) if isinstance(c, str) else c for c in candidates]
    if not policies:
        raise EvaluationError("no candidate policy to evaluate (give at least one --policy)")
    if isinstance(data, TransitionsDataset) and data.manifest:
        _check_artifacts(policies, data.manifest)
    episodes = _as_episode_data(data, cfg.gamma)
    names, skipped = _resolve_estimators(cfg.estimators, episodes)
    # Only missing propensities are estimated: what the candidates are never changes the data
    # every candidate is evaluated on (the logging policy is modelled on its logged actions).
    episodes, calibration = fill_missing_propensities(episodes, cfg.behaviour_model)
    propensity = _propensity_summary(episodes, calibration)

    counts = ResampleCounts(
        episodes.n_episodes,
        cfg.bootstrap.n_resamples,
        seed=cfg.bootstrap.seed,
        scheme=cfg.bootstrap.scheme,
        chunk_size=cfg.bootstrap.chunk_size,
    )
    behaviour = _behaviour_value(episodes, counts, cfg)
    ctx = _Context(
        episodes, names, skipped, cfg, appr, behaviour, propensity, counts, episodes_per_day,
        dict(selection_notes or {}), FittedQEvaluation(cfg.direct),
    )
    results = [
        _evaluate_one(ctx, policy)
        for policy in tqdm(
            policies,
            desc="evaluate",
            unit="policy",
            # None: on a terminal only (never in a scheduler's or --log-json's log lines)
            disable=True if len(policies) < 2 else None,
        )
    ]
    return EvaluationResult(
        behaviour=behaviour,
        candidates=results,
        n_episodes=episodes.n_episodes,
        n_decisions=episodes.n_decisions,
        gamma=episodes.gamma,
        action_space=episodes.action_space.type,
        propensity=propensity,
        config=cfg.model_dump(mode="json"),
        approval_config=appr.model_dump(mode="json"),
        data_path=None if data_path is None else str(data_path),
    )


def _behaviour_value(
    episodes: EpisodeData, counts: ResampleCounts, cfg: EvaluateConfig
) -> EstimatorResult:
    """The logging policy's on-policy value, on the resample counts every candidate shares."""
    on_policy = OnPolicyValue()
    summary = summarise(
        [on_policy.episode_statistics(OPEInput(episodes, episodes.behaviour_propensity.copy()))],
        confidence=cfg.confidence,
        n_resamples=cfg.bootstrap.n_resamples,
        delta=cfg.lower_bound_delta,
        seed=cfg.bootstrap.seed,
        chunk_size=cfg.bootstrap.chunk_size,
        scheme=cfg.bootstrap.scheme,
        counts=counts,
    )[0]
    return EstimatorResult.from_summary(on_policy, summary, cfg.bootstrap.method)


def _check_artifacts(policies: Sequence[Candidate], manifest: Mapping[str, Any]) -> None:
    """Every artifact candidate must have been trained on this data's features and scaling."""
    for policy in policies:
        training = getattr(policy, "training_data", None)
        if isinstance(training, dict):
            check_artifact_data(policy.name, training, dict(manifest))


def _propensity_summary(data: EpisodeData, calibration: CalibrationReport | None) -> dict[str, Any]:
    src = data.propensity_source
    counts: dict[str, int] = {}
    if src is not None:
        values, n = np.unique(src, return_counts=True)
        counts = {str(v): int(c) for v, c in zip(values, n, strict=True)}
    estimated = counts.get("estimated", 0) > 0
    out: dict[str, Any] = {
        "sources": counts,
        "estimated": estimated,
        "note": (
            f"{counts.get('estimated', 0)} of {data.n_decisions} behaviour propensities were "
            "ESTIMATED by a cross-fitted behaviour model, not logged: the weights are estimates."
            if estimated
            else "all behaviour propensities were logged."
        ),
    }
    if calibration is not None:
        out["calibration"] = calibration.to_dict()
    return out


@dataclass(frozen=True)
class _Context:
    """What every candidate's evaluation shares: the data, the estimators, the baseline."""

    data: EpisodeData
    names: list[str]
    skipped: dict[str, str]
    cfg: EvaluateConfig
    appr: ApprovalConfig
    behaviour: EstimatorResult
    propensity: dict[str, Any]
    counts: ResampleCounts | None
    episodes_per_day: float | None = None
    selection_notes: Mapping[str, str] = field(default_factory=dict)
    fitter: FittedQEvaluation | None = None
    """Shared by the candidates: a one-step reward model does not depend on the candidate."""

    def summarise(self, stats: list[EpisodeStatistics]) -> list[IntervalSummary]:
        cfg = self.cfg
        return summarise(
            stats,
            confidence=cfg.confidence,
            n_resamples=cfg.bootstrap.n_resamples,
            method=cfg.bootstrap.method,
            delta=cfg.lower_bound_delta,
            seed=cfg.bootstrap.seed,
            chunk_size=cfg.bootstrap.chunk_size,
            scheme=cfg.bootstrap.scheme,
            counts=self.counts,
        )

    def lower_bound(self, s: IntervalSummary | EstimatorResult) -> tuple[float, str]:
        """The configured one-sided lower bound of a summary, and its name."""
        cfg = self.cfg
        if cfg.lower_bound == "bernstein" and s.lower_bound_bernstein is not None:
            return s.lower_bound_bernstein, "empirical Bernstein"
        if cfg.lower_bound == "bootstrap":
            if cfg.bootstrap.method == "bca":
                return s.bca_low, "bootstrap BCa"
            return s.percentile_low, "bootstrap percentile"
        return s.lower_bound_t, "t"


def _estimators_for(
    ctx: _Context, inp: OPEInput, probs: CandidateProbabilities, skipped: dict[str, str]
) -> tuple[list[OffPolicyEstimator], list[EpisodeStatistics]]:
    """The applicable estimators and their per-episode statistics (d3rlpy FQE when asked)."""
    estimators: list[OffPolicyEstimator] = []
    for name in ctx.names:
        est = make_estimator(name, ctx.cfg)
        if name in _MARGINAL and ctx.data.observation is None:
            skipped[name] = "the transitions have no observations to fit state ratios on"
            continue
        if est.needs_model and not inp.has_model:
            skipped.setdefault(
                name, "no model predictions for this candidate (needs its full distribution)"
            )
            continue
        estimators.append(est)
    stats = [e.episode_statistics(inp) for e in estimators]
    if ctx.cfg.fqe.enabled or "fqe" in ctx.cfg.estimators:
        if probs.act is None:
            skipped["fqe"] = "d3rlpy FQE needs a candidate that maps observations to actions"
        else:
            pred = d3rlpy_fqe(ctx.data, probs.act, ctx.cfg.fqe)
            fqe_inp = OPEInput(ctx.data, probs.logged, q_logged=pred.q_logged, v_hat=pred.v_hat)
            fqe_est = _FQE()
            estimators.append(fqe_est)
            stats.append(fqe_est.episode_statistics(fqe_inp))
    return estimators, stats


def _primary_name(ctx: _Context, available: Sequence[str], policy: str) -> str:
    primary: str = ctx.cfg.primary_estimator
    if not ctx.data.action_space.is_discrete:
        primary = _CONTINUOUS_NAME.get(primary, primary)
    if primary in available:
        return primary
    fallback = [n for n in ("dr", "kernel_dr", "dr_bandit", "wpdis", "pdis") if n in available]
    if not fallback:
        fallback = list(available)
    if not fallback:
        raise EvaluationError(f"{policy}: no estimator could be computed")
    return fallback[0]


def _refit_dm(
    ctx: _Context,
    probs: CandidateProbabilities,
    policy: Candidate,
    result: EstimatorResult,
    as_logging_policy: bool = False,
) -> EstimatorResult:
    """The direct method's row with intervals from refitting the model (``fit_bootstrap``)."""
    fb = ctx.cfg.fit_bootstrap
    action = probs.action
    dist = probs.distribution
    if policy.is_behaviour and not ctx.data.action_space.is_discrete:
        action = np.asarray(ctx.data.action, dtype=np.float64)
    elif policy.is_behaviour or as_logging_policy:
        dist = np.zeros((ctx.data.n_decisions, ctx.data.action_space.n))
        dist[np.arange(ctx.data.n_decisions), ctx.data.action] = 1.0
    boot = fit_bootstrap_dm(
        ctx.data,
        ctx.cfg.direct,
        target_distribution=dist,
        target_action=action,
        n_resamples=fb.n_resamples,
        confidence=ctx.cfg.confidence,
        seed=fb.seed,
        delta=ctx.cfg.lower_bound_delta,
        interval=fb.interval,
    )
    return replace(
        result,
        se=boot.se,
        ci_low=boot.ci_low,
        ci_high=boot.ci_high,
        ci_method=f"fit bootstrap {boot.interval}",
        percentile_low=boot.percentile_low,
        percentile_high=boot.percentile_high,
        bca_low=boot.ci_low,
        bca_high=boot.ci_high,
        lower_bound_t=boot.lower_bound,
        lower_bound_bernstein=None,
        n_resamples=boot.n_resamples,
    )


def _refit_draws(ctx: _Context, inp: OPEInput, name: str, paired: bool) -> np.ndarray:
    """The marginal estimator's value (or paired gain) on every resample, ratios refitted."""
    assert ctx.counts is not None
    returns = ctx.data.returns if paired else None
    draws = [
        marginal_bootstrap(
            inp, doubly_robust=name == "mdr", config=ctx.cfg.marginal,
            counts=np.asarray(block, dtype=np.float64), returns=returns,
        )
        for block in ctx.counts.chunks()
    ]
    out = np.concatenate(draws)
    return out[np.isfinite(out)]


def _refit_summary(ctx: _Context, s: IntervalSummary, draws: np.ndarray) -> IntervalSummary:
    """``s`` with SE, intervals and the t bound from refit-bootstrap draws (percentile)."""
    if draws.size < 2:
        return s
    alpha = 1.0 - ctx.cfg.confidence
    low, high = (float(q) for q in np.quantile(draws, [alpha / 2, 1 - alpha / 2]))
    se = float(np.std(draws, ddof=1))
    n = ctx.data.n_episodes
    t = float(st.t.ppf(1.0 - ctx.cfg.lower_bound_delta, max(n - 1, 1)))
    return replace(
        s, se=se, ci_low=low, ci_high=high, percentile_low=low, percentile_high=high,
        bca_low=low, bca_high=high, lower_bound_t=s.estimate - t * se,
        lower_bound_bernstein=None, n_resamples=int(draws.size),
    )


def _refit_marginal(
    ctx: _Context, inp: OPEInput, names: list[str], summaries: list[IntervalSummary]
) -> list[IntervalSummary]:
    """Marginal estimators' summaries with the ratio fit resampled too (``marginal_bootstrap``)."""
    if ctx.counts is None or ctx.cfg.bootstrap.n_resamples < 2:
        return summaries
    return [
        _refit_summary(ctx, s, _refit_draws(ctx, inp, n, paired=False)) if n in _MARGINAL else s
        for n, s in zip(names, summaries, strict=True)
    ]


def _improvements(
    ctx: _Context,
    inp: OPEInput,
    stats: list[EpisodeStatistics],
    results: list[EstimatorResult],
) -> dict[str, ImprovementResult]:
    """Every estimator's paired estimate of V(candidate) - V(behaviour), with its power."""
    diffs = ctx.summarise([paired_difference(s, ctx.data.returns) for s in stats])
    if ctx.counts is not None and ctx.cfg.bootstrap.n_resamples >= 2:
        diffs = [
            _refit_summary(ctx, d, _refit_draws(ctx, inp, r.estimator, paired=True))
            if r.estimator in _MARGINAL else d
            for d, r in zip(diffs, results, strict=True)
        ]
    margin = ctx.appr.margin(ctx.behaviour.estimate)
    out: dict[str, ImprovementResult] = {}
    for diff, level in zip(diffs, results, strict=True):
        lower, method = ctx.lower_bound(diff)
        level_lower, _ = ctx.lower_bound(level)
        power = power_analysis(
            diff.estimate,
            diff.se,
            ctx.data.n_episodes,
            margin,
            ctx.cfg.lower_bound_delta,
            ctx.episodes_per_day,
        )
        out[level.estimator] = ImprovementResult(
            estimate=diff.estimate,
            se=diff.se,
            ci_low=diff.ci_low,
            ci_high=diff.ci_high,
            lower_bound=lower,
            lower_bound_method=method,
            level_lower_bound=level_lower - ctx.behaviour.estimate,
            margin=margin,
            power=power,
        )
    return out


def _diagnostics(
    ctx: _Context,
    inp: OPEInput,
    probs: CandidateProbabilities,
    results: list[EstimatorResult],
    p: EstimatorResult,
) -> dict[str, Any]:
    diagnostics: dict[str, Any] = candidate_diagnostics(
        inp,
        target_action=probs.action,
        support_threshold=ctx.cfg.support_threshold,
        support_fraction=ctx.cfg.support_fraction,
    )
    if p.estimator in _MARGINAL:
        for key in ("ess", "ess_fraction", "max_weight_share"):
            diagnostics[f"trajectory_{key}"] = diagnostics[key]
        diagnostics.update(marginal_overlap(inp, p.estimator, ctx.cfg))
    if probs.bandwidth is not None:
        diagnostics["kernel_bandwidth"] = probs.bandwidth
    diagnostics["primary_se"] = p.se
    spread, members = family_spread({r.estimator: r.estimate for r in results})
    diagnostics["family_spread"] = spread
    diagnostics["family_members"] = members
    spread_sd = _spread_sd(results, members)
    diagnostics["family_spread_sd"] = spread_sd
    diagnostics["family_spread_se"] = (
        spread / spread_sd if spread is not None and spread_sd else None
    )
    clip = ctx.cfg.clipping.max_weight
    diagnostics["clipping_max_weight"] = clip
    if clip is not None and p.estimator in ESTIMATORS:
        unclipped = ESTIMATORS[p.estimator]().estimate_policy_value(inp.unclipped())
        effect = p.estimate - unclipped
        diagnostics["unclipped_estimate"] = unclipped
        diagnostics["clipping_effect"] = effect
        diagnostics["clipping_effect_se"] = abs(effect) / p.se if p.se > 0 else math.inf
    calibration = ctx.propensity.get("calibration") or {}
    if ctx.propensity.get("estimated"):
        diagnostics["calibration_error"] = calibration.get("expected_calibration_error")
    return diagnostics


def marginal_overlap(inp: OPEInput, estimator: str, cfg: EvaluateConfig) -> dict[str, Any]:
    """The overlap checks on the marginal estimators' own decision weights; the trajectory
    weights' figures are kept beside them (``trajectory_*``)."""
    mu = state_ratios(inp, cfg.marginal, estimator) * inp.rho
    out: dict[str, Any] = dict(decision_weight_diagnostics(mu))
    out["weights_basis"] = "marginal decision weights w_t(s_t) rho_t (the primary estimator's)"
    return out


def _spread_sd(results: list[EstimatorResult], members: dict[str, str]) -> float | None:
    """Standard error of the spread: of the difference between its two extreme members."""
    chosen = [r for r in results if r.estimator in members.values()]
    if len(chosen) < 2:
        return None
    low = min(chosen, key=lambda r: r.estimate)
    high = max(chosen, key=lambda r: r.estimate)
    return math.sqrt(low.se**2 + high.se**2)


def _model_input(
    ctx: _Context,
    policy: Candidate,
    probs: CandidateProbabilities,
    skipped: dict[str, str],
    as_logging_policy: bool,
) -> tuple[OPEInput, QPredictions | None]:
    model = None
    if any(ESTIMATORS[n].needs_model for n in ctx.names):
        if ctx.data.observation is None:
            for n in ctx.names:
                if ESTIMATORS[n].needs_model:
                    skipped[n] = "the transitions have no observations to fit a model on"
        else:
            model = model_fit(
                ctx.data,
                probs,
                policy,
                ctx.cfg,
                fitter=ctx.fitter,
                as_logging_policy=as_logging_policy,
            )
    inp = OPEInput(
        ctx.data,
        probs.logged,
        probs.distribution,
        q_logged=None if model is None else model.q_logged,
        v_hat=None if model is None else model.v_hat,
        max_weight=ctx.cfg.clipping.max_weight,
    )
    return inp, model


def _candidate_notes(
    policy: Candidate, logging_match: str | None, model: QPredictions | None
) -> list[str]:
    """What the result says in words about this candidate beyond its numbers."""
    notes: list[str] = []
    if logging_match is not None:
        what = "the logging policy itself" if policy.is_behaviour else logging_match
        notes.append(
            f"This candidate is the logging policy ({what}): its value is the on-policy value "
            "of the logs; the importance-weighted and doubly robust estimates equal it."
        )
    if model is not None and model.quality is not None and model.quality.held_out:
        notes.append(model.quality.summary())
    return notes


def _evaluate_one(ctx: _Context, policy: Candidate) -> CandidateResult:
    skipped = dict(ctx.skipped)
    probs = policy.probabilities(ctx.data, ctx.cfg.kernel)
    logging_match = (
        "rule:behaviour" if policy.is_behaviour else logging_policy_match(ctx.data, probs)
    )
    inp, model = _model_input(ctx, policy, probs, skipped, logging_match is not None)
    estimators, stats = _estimators_for(ctx, inp, probs, skipped)
    summaries = _refit_marginal(ctx, inp, [e.name for e in estimators], ctx.summarise(stats))
    results = [
        EstimatorResult.from_summary(
            e, s, "refit bootstrap percentile" if e.name in _MARGINAL and s.n_resamples
            else ctx.cfg.bootstrap.method,
        )
        for e, s in zip(estimators, summaries, strict=True)
    ]
    names = [r.estimator for r in results]
    if ctx.cfg.fit_bootstrap.enabled and "dm" in names:
        i = names.index("dm")
        results[i] = _refit_dm(ctx, probs, policy, results[i], logging_match is not None)
    primary = _primary_name(ctx, names, policy.name)
    p = results[names.index(primary)]
    improvement: ImprovementResult | None = None
    improvements: dict[str, ImprovementResult] = {}
    if ctx.cfg.comparison == "paired":
        improvements = _improvements(ctx, inp, stats, results)
        improvement = improvements[primary]
        lower = ctx.behaviour.estimate + improvement.lower_bound
        method = f"{improvement.lower_bound_method}, paired improvement"
    else:
        lower, method = ctx.lower_bound(p)
    diagnostics = _diagnostics(ctx, inp, probs, results, p)
    diagnostics["logging_policy"] = logging_match is not None
    if model is not None and model.quality is not None:
        diagnostics["reward_model"] = model.quality.to_dict()
    verdict = approve(
        lower_bound=lower,
        behaviour_value=ctx.behaviour.estimate,
        diagnostics=Diagnostics.from_mapping(diagnostics),
        config=ctx.appr,
        estimator=primary,
        bound_method=method,
        confidence=1.0 - ctx.cfg.lower_bound_delta,
        improvement=None if improvement is None else improvement.estimate,
        power=None if improvement is None else improvement.power,
        selection_note=ctx.selection_notes.get(policy.name),
    )
    log.info(
        "candidate evaluated",
        candidate=policy.name,
        estimate=round(p.estimate, 6),
        lower_bound=round(lower, 6),
        behaviour=round(ctx.behaviour.estimate, 6),
        improvement=None if improvement is None else round(improvement.estimate, 6),
        decision=verdict.decision,
    )
    return CandidateResult(
        name=policy.name,
        estimates=results,
        diagnostics=diagnostics,
        verdict=verdict,
        primary_estimator=primary,
        lower_bound=lower,
        lower_bound_method=method,
        clipped=ctx.cfg.clipping.max_weight is not None,
        skipped=skipped,
        improvement=improvement,
        improvements=improvements,
        notes=_candidate_notes(policy, logging_match, model),
    )


class _FQE(DirectMethod):
    """Direct method on d3rlpy FQE's value predictions."""

    name = "fqe"
