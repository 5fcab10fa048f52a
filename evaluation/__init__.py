"""Off-policy evaluation, diagnostics and the policy-approval report.

Entry points: :func:`evaluation.evaluate.evaluate_candidates` (what ``ecomrl evaluate``, the
report and the nightly job call), the estimators in :mod:`evaluation.estimators`, the data
container :class:`evaluation.data.EpisodeData` and the approval rule
:func:`evaluation.approval.approve`. See evaluation/README.md for formulas and conventions.
"""
