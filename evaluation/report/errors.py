"""Errors of the approval report: bad or missing inputs (a user's mistake, not a bug)."""

from __future__ import annotations

from evaluation.errors import EvaluationError


class ReportError(EvaluationError):
    """The report's inputs are missing or malformed (``ope.json``, the manifest, an artifact)."""
