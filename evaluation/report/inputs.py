"""Build the report's inputs from a run's files: ``ope.json``, ``_manifest.json``, an artifact.

:func:`report_inputs_from_run` is the one entry point; the ``ecomrl report`` command and the
nightly job call it, then :func:`evaluation.report.render_report`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import structlog

from evaluation.improvement import PowerAnalysis
from evaluation.report.drift import PSI_THRESHOLD, drift_from_transitions
from evaluation.report.errors import ReportError
from evaluation.report.model import (
    BehaviourModelCheck,
    CandidateSummary,
    Check,
    DataSummary,
    DriftSummary,
    EstimateRow,
    ImprovementRow,
    PolicyValue,
    ReportInputs,
    ReportVerdict,
    SelectionMember,
    SelectionSummary,
    WeightSummary,
    fmt_number,
)
from evaluation.report.sources import (
    data_summary_from_manifest,
    read_json,
    training_curves_from_artifact,
    transition_summary,
)

log = structlog.get_logger(__name__)

ESTIMATOR_LABELS: dict[str, str] = {
    "on_policy": "on-policy average",
    "is": "trajectory-wise IS",
    "pdis": "per-decision IS (PDIS)",
    "wis": "weighted IS (WIS)",
    "wpdis": "weighted per-decision IS (WPDIS)",
    "dr": "doubly robust (DR)",
    "wdr": "weighted doubly robust (WDR)",
    "dm": "direct method (DM)",
    "fqe": "fitted Q evaluation (FQE)",
    "ipw": "inverse propensity weighting (IPW)",
    "snipw": "self-normalised IPW (SNIPW)",
    "dr_bandit": "doubly robust, one-step (DR)",
    "sndr": "self-normalised DR (SNDR)",
    "dm_bandit": "direct method, one-step (DM)",
    "kernel_is": "kernel-smoothed IS",
    "kernel_wis": "kernel-smoothed weighted IS",
    "kernel_dr": "kernel-smoothed DR",
}

ESTIMATOR_FAMILIES: dict[str, str] = {
    "on_policy": "on-policy",
    "dm": "direct",
    "fqe": "direct",
    "dm_bandit": "direct",
    "dr": "doubly robust",
    "wdr": "doubly robust",
    "dr_bandit": "doubly robust",
    "sndr": "doubly robust",
    "kernel_dr": "doubly robust",
}

VALUE_RULE = "improvement"
"""Name of the value rule among ``evaluation.approval``'s checks (the others are diagnostics)."""

CHECK_TEXT: dict[str, tuple[str, str]] = {
    # check name in ope.json (evaluation.approval) -> (plain name, what a failure means)
    "effective_sample_size": (
        "effective sample size",
        "the estimate rests on a handful of logged episodes whose weights dominate",
    ),
    "effective_sample_share": (
        "effective sample size share",
        "only a tiny share of the logged episodes carries the estimate",
    ),
    "largest_weight_share": (
        "largest weight share",
        "a single episode's weight dominates the estimate",
    ),
    "unsupported_actions": (
        "unsupported actions",
        "the candidate picks actions the current policy (almost) never took, so the logs cannot "
        "tell how they do",
    ),
    "clipping_effect": (
        "clipping effect (standard errors)",
        "clipping the weights moved the estimate a lot: the clipped estimate is biased",
    ),
    "estimator_agreement": (
        "estimator agreement (spread)",
        "estimator families disagree, so at least one model or weighting is wrong",
    ),
    "propensity_calibration": (
        "behaviour-model calibration",
        "the estimated propensities are off, so the importance weights are unreliable",
    ),
}

WEIGHT_QUANTILES = (("weight_p50", "50%"), ("weight_p90", "90%"), ("weight_p99", "99%"))


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _get(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


def _interval(entry: Mapping[str, Any]) -> tuple[float | None, float | None]:
    ci = _get(entry, "ci", "interval", "confidence_interval")
    if isinstance(ci, list | tuple) and len(ci) == 2:
        return _float(ci[0]), _float(ci[1])
    if isinstance(ci, Mapping):
        return _float(_get(ci, "low", "lower")), _float(_get(ci, "high", "upper"))
    return _float(_get(entry, "ci_low", "lower")), _float(_get(entry, "ci_high", "upper"))


def _estimate_rows(raw: Any) -> list[EstimateRow]:
    items: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(raw, Mapping):
        items = [(str(k), v) for k, v in raw.items() if isinstance(v, Mapping)]
    elif isinstance(raw, list):
        items = [(str(_get(v, "estimator", "name")), v) for v in raw if isinstance(v, Mapping)]
    rows = []
    for name, entry in items:
        value = _float(_get(entry, "estimate", "value"))
        if value is None:
            continue
        low, high = _interval(entry)
        family = str(
            _get(entry, "family") or ESTIMATOR_FAMILIES.get(name, "importance sampling")
        ).replace("_", " ")
        rows.append(
            EstimateRow(
                estimator=name,
                label=ESTIMATOR_LABELS.get(name, name),
                family=family,
                value=value,
                ci_low=low,
                ci_high=high,
                std_error=_float(_get(entry, "std_error", "se")),
                ci_method=_get(entry, "ci_method", "interval_method"),
            )
        )
    return rows


def _check(key: str, entry: Any) -> Check | None:
    """One diagnostic from ``evaluation.approval.Check.to_dict()`` (or a ``{name: {...}}``)."""
    if not isinstance(entry, Mapping):
        return None
    key = str(_get(entry, "name") or key)
    name, meaning = CHECK_TEXT.get(key, (key.replace("_", " "), ""))
    comparison = str(_get(entry, "comparison", "direction") or "<=")
    direction: Literal["min", "max"] = "min" if comparison in (">=", ">", "min") else "max"
    passed = _get(entry, "passed", "ok")
    return Check(
        name=name,
        passed=bool(passed),
        value=_float(_get(entry, "value")),
        threshold=_float(_get(entry, "threshold")),
        direction=direction,
        meaning=meaning or str(_get(entry, "explanation", "meaning") or ""),
    )


def _split_checks(raw: Any) -> tuple[list[Check], Mapping[str, Any] | None]:
    """The diagnostics, and the value rule's raw entry (``improvement``) if present."""
    items: list[tuple[str, Any]] = []
    if isinstance(raw, Mapping):
        items = [(str(k), v) for k, v in raw.items()]
    elif isinstance(raw, list):
        items = [(str(_get(v, "name") or ""), v) for v in raw if isinstance(v, Mapping)]
    value_rule = None
    checks = []
    for key, entry in items:
        if key == VALUE_RULE and isinstance(entry, Mapping):
            value_rule = entry
            continue
        check = _check(key, entry)
        if check is not None:
            checks.append(check)
    return checks, value_rule


def _weights(diag: Mapping[str, Any], clipped: bool) -> WeightSummary | None:
    top = _float(diag.get("weight_max"))
    if top is None:
        return None
    quantiles = {
        label: value
        for key, label in WEIGHT_QUANTILES
        if (value := _float(diag.get(key))) is not None
    }
    hist = diag.get("weight_histogram")
    edges = counts = None
    if isinstance(hist, Mapping):
        edges = [float(x) for x in hist.get("edges", [])] or None
        counts = [int(x) for x in hist.get("counts", [])] or None
    return WeightSummary(
        quantiles=quantiles,
        max=top,
        mean=_float(diag.get("weight_mean")),
        histogram_edges=edges,
        histogram_counts=counts,
        clipped_share=_float(diag.get("clipped_fraction")) if clipped else None,
        zero_share=_float(diag.get("zero_weight_fraction")),
    )


def _kind(name: str) -> str:
    """How a candidate was given, from its policy spec (``artifact:PATH``, ``rule:...``)."""
    prefix, sep, _ = name.partition(":")
    return prefix if sep and prefix in ("artifact", "rule", "table") else "policy"


def _candidate_notes(entry: Mapping[str, Any], diag: Mapping[str, Any]) -> list[str]:
    notes = [str(n) for n in entry.get("notes", []) if isinstance(n, str)]
    skipped = entry.get("skipped")
    if isinstance(skipped, Mapping):
        notes.extend(
            f"Estimator {ESTIMATOR_LABELS.get(str(k), str(k))} not computed: {v}."
            for k, v in skipped.items()
        )
    unclipped = _float(diag.get("unclipped_estimate"))
    if entry.get("clipped") and unclipped is not None:
        cap = _float(diag.get("clipping_max_weight"))
        notes.append(
            f"Weights were clipped at {fmt_number(cap)}; without clipping the primary estimate "
            f"would be {fmt_number(unclipped)}."
        )
    members = diag.get("family_members")
    spread = _float(diag.get("family_spread"))
    if isinstance(members, Mapping) and spread is not None:
        used = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in members.items())
        notes.append(f"Estimator agreement compares {used}; spread {fmt_number(spread)}.")
    return notes


def _candidate(entry: Mapping[str, Any], primary_default: str) -> CandidateSummary:
    """One candidate of ``ope.json`` (``EvaluationResult.to_dict()['candidates'][i]``)."""
    name = str(_get(entry, "name", "candidate") or "candidate")
    verdict = entry.get("verdict")
    verdict = verdict if isinstance(verdict, Mapping) else {}
    diag = entry.get("diagnostics")
    diag = diag if isinstance(diag, Mapping) else {}
    checks, _ = _split_checks(verdict.get("checks"))
    return CandidateSummary(
        name=name,
        kind=_kind(name),
        estimates=_estimate_rows(_get(entry, "estimates", "estimators")),
        primary_estimator=str(_get(entry, "primary_estimator") or primary_default),
        lower_bound=_float(entry.get("lower_bound")),
        lower_bound_method=str(_get(entry, "lower_bound_method") or "lower bound"),
        checks=checks,
        approved=bool(_get(verdict, "approved")),
        weights=_weights(diag, bool(entry.get("clipped"))),
        notes=_candidate_notes(entry, diag),
        improvement=_improvement(entry.get("improvement"), str(entry.get("primary_estimator"))),
    )


def _improvement(raw: Any, estimator: str) -> ImprovementRow | None:
    if not isinstance(raw, Mapping):
        return None
    return ImprovementRow(
        estimate=_float(raw.get("estimate")),
        ci_low=_float(raw.get("ci_low")),
        ci_high=_float(raw.get("ci_high")),
        lower_bound=_float(raw.get("lower_bound")),
        level_lower_bound=_float(raw.get("level_lower_bound")),
        estimator=estimator,
    )


def _selection(raw: Any) -> SelectionSummary | None:
    if not isinstance(raw, Mapping) or not raw.get("built"):
        return None
    members = [
        SelectionMember(
            label=str(m.get("label")),
            estimate=_float(m.get("estimate")),
            predicted_lower_bound=_float(m.get("predicted_lower_bound")),
            eligible=bool(m.get("eligible")),
            reason=str(m.get("reason") or ""),
        )
        for m in raw.get("members") or []
        if isinstance(m, Mapping)
    ]
    n_sel, n_test = _float(raw.get("n_selection")), _float(raw.get("n_test"))
    return SelectionSummary(
        members=members,
        pick=None if raw.get("pick") is None else str(raw.get("pick")),
        certifiable=bool(raw.get("certifiable")),
        margin=_float(raw.get("margin")),
        n_selection=None if n_sel is None else int(n_sel),
        n_test=None if n_test is None else int(n_test),
        predicted_lower_bound=_float(raw.get("predicted_lower_bound")),
        realised_lower_bound=_float(raw.get("realised_lower_bound")),
    )


def _power_sentence(verdict: Mapping[str, Any], margin: float) -> str | None:
    power = verdict.get("power")
    if not isinstance(power, Mapping) or verdict.get("approved"):
        return None
    try:
        return PowerAnalysis(**{k: power[k] for k in PowerAnalysis.__dataclass_fields__}).sentence(
            margin
        )
    except (KeyError, TypeError):
        return None


def _behaviour(raw: Any, n_episodes: int | None) -> PolicyValue:
    if not isinstance(raw, Mapping):
        raise ReportError("ope.json has no behaviour-policy value ('behaviour')")
    value = _float(_get(raw, "estimate", "value"))
    if value is None:
        raise ReportError("ope.json: the behaviour policy's value is missing")
    low, high = _interval(raw)
    return PolicyValue(
        name=str(_get(raw, "name") or "current policy"),
        value=value,
        ci_low=low,
        ci_high=high,
        n_episodes=n_episodes,
    )


def _behaviour_model(raw: Any, propensity: Any) -> BehaviourModelCheck | None:
    """The behaviour-model check: calibration of the estimated propensities, when estimated."""
    if not isinstance(raw, Mapping):
        return None
    bins: list[tuple[float, float, int]] = []
    bins_raw = raw.get("bins")
    for b in bins_raw if isinstance(bins_raw, list) else []:
        if isinstance(b, Mapping):
            x = _float(_get(b, "predicted", "estimated"))
            y = _float(_get(b, "observed", "logged"))
            if x is not None and y is not None:
                bins.append((x, y, int(_float(_get(b, "count", "n")) or 0)))
    error = _float(raw.get("calibration_error"))
    threshold = _float(raw.get("threshold"))
    estimated = bool(raw.get("propensities_estimated", False))
    passed = None
    if error is not None and threshold is not None:
        passed = error <= threshold
    n: int | None = None
    if isinstance(propensity, Mapping) and isinstance(propensity.get("sources"), Mapping):
        n = _total(propensity["sources"])
    if not estimated and error is None and not bins:
        note = str(raw.get("note") or "All behaviour propensities were logged: no model needed.")
    else:
        note = str(raw.get("note") or "")
    note = note[:1].upper() + note[1:]
    return BehaviourModelCheck(
        n=n,
        calibration_error=error,
        threshold=threshold,
        passed=passed,
        mean_abs_error=_float(raw.get("mean_abs_error")),
        bins=bins,
        propensities_estimated=estimated,
        note=note,
    )


def _total(value: Any) -> int | None:
    if not isinstance(value, Mapping):
        return None
    numbers = [int(v) for v in value.values() if isinstance(v, int | float)]
    return sum(numbers) if numbers else None


def _pick_primary(candidates: Sequence[CandidateSummary], wanted: str | None) -> CandidateSummary:
    if wanted is not None:
        for cand in candidates:
            if cand.name == wanted:
                return cand
        names = ", ".join(c.name for c in candidates)
        raise ReportError(f"candidate {wanted!r} is not in the evaluation (has: {names})")
    return candidates[0]


def _margin_detail(approval: Mapping[str, Any], baseline_value: float) -> str:
    absolute = _float(approval.get("min_improvement")) or 0.0
    relative = _float(approval.get("min_relative_improvement")) or 0.0
    if relative <= 0:
        return f"min_improvement = {fmt_number(absolute)} (absolute)"
    return (
        f"the larger of {fmt_number(absolute)} and {fmt_number(100 * relative)} % of the "
        f"current value {fmt_number(baseline_value)}"
    )


def report_inputs_from_ope(
    ope: Mapping[str, Any],
    *,
    data: DataSummary | None = None,
    drift: DriftSummary | None = None,
    candidate: str | None = None,
    title: str = "Policy approval report",
    generated_at: str | None = None,
) -> ReportInputs:
    """Map a parsed ``ope.json`` (``EvaluationResult.to_dict()``) into :class:`ReportInputs`.

    The verdict is about ``candidate`` (default: the evaluation's ``primary_candidate``, else
    its first); every other candidate is shown beside it. The margin is read off the value
    rule (the ``improvement`` check: threshold = behaviour value + margin). ``generated_at``
    is printed under the verdict (default: now, UTC); a job that must reproduce its output on a
    rerun passes something stable, such as its run date.
    """
    raw_candidates = [c for c in ope.get("candidates") or [] if isinstance(c, Mapping)]
    if not raw_candidates:
        raise ReportError("ope.json has no candidates")
    primary_default = str(ope.get("primary_estimator") or "dr")
    candidates = [_candidate(c, primary_default) for c in raw_candidates]
    n_episodes = _float(ope.get("n_episodes"))
    behaviour = _behaviour(ope.get("behaviour"), int(n_episodes) if n_episodes else None)
    wanted = candidate or ope.get("primary_candidate")
    chosen = _pick_primary(candidates, str(wanted) if wanted else None)
    raw_chosen = raw_candidates[candidates.index(chosen)]
    verdict_raw = raw_chosen.get("verdict")
    verdict_raw = verdict_raw if isinstance(verdict_raw, Mapping) else {}
    approval = ope.get("approval")
    approval = approval if isinstance(approval, Mapping) else {}
    margin = _margin(verdict_raw, approval, behaviour.value)
    delta = _float(ope.get("lower_bound_delta"))
    level = 1.0 - delta if delta is not None else (_float(ope.get("confidence")) or 0.95)
    verdict = ReportVerdict(
        approved=chosen.approved,
        candidate=chosen.name,
        lower_bound=chosen.lower_bound,
        lower_bound_level=level,
        baseline="the current policy",
        baseline_value=behaviour.value,
        margin=max(0.0, margin),
        checks=chosen.checks,
        margin_detail=_margin_detail(approval, behaviour.value),
        improvement=_float(verdict_raw.get("improvement")),
        power=_power_sentence(verdict_raw, max(0.0, margin)),
    )
    propensity = ope.get("propensity")
    behaviour_model = _behaviour_model(ope.get("behaviour_model"), propensity)
    notes = _notes(ope, behaviour_model, data)
    if data is not None and isinstance(propensity, Mapping) and not data.propensity_source:
        sources = propensity.get("sources")
        if isinstance(sources, Mapping):
            data = DataSummary(
                **{**vars(data), "propensity_source": {str(k): int(v) for k, v in sources.items()}}
            )
    generated = generated_at or dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    return ReportInputs(
        title=title,
        generated_at=generated,
        verdict=verdict,
        behaviour=behaviour,
        candidates=candidates,
        data=data,
        drift=drift,
        behaviour_model=behaviour_model,
        notes=notes,
        selection=_selection(ope.get("selection")),
        holdout=None if ope.get("holdout") is None else str(ope.get("holdout")),
    )


def _margin(
    verdict: Mapping[str, Any], approval: Mapping[str, Any], behaviour_value: float
) -> float:
    """The margin the gate applied: read off the value rule's threshold (behaviour value plus
    margin), else recomputed from the approval config."""
    _, value_rule = _split_checks(verdict.get("checks"))
    required = _float(value_rule.get("threshold")) if value_rule else None
    if required is not None:
        return required - behaviour_value
    return max(
        _float(approval.get("min_improvement")) or 0.0,
        (_float(approval.get("min_relative_improvement")) or 0.0) * abs(behaviour_value),
    )


def _notes(
    ope: Mapping[str, Any], behaviour_model: BehaviourModelCheck | None, data: DataSummary | None
) -> list[str]:
    notes = [str(n) for n in ope.get("notes", []) if isinstance(n, str)]
    if behaviour_model is not None and behaviour_model.propensities_estimated:
        notes.append(
            "The importance weights use ESTIMATED propensities: the logs do not carry the "
            "logging policy's probabilities for every decision (see the behaviour-model check)."
        )
    if data is None:
        notes.append("No data manifest was given: the data section is incomplete.")
    return notes


def report_inputs_from_run(
    ope_json_path: Path | str,
    manifest_path: Path | str | None,
    artifact_dir: Path | str | None = None,
    drift: DriftSummary | None = None,
    *,
    data_dir: Path | str | None = None,
    candidate: str | None = None,
    compute_drift: bool = True,
    current_date: str | None = None,
    psi_threshold: float = PSI_THRESHOLD,
    generated_at: str | None = None,
) -> ReportInputs:
    """Everything the report shows, read from a run's files.

    Args:
        ope_json_path: the ``ope.json`` that ``ecomrl evaluate --out DIR`` wrote.
        manifest_path: the ETL's ``_manifest.json`` (``None``: data section marked missing).
        artifact_dir: a training artifact folder, for its loss curves (optional).
        drift: a precomputed drift summary; else it is computed from ``data_dir`` when given
            (``compute_drift``): ``current_date`` (default: the last date) against the earlier
            dates, PSI above ``psi_threshold`` flagged.
        data_dir: the ETL output folder (``transitions/date=*/``), for episode and reward
            summaries and drift; defaults to the manifest's folder.
        candidate: which candidate the verdict is about (default: the evaluation's primary).
    """
    ope_path = Path(ope_json_path)
    ope = read_json(ope_path, "evaluation result (ope.json)")
    if not isinstance(ope, Mapping):
        raise ReportError(f"{ope_path}: expected a JSON object")
    sources = {"evaluation": str(ope_path)}
    data: DataSummary | None = None
    if manifest_path is not None:
        manifest_file = Path(manifest_path)
        if manifest_file.is_dir():
            manifest_file = manifest_file / "_manifest.json"
        manifest = read_json(manifest_file, "ETL manifest")
        if not isinstance(manifest, Mapping):
            raise ReportError(f"{manifest_file}: expected a JSON object")
        data = data_summary_from_manifest(manifest)
        sources["manifest"] = str(manifest_file)
        if data_dir is None:
            data_dir = manifest_file.parent
    if data_dir is not None and (Path(data_dir) / "transitions").is_dir():
        gamma = (data.gamma if data else None) or _float(ope.get("gamma")) or 0.9
        facts = transition_summary(Path(data_dir), gamma)
        data = DataSummary(**{**(vars(data) if data else {}), **facts})
        sources["transitions"] = str(Path(data_dir) / "transitions")
        if drift is None and compute_drift and data.feature_names:
            drift = drift_from_transitions(
                Path(data_dir),
                data.feature_names,
                current_date=current_date,
                psi_threshold=psi_threshold,
            )
    inputs = report_inputs_from_ope(
        ope, data=data, drift=drift, candidate=candidate, generated_at=generated_at
    )
    training = None
    if artifact_dir is not None:
        training = training_curves_from_artifact(Path(artifact_dir))
        sources["artifact"] = str(artifact_dir)
    return ReportInputs(
        **{**vars(inputs), "training": training, "sources": sources},
    )
