"""Off-policy evaluation, diagnostics and the policy-approval report.

Entry points (importable from ``evaluation`` directly, loaded on first use):

* ``evaluate_candidates`` -> ``EvaluationResult`` (``.to_frame()``, ``.write(dir)``): what
  ``ecomrl evaluate``, the report and the nightly job call;
* candidates: ``ConstantPolicy``, ``UniformPolicy``, ``BehaviourPolicy``, ``TablePolicy``,
  ``ModelPolicy``, ``load_artifact``, ``parse_policy_spec``;
* data: ``EpisodeData``, ``TransitionsDataset``, ``load_transitions``;
* the approval rule: ``approve`` -> ``Verdict``;
* configs: ``EvaluateConfig``, ``ApprovalConfig``.

The estimators live in :mod:`evaluation.estimators` (one module per family); the report in
:mod:`evaluation.report`. See evaluation/README.md for formulas and conventions.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate_candidates": "evaluation.evaluate",
    "EvaluationResult": "evaluation.evaluate",
    "CandidateResult": "evaluation.evaluate",
    "EstimatorResult": "evaluation.evaluate",
    "ConstantPolicy": "evaluation.candidates",
    "UniformPolicy": "evaluation.candidates",
    "BehaviourPolicy": "evaluation.candidates",
    "TablePolicy": "evaluation.candidates",
    "ModelPolicy": "evaluation.candidates",
    "load_artifact": "evaluation.candidates",
    "parse_policy_spec": "evaluation.candidates",
    "EpisodeData": "evaluation.data",
    "TransitionsDataset": "evaluation.data",
    "load_transitions": "evaluation.data",
    "approve": "evaluation.approval",
    "Verdict": "evaluation.approval",
    "EvaluateConfig": "evaluation.config",
    "ApprovalConfig": "evaluation.config",
    "EvaluationError": "evaluation.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
