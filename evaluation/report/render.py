"""Render the approval report: ``report.html`` (self-contained), ``report.md`` and ``report.json``.

The three files carry the same facts. The HTML needs no network: styles are inline, plots are
base64 PNG data URIs, there is no script, and a Content-Security-Policy forbids loading anything
else. Every value from the data goes through jinja2's autoescaping (HTML) or
:func:`markdown_escape` (Markdown). Each file is written to a temporary file in the output folder
and renamed over the target, so a reader never sees a half-written report.
"""

from __future__ import annotations

import html as html_module
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import structlog

from evaluation.report import plots
from evaluation.report.drift import PSI_MODERATE
from evaluation.report.model import ReportInputs, fmt_number, inputs_to_dict

log = structlog.get_logger(__name__)

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class ReportPaths:
    """Where the report's three files were written."""

    html: Path
    markdown: Path
    json: Path


def markdown_escape(value: Any) -> str:
    """Make a value safe inside Markdown text and tables (no raw HTML, no broken cells)."""
    text = "" if value is None else str(value)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("`", "\\`")
        .replace("\r", " ")
        .replace("\n", " ")
    )


def _ci(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "n/a"
    return f"[{fmt_number(low)}, {fmt_number(high)}]"


def _pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{fmt_number(100 * value, 3)} %"


def _environment(*, html: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=None if html else markdown_escape,
    )
    env.filters["num"] = fmt_number
    env.filters["ci"] = _ci
    env.filters["pct"] = _pct
    return env


def build_plots(inputs: ReportInputs) -> dict[str, plots.Plot]:
    """Render every plot the inputs allow, keyed by section."""
    started = time.perf_counter()
    out: dict[str, plots.Plot] = {
        "forest": plots.forest_plot(inputs.behaviour, inputs.candidates, inputs.verdict)
    }
    for cand in inputs.candidates:
        weights = plots.weights_plot(cand)
        if weights is not None:
            out[weights.key] = weights
    if inputs.drift is not None and inputs.drift.rows:
        out["drift"] = plots.drift_plot(inputs.drift)
    if inputs.training is not None:
        training = plots.training_plot(inputs.training)
        if training is not None:
            out["training"] = training
    if inputs.behaviour_model is not None:
        calibration = plots.behaviour_model_plot(inputs.behaviour_model)
        if calibration is not None:
            out["behaviour-model"] = calibration
    if inputs.data is not None:
        reward = plots.reward_plot(inputs.data)
        if reward is not None:
            out["reward"] = reward
    log.debug("report.plots", n=len(out), seconds=round(time.perf_counter() - started, 3))
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_html(inputs: ReportInputs, figures: dict[str, plots.Plot] | None = None) -> str:
    """The self-contained HTML page as a string."""
    figures = build_plots(inputs) if figures is None else figures
    template = _environment(html=True).get_template("report.html.j2")
    return template.render(r=inputs, plots=figures, psi_moderate=PSI_MODERATE)


def notebook_html(inputs: ReportInputs, *, height: int = 900) -> str:
    """The report as an ``<iframe srcdoc=...>`` for inline display in a notebook.

    The iframe keeps the report's styles from leaking into the notebook's page::

        from IPython.display import HTML
        HTML(notebook_html(inputs))
    """
    page = html_module.escape(render_html(inputs), quote=True)
    return (
        f'<iframe srcdoc="{page}" style="width: 100%; height: {int(height)}px; border: 0" '
        f'sandbox title="{html_module.escape(inputs.verdict.decision)}: policy approval report">'
        "</iframe>"
    )


def render_markdown(inputs: ReportInputs) -> str:
    """The Markdown version of the report (tables, no images)."""
    template = _environment(html=False).get_template("report.md.j2")
    return template.render(r=inputs, psi_moderate=PSI_MODERATE)


def render_json(inputs: ReportInputs) -> str:
    """The JSON version of the report: the same facts as data (see ``inputs_to_dict``)."""
    return json.dumps(inputs_to_dict(inputs), indent=2, allow_nan=False) + "\n"


def render_report(inputs: ReportInputs, out_dir: Path | str) -> ReportPaths:
    """Write ``report.html``, ``report.md`` and ``report.json`` into ``out_dir`` atomically.

    Returns their paths. The verdict comes first in each; see ``evaluation/report/README.md``
    for how to read the rest.
    """
    out = Path(out_dir)
    paths = ReportPaths(out / "report.html", out / "report.md", out / "report.json")
    html = render_html(inputs)
    markdown = render_markdown(inputs)
    data = render_json(inputs)
    _atomic_write(paths.json, data)
    _atomic_write(paths.markdown, markdown)
    _atomic_write(paths.html, html)
    log.info(
        "report.written",
        html=str(paths.html),
        decision=inputs.verdict.decision,
        candidate=inputs.verdict.candidate,
    )
    return paths
