"""The report's plots: matplotlib figures rendered to inline base64 PNG (no files, no network).

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, never with
``pyplot``, so that rendering a report does not change the global backend of a notebook.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluation.report.model import (
    BehaviourModelCheck,
    CandidateSummary,
    DataSummary,
    DriftSummary,
    PolicyValue,
    ReportVerdict,
    TrainingCurves,
)

DPI = 100
GREEN = "#1a7f37"
RED = "#c62828"
GREY = "#6e7781"
BLUE = "#0969da"
FAMILY_COLOURS = {
    "on-policy": "#24292f",
    "direct": "#8250df",
    "importance sampling": "#bf8700",
    "doubly robust": BLUE,
}


@dataclass(frozen=True)
class Plot:
    """One rendered figure, ready for an ``<img src=...>``."""

    key: str
    title: str
    alt: str
    data_uri: str
    width: int
    height: int


def _plain(text: str) -> str:
    """Text from the data as literal matplotlib text (a ``$`` must not start mathtext)."""
    return text.replace("\\", "\\\\").replace("$", r"\$")


def _margins(
    fig: Figure,
    *,
    left: float = 0.75,
    bottom: float = 0.55,
    right: float = 0.15,
    top: float = 0.35,
    wspace: float | None = None,
    hspace: float | None = None,
) -> None:
    """Fixed margins in inches (much cheaper than a constrained layout, and deterministic)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wspace,
        hspace=hspace,
    )


def _label_width(labels: list[str], fontsize: float) -> float:
    """Rough width in inches of the longest tick label (DejaVu Sans: ~0.6 em per character)."""
    longest = max((len(x) for x in labels), default=0)
    return longest * 0.6 * fontsize / 72


def _render(fig: Figure, key: str, title: str, alt: str) -> Plot:
    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    width, height = (int(v) for v in canvas.get_width_height())
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return Plot(key, title, alt, f"data:image/png;base64,{encoded}", width, height)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def forest_plot(
    behaviour: PolicyValue,
    candidates: list[CandidateSummary],
    verdict: ReportVerdict,
) -> Plot:
    """Every estimator's value and interval per candidate, the behaviour value and the margin."""
    rows: list[tuple[str, float, float | None, float | None, str]] = [
        (
            f"{behaviour.name} (logged, on-policy)",
            behaviour.value,
            behaviour.ci_low,
            behaviour.ci_high,
            FAMILY_COLOURS["on-policy"],
        )
    ]
    bounds: list[tuple[int, float, bool]] = []
    for cand in candidates:
        for est in cand.estimates:
            colour = FAMILY_COLOURS.get(est.family, GREY)
            rows.append((f"{cand.name}: {est.label}", est.value, est.ci_low, est.ci_high, colour))
        if cand.lower_bound is not None and math.isfinite(cand.lower_bound):
            rows.append(
                (f"{cand.name}: lower bound ({cand.primary_estimator})", math.nan, None, None, GREY)
            )
            bounds.append((len(rows) - 1, cand.lower_bound, cand.approved))
    height = max(2.6, 0.32 * len(rows) + 1.4)
    labels = [_plain(r[0]) for r in rows]
    label_in = min(_label_width(labels, 8), 4.5)
    fig = Figure(figsize=(5.5 + label_in, height))
    _margins(fig, left=label_in + 0.25, bottom=0.6, top=0.15)
    ax = fig.add_subplot()
    ys = np.arange(len(rows))[::-1]
    for y, (_, value, low, high, colour) in zip(ys, rows, strict=True):
        if low is not None and high is not None and _finite(low) and _finite(high):
            ax.plot([low, high], [y, y], color=colour, lw=2, solid_capstyle="butt")
        if math.isfinite(value):
            ax.plot([value], [y], "o", color=colour, ms=6)
    ax.axvline(behaviour.value, color=GREY, lw=1, label="current policy value")
    required = verdict.baseline_value + verdict.margin
    ax.axvline(required, color=RED, lw=1.2, ls="--", label="value + required margin")
    for row_index, bound, approved in bounds:
        y = ys[row_index]
        colour = GREEN if approved else RED
        ax.plot([bound], [y], marker="^", color=colour, ms=10, ls="none")
        if bound < required:  # the shortfall, drawn as a dotted gap to the required value
            ax.plot([bound, required], [y, y], color=colour, lw=1, ls=":")
    ax.plot([], [], marker="^", color=GREY, ls="none", label="lower confidence bound")
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlabel("estimated policy value (mean discounted return per episode)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    alt = (
        f"Forest plot: estimated value of {len(candidates)} candidate(s) by estimator with "
        f"intervals, against the current policy's value {behaviour.value:.4g} and the required "
        f"value {required:.4g}."
    )
    return _render(fig, "forest", "Estimated value by estimator", alt)


def weights_plot(candidate: CandidateSummary) -> Plot | None:
    """Histogram (or quantiles) of the candidate's importance weights, log scale."""
    weights = candidate.weights
    if weights is None:
        return None
    fig = Figure(figsize=(5.5, 2.8))
    _margins(fig, left=0.8, bottom=0.6, top=0.35)
    ax = fig.add_subplot()
    edges, counts = weights.histogram_edges, weights.histogram_counts
    if edges and counts and len(edges) == len(counts) + 1:
        e = np.asarray(edges, dtype=float)
        ax.bar(e[:-1], counts, width=np.diff(e), align="edge", color=BLUE, alpha=0.8)
        if np.all(e > 0) and e[-1] / e[0] > 50:
            ax.set_xscale("log")
        ax.set_xlabel("importance weight")
        ax.set_ylabel("episodes")
    else:
        labels = [*weights.quantiles.keys(), "max"]
        values = [*weights.quantiles.values(), weights.max]
        ax.bar(range(len(values)), values, color=BLUE, alpha=0.8)
        ax.set_xticks(range(len(values)), [_plain(x) for x in labels], fontsize=8)
        positive = [v for v in values if v > 0]
        if positive and max(values) > 50 * min(positive):
            ax.set_yscale("symlog", linthresh=1.0)
            ax.set_ylim(0, max(values) * 2)
        ax.set_ylabel("importance weight")
        ax.set_xlabel("quantile")
    ax.set_title(_plain(candidate.name), fontsize=9)
    ax.grid(alpha=0.3)
    alt = f"Importance weights of {candidate.name}: maximum {weights.max:.4g}."
    return _render(fig, f"weights-{candidate.name}", f"Weights: {candidate.name}", alt)


def drift_plot(drift: DriftSummary, max_features: int = 40) -> Plot:
    """PSI per feature (largest first), the threshold as a line, drifted features in red."""
    rows = sorted(drift.rows, key=lambda r: r.psi, reverse=True)[:max_features]
    names = [_plain(r.feature) for r in rows]
    label_in = min(_label_width(names, 7), 3.5)
    fig = Figure(figsize=(5.0 + label_in, max(2.2, 0.24 * len(rows) + 1.0)))
    _margins(fig, left=label_in + 0.2, bottom=0.6, top=0.15)
    ax = fig.add_subplot()
    ys = np.arange(len(rows))[::-1]
    ax.barh(ys, [r.psi for r in rows], color=[RED if r.flagged else BLUE for r in rows])
    ax.axvline(drift.psi_threshold, color=RED, ls="--", lw=1, label="flag threshold")
    ax.set_yticks(ys, names, fontsize=7)
    ax.set_xlabel("population stability index (PSI)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    alt = f"PSI per feature; {len(drift.flagged)} above the threshold {drift.psi_threshold:g}."
    return _render(fig, "drift", "Feature drift (PSI)", alt)


def training_plot(curves: TrainingCurves, max_series: int = 6) -> Plot | None:
    """One small panel per training metric (loss curves)."""
    names = [n for n, pts in curves.series.items() if pts][:max_series]
    if not names:
        return None
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.2 * cols + 0.3, 2.4 * nrows + 0.2))
    _margins(fig, left=0.6, bottom=0.5, top=0.3, right=0.15, wspace=0.35, hspace=0.6)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for i, name in enumerate(names):
        ax: Axes = axes[i // cols][i % cols]
        pts = np.asarray(curves.series[name], dtype=float)
        ax.plot(pts[:, 0], pts[:, 1], color=BLUE, lw=1.2, marker="o" if len(pts) < 20 else None)
        ax.set_title(_plain(name), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for j in range(len(names), nrows * cols):
        axes[j // cols][j % cols].set_visible(False)
    alt = f"Training curves: {', '.join(names)}."
    return _render(fig, "training", "Training curves", alt)


def behaviour_model_plot(check: BehaviourModelCheck) -> Plot | None:
    """Calibration of the behaviour model: estimated against logged propensity, per bin."""
    if not check.bins:
        return None
    b = np.asarray([(x, y) for x, y, _ in check.bins], dtype=float)
    sizes = np.asarray([n for _, _, n in check.bins], dtype=float)
    fig = Figure(figsize=(4.2, 3.6))
    _margins(fig, left=0.7, bottom=0.6, top=0.15, right=0.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color=GREY, lw=1, ls="--", label="perfect")
    scale = 200 * sizes / max(float(sizes.max()), 1.0) + 10
    ax.scatter(b[:, 0], b[:, 1], s=scale, color=BLUE, alpha=0.7, label="bins")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("estimated probability of an action")
    ax.set_ylabel("observed frequency")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    alt = (
        "Behaviour-model calibration: the estimated probability of each action against how "
        "often it was taken, per bin (on the diagonal: well calibrated)."
    )
    return _render(fig, "behaviour-model", "Behaviour-model check", alt)


def reward_plot(data: DataSummary) -> Plot | None:
    """Histogram of the per-decision reward in the logs."""
    if data.reward_histogram is None:
        return None
    edges, counts = data.reward_histogram
    if len(edges) != len(counts) + 1 or not counts:
        return None
    e = np.asarray(edges, dtype=float)
    fig = Figure(figsize=(5.0, 2.6))
    _margins(fig, left=0.75, bottom=0.6, top=0.15)
    ax = fig.add_subplot()
    ax.bar(e[:-1], counts, width=np.diff(e), align="edge", color=BLUE, alpha=0.8)
    if max(counts) > 50 * max(1, sorted(counts)[len(counts) // 2]):
        ax.set_yscale("symlog")
    ax.set_xlabel("reward per decision")
    ax.set_ylabel("decisions")
    ax.grid(alpha=0.3)
    return _render(fig, "reward", "Reward per decision", "Histogram of the reward per decision.")
