"""PSI and KS per feature against hand-computed values and brute-force references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from evaluation.report import PSI_EPSILON, ReportError, feature_drift
from evaluation.report.drift import drift_from_transitions, population_stability_index


def test_psi_matches_a_hand_computation() -> None:
    # Reference [0, 0, 1, 1] with 2 bins: one interior edge at the median 0.5, shares 1/2, 1/2.
    # Current [0, 1, 1, 1]: shares 1/4, 3/4.
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    got = population_stability_index(np.array([0, 0, 1, 1.0]), np.array([0, 1, 1, 1.0]), 2)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(0.274653, abs=1e-6)


def test_psi_floors_an_empty_bin_at_the_documented_epsilon() -> None:
    # Current all in the upper bin: the lower bin's share 0 becomes PSI_EPSILON.
    eps = PSI_EPSILON
    expected = (eps - 0.5) * math.log(eps / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
    got = population_stability_index(np.array([0, 0, 1, 1.0]), np.ones(4), 2)
    assert got == pytest.approx(expected, rel=1e-12)


def test_psi_ten_quantile_bins_by_hand() -> None:
    # Reference 0..99: deciles put 10 values in each bin; an edge value goes to the bin above.
    ref = np.arange(100.0)
    cur = np.concatenate([np.arange(50.0), np.full(50, 95.0)])  # bins 0-4 full, all else in 9
    p = np.full(10, 0.1)
    q = np.array([0.1] * 5 + [eps_floor := PSI_EPSILON] * 4 + [0.5])
    q = np.maximum(q, eps_floor)
    expected = float(np.sum((q - p) * np.log(q / p)))
    assert population_stability_index(ref, cur) == pytest.approx(expected, rel=1e-12)


def test_identical_samples_give_zero_and_a_shift_is_flagged() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(5000, 3))
    frame = feature_drift(ref, ref.copy(), ["a", "b", "c"])
    assert frame["psi"].to_list() == [0.0, 0.0, 0.0]
    assert frame["ks_statistic"].to_list() == [0.0, 0.0, 0.0]
    assert not frame["flagged"].any()

    same_law = rng.normal(size=(5000, 3))
    shifted = same_law + np.array([0.0, 0.1, 1.0])
    frame = feature_drift(ref, shifted, ["same", "small", "shifted"])
    psi = dict(zip(frame["feature"], frame["psi"], strict=True))
    assert psi["same"] < 0.02
    assert psi["small"] < 0.1
    assert psi["shifted"] > 0.5
    assert frame["flagged"].to_list() == [False, False, True]


def test_ks_matches_a_brute_force_ecdf_gap() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(300, 2))
    cur = np.column_stack([rng.normal(0.3, 1, 200), rng.exponential(1, 200)])
    frame = feature_drift(ref, cur, ["x", "y"])
    for j in range(2):
        points = np.concatenate([ref[:, j], cur[:, j]])
        f_ref = (ref[:, j][None, :] <= points[:, None]).mean(axis=1)
        f_cur = (cur[:, j][None, :] <= points[:, None]).mean(axis=1)
        assert frame["ks_statistic"][j] == pytest.approx(np.abs(f_ref - f_cur).max(), abs=1e-12)
    assert frame["ks_pvalue"][1] < 1e-6
    assert frame.columns == [
        "feature",
        "psi",
        "ks_statistic",
        "ks_pvalue",
        "reference_mean",
        "current_mean",
        "flagged",
    ]


def test_bad_shapes_are_user_errors() -> None:
    with pytest.raises(ReportError, match="feature names"):
        feature_drift(np.zeros((3, 2)), np.zeros((3, 2)), ["a"])
    with pytest.raises(ReportError, match="2-D"):
        feature_drift(np.zeros(3), np.zeros(3), ["a"])
    with pytest.raises(ReportError, match="at least one"):
        feature_drift(np.zeros((0, 1)), np.zeros((3, 1)), ["a"])


def _write_day(root: Path, day: str, obs: np.ndarray) -> None:
    folder = root / "transitions" / f"date={day}"
    folder.mkdir(parents=True)
    frame = pl.DataFrame({"observation": obs.astype(np.float32)}).with_columns(
        pl.col("observation").cast(pl.Array(pl.Float32, obs.shape[1]))
    )
    frame.write_parquet(folder / "part-00000.parquet")


def test_drift_from_transitions_compares_the_last_day_with_the_earlier_ones(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    names = ["steady", "moved", "dow_sin"]
    for k, day in enumerate(["2026-11-01", "2026-11-02", "2026-11-03"]):
        obs = rng.normal(size=(400, 3))
        obs[:, 2] = k  # day of week: constant within a day, so never compared
        if k == 2:
            obs[:, 1] += 2.0
        _write_day(tmp_path, day, obs)
    summary = drift_from_transitions(tmp_path, names)
    assert summary is not None
    assert summary.current_label == "2026-11-03"
    assert summary.reference_label == "2026-11-01 to 2026-11-02"
    assert (summary.n_reference, summary.n_current) == (800, 400)
    assert [r.feature for r in summary.rows] == ["steady", "moved"]
    assert summary.skipped == ["dow_sin"]
    assert [r.feature for r in summary.flagged] == ["moved"]

    earlier = drift_from_transitions(tmp_path, names, current_date="2026-11-02")
    assert earlier is not None and not earlier.flagged
    assert drift_from_transitions(tmp_path, names, current_date="2026-11-01") is None
    with pytest.raises(ReportError, match="no transitions for date"):
        drift_from_transitions(tmp_path, names, current_date="2027-01-01")
    with pytest.raises(ReportError, match="the manifest names 2"):
        drift_from_transitions(tmp_path, ["a", "b"])
