"""Calibration of predicted probabilities: the reliability table and its expected error."""

from __future__ import annotations

import numpy as np

from evaluation.data import FloatArray


def reliability(
    prob: FloatArray, outcome: FloatArray, bins: int
) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error and the reliability table of probabilities ``prob`` against
    0/1 ``outcome``s, over ``bins`` equal-width bins of [0, 1] (empty bins left out): per bin the
    mean prediction, the observed frequency and the count; the error is their count-weighted mean
    absolute difference (Naeini, Cooper & Hauskrecht, AAAI 2015)."""
    idx = np.minimum((prob * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    mean_p = np.bincount(idx, weights=prob, minlength=bins).astype(np.float64)
    mean_y = np.bincount(idx, weights=outcome, minlength=bins).astype(np.float64)
    used = count > 0
    mean_p[used] /= count[used]
    mean_y[used] /= count[used]
    ece = float(np.sum(count[used] * np.abs(mean_p - mean_y)[used]) / count.sum())
    table = [
        {"predicted": float(mean_p[b]), "observed": float(mean_y[b]), "count": float(count[b])}
        for b in range(bins)
        if used[b]
    ]
    return ece, table
