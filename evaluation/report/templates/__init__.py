"""Jinja2 templates of the approval report (package data, read by ``evaluation.report.render``)."""
