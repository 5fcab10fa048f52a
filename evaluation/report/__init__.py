"""The policy-approval report: verdict first, then value, diagnostics, data, drift and training.

Public API:

* :func:`render_report` writes ``report.html`` (self-contained), ``report.md`` and
  ``report.json`` from a :class:`ReportInputs`;
* :func:`report_inputs_from_run` builds the inputs from an evaluation's ``ope.json``, the ETL's
  ``_manifest.json`` and, optionally, a training artifact and the transition data;
* :func:`feature_drift` computes PSI and KS per state feature;
* :func:`notebook_html` wraps the page in an ``<iframe srcdoc>`` for a notebook cell.

See ``evaluation/report/README.md`` for how to read the report.
"""

from evaluation.report.drift import PSI_EPSILON, PSI_THRESHOLD, feature_drift
from evaluation.report.errors import ReportError
from evaluation.report.inputs import report_inputs_from_ope, report_inputs_from_run
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
from evaluation.report.render import ReportPaths, notebook_html, render_report

__all__ = [
    "PSI_EPSILON",
    "PSI_THRESHOLD",
    "BehaviourModelCheck",
    "CandidateSummary",
    "Check",
    "DataSummary",
    "DriftSummary",
    "EstimateRow",
    "FeatureDriftRow",
    "PolicyValue",
    "ReportError",
    "ReportInputs",
    "ReportPaths",
    "ReportVerdict",
    "TrainingCurves",
    "WeightSummary",
    "feature_drift",
    "notebook_html",
    "render_report",
    "report_inputs_from_ope",
    "report_inputs_from_run",
]
