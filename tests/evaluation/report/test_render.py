"""Rendering the report from hand-built inputs: verdict words, escaping, and the three formats."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from PIL import Image

from evaluation.report import notebook_html, render_report
from evaluation.report.model import fmt_number
from evaluation.report.render import markdown_escape
from tests.evaluation.report.sample_inputs import EVIL, make_inputs


def test_fmt_number_is_shared_by_every_format() -> None:
    assert fmt_number(3.14159) == "3.142"
    assert fmt_number(3.1) == "3.1"
    assert fmt_number(12000) == "12,000"
    assert fmt_number(None) == "n/a"
    assert fmt_number(float("nan")) == "n/a"
    assert fmt_number(2.5e-5) == "2.500e-05"
    assert fmt_number(-0.0) == "0"
    assert fmt_number(6461.0) == "6,461"
    assert fmt_number(999.0) == "999"


def test_reject_on_value_in_the_words_of_the_rule() -> None:
    verdict = make_inputs(lower_bound=3.1, baseline_value=3.4, margin=0.1).verdict
    assert not verdict.approved
    assert verdict.decision == "REJECT"
    assert verdict.sentence == (
        "Rejected: the lower 95 % bound of the candidate's value (3.1) does not beat the current "
        "policy's value (3.4) by the required margin (0.1)."
    )


def test_approve_says_the_bound_beats_the_margin_and_checks_pass() -> None:
    verdict = make_inputs(lower_bound=3.6, baseline_value=3.4, margin=0.1).verdict
    assert verdict.approved
    assert verdict.sentence == (
        "Approved: the lower 95 % bound of the candidate's value (3.6) beats the current "
        "policy's value (3.4) by the required margin (0.1), and all 2 diagnostic checks pass."
    )


def test_reject_on_diagnostics_names_the_failed_checks_with_numbers() -> None:
    verdict = make_inputs(lower_bound=3.6, ess=35.0, support=0.2).verdict
    assert not verdict.approved
    assert [c.name for c in verdict.failed_checks] == [
        "effective sample size",
        "unsupported share",
    ]
    assert verdict.sentence.startswith("Rejected: the lower 95 % bound of the candidate's value")
    assert "beats the current policy's value (3.4)" in verdict.sentence
    assert verdict.sentence.endswith(
        "but the estimate cannot be trusted because these checks failed: "
        "effective sample size 35, below the minimum 100; unsupported share 0.2, above the "
        "maximum 0.05."
    )


def test_reject_on_both_lists_the_failed_checks_too() -> None:
    verdict = make_inputs(lower_bound=3.0, ess=20.0).verdict
    assert verdict.sentence == (
        "Rejected: the lower 95 % bound of the candidate's value (3) does not beat the current "
        "policy's value (3.4) by the required margin (0.1). Failed checks: effective sample "
        "size 20, below the minimum 100."
    )


@dataclass(frozen=True)
class Rendered:
    html: str
    md: str
    data: dict[str, Any]


def _render(out: Path, **kwargs: Any) -> Rendered:
    paths = render_report(make_inputs(**kwargs), out)
    return Rendered(
        paths.html.read_text(encoding="utf-8"),
        paths.markdown.read_text(encoding="utf-8"),
        json.loads(paths.json.read_text(encoding="utf-8")),
    )


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """The default report with markup in a feature name, a reason and the candidate's name."""
    return _render(tmp_path_factory.mktemp("evil"), feature=EVIL, reason=EVIL, candidate_name=EVIL)


def test_the_verdict_comes_first_and_big(evil: Rendered) -> None:
    html, md = evil.html, evil.md
    sentence = make_inputs().verdict.sentence
    body = html[html.index("<body>") :]
    assert body.index('class="decision"') < body.index("Candidates at a glance")
    assert '<p class="decision" id="decision">REJECT</p>' in html
    assert str(escape(sentence)) in html
    assert md.startswith("# REJECT: Policy approval")
    assert md.index(sentence) < md.index("## Candidates at a glance")


def test_failed_checks_are_flagged_not_hidden(tmp_path: Path) -> None:
    out = _render(tmp_path, lower_bound=3.6, ess=35.0)
    assert "FAILED: effective sample size 35, below the minimum 100." in out.html
    assert '<td class="fail">FAIL</td>' in out.html
    assert "| effective sample size | 35 | at least 100 | **FAIL** |" in out.md
    verdict = out.data["verdict"]
    assert verdict["failed_checks"] == ["effective sample size"]
    assert verdict["decision"] == "REJECT"


def test_values_from_the_data_are_escaped(evil: Rendered) -> None:
    html, md = evil.html, evil.md
    assert "<script" not in html.lower()
    # quarantine reason, drift row, candidate name (banner, tables, plot alt and key) ...
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 8
    assert 'data-plot="weights-&lt;script&gt;' in html
    assert "<script" not in md.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert evil.data["drift"]["rows"][0]["feature"] == EVIL  # JSON carries the raw string


def test_markdown_escape_keeps_tables_intact() -> None:
    assert markdown_escape("a|b\nc") == "a\\|b c"
    assert markdown_escape("<b>&") == "&lt;b&gt;&amp;"


def test_html_is_self_contained(evil: Rendered) -> None:
    html = evil.html
    assert "Content-Security-Policy" in html
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", html)
    assert "http://" not in html and "https://" not in html
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    keys = re.findall(r'data-plot="([^"]+)"', html)
    assert len(keys) == len(images) == 6
    assert keys[0] == "forest" and keys[2:] == ["reward", "drift", "training", "behaviour-model"]
    for encoded in images:
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
            assert image.format == "PNG"
            assert image.width > 100 and image.height > 100


def test_markdown_and_json_carry_the_same_verdict_and_numbers(evil: Rendered) -> None:
    inputs = make_inputs()
    html, md, data = evil.html, evil.md, evil.data
    verdict = data["verdict"]
    assert verdict["sentence"] == inputs.verdict.sentence
    assert verdict["approved"] is False
    assert verdict["lower_bound"] == 3.1 and verdict["baseline_value"] == 3.4
    assert verdict["margin"] == 0.1
    assert f"**Decision: {verdict['decision']}**" in md
    assert ">REJECT<" in html
    for text in (html, md):
        for estimate in inputs.candidates[0].estimates:
            assert fmt_number(estimate.value) in text
        for row in inputs.drift.rows if inputs.drift else []:
            assert fmt_number(row.psi) in text and fmt_number(row.ks_statistic) in text
        assert "12,000" in text and "11,500" in text  # rows in / used
    candidates = data["candidates"]
    json_estimates = [e["value"] for e in candidates[0]["estimates"]]
    assert json_estimates == [e.value for e in inputs.candidates[0].estimates]
    assert candidates[0]["checks"][0]["rule"] == "at least 100"


def test_minimal_inputs_render_with_sections_marked_missing(tmp_path: Path) -> None:
    paths = render_report(make_inputs(with_extras=False), tmp_path)
    html = paths.html.read_text(encoding="utf-8")
    assert "No data manifest was given" in html
    assert "Drift not computed" in html
    assert "No training metrics were given" in html
    data = json.loads(paths.json.read_text(encoding="utf-8"))
    assert data["data"] is None and data["drift"] is None


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    render_report(make_inputs(with_extras=False), tmp_path)
    paths = render_report(make_inputs(lower_bound=3.6, with_extras=False), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "report.html",
        "report.json",
        "report.md",
    ]
    assert "APPROVE" in paths.html.read_text(encoding="utf-8")
    mask = os.umask(0o022)
    os.umask(mask)
    for path in (paths.html, paths.markdown, paths.json):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_become_null_in_json(tmp_path: Path, value: float) -> None:
    paths = render_report(make_inputs(lower_bound=value, with_extras=False), tmp_path)
    data = json.loads(paths.json.read_text(encoding="utf-8"))
    assert data["verdict"]["lower_bound"] is None
    assert "n/a" in paths.markdown.read_text(encoding="utf-8")


def test_notebook_html_isolates_the_page_in_an_iframe() -> None:
    snippet = notebook_html(make_inputs(with_extras=False, candidate_name=EVIL), height=500)
    assert snippet.startswith('<iframe srcdoc="&lt;!DOCTYPE html&gt;')
    assert "height: 500px" in snippet and " sandbox " in snippet
    assert "<script" not in snippet.lower()  # the page's own escaping survives, escaped again
    assert snippet.endswith("</iframe>")
