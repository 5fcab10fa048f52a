"""Drift compares like with like: no alarm in a stable simulated world, alarms on a real shift.

History features (orders, sessions, offers so far) grow with a user's tenure; the reference is
weighted to today's tenure mix, so a stable world raises no flag, while today's desktop sessions
moved to the app (a change in who arrives and how) flags the device features.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from etl import run_etl
from etl.config import EtlConfig
from evaluation.report.drift import (
    drift_from_transitions,
    feature_drift,
    psi_noise_bound,
    tenure_weights,
)
from simulator import SimulatorConfig, simulate, write_raw_logs

SAMPLE = Path(__file__).resolve().parents[3] / "data_samples" / "promotion"


def _etl(raw: Path, out: Path) -> list[str]:
    run_etl(raw, out, EtlConfig())
    names = json.loads((out / "_manifest.json").read_text())["feature_names"]
    return [str(n) for n in names]


def _last_dates(out: Path, k: int) -> list[str]:
    return sorted(p.name.removeprefix("date=") for p in (out / "transitions").glob("date=*"))[-k:]


def _desktop_to_app_on(logs_events: pl.DataFrame, day: object) -> pl.DataFrame:
    moved = (pl.col("event_ts").dt.date() == day) & (pl.col("device") == "desktop")
    return logs_events.with_columns(
        device=pl.when(moved).then(pl.lit("app")).otherwise(pl.col("device"))
    )


@pytest.mark.parametrize("arrival_days", [7, None], ids=["arrivals-first-week", "arrivals-daily"])
def test_stable_world_raises_no_flag_and_a_device_shift_does(
    tmp_path: Path, arrival_days: int | None
) -> None:
    logs = simulate(SimulatorConfig(n_users=800, seed=5, arrival_days=arrival_days))
    write_raw_logs(logs, tmp_path / "raw", truth=False)
    names = _etl(tmp_path / "raw", tmp_path / "etl")
    for day in _last_dates(tmp_path / "etl", 3):
        summary = drift_from_transitions(tmp_path / "etl", names, current_date=day)
        assert summary is not None
        assert "tenure" in summary.reference_label
        assert summary.flagged == [], (day, [(r.feature, r.psi) for r in summary.flagged])
        if arrival_days == 7:  # the old, unmatched comparison alarms on the history counters
            plain = drift_from_transitions(
                tmp_path / "etl", names, current_date=day, match_tenure=False
            )
            assert plain is not None
            assert {"n_sessions", "n_offers"} <= {r.feature for r in plain.flagged}

    last = logs.events["event_ts"].max().date()  # type: ignore[union-attr]
    shifted = dataclasses.replace(logs, events=_desktop_to_app_on(logs.events, last))
    write_raw_logs(shifted, tmp_path / "raw_shift", truth=False)
    _etl(tmp_path / "raw_shift", tmp_path / "etl_shift")
    summary = drift_from_transitions(tmp_path / "etl_shift", names)
    assert summary is not None
    flagged = {r.feature for r in summary.flagged}
    assert "device_desktop" in flagged
    assert flagged <= {"device_desktop", "device_app", "device_mobile"}


def test_the_bundled_samples_last_day_raises_no_flag(tmp_path: Path) -> None:
    names = _etl(SAMPLE, tmp_path / "etl")
    summary = drift_from_transitions(tmp_path / "etl", names)
    assert summary is not None and summary.flagged == []
    plain = drift_from_transitions(tmp_path / "etl", names, match_tenure=False)
    assert plain is not None and len(plain.flagged) >= 8  # what the report showed before


def test_tenure_weights_give_the_reference_todays_tenure_mix() -> None:
    reference = np.array([0, 0, 1, 1, 1, 1, 3, 5])
    current = np.array([1, 1, 1, 3, 4, 9])  # 4 is as near 3 as 5: the lower; 9 -> 5
    w = tenure_weights(reference, current)
    # tenure 0: no current row; 1: 3 current over 4 reference; 3: 2 (3 and 4) over 1; 5: 1 over 1
    assert w.tolist() == [0, 0, 0.75, 0.75, 0.75, 0.75, 2.0, 1.0]
    assert w.sum() == current.size


def test_weighted_reference_equals_the_reference_with_rows_repeated() -> None:
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(400, 2))
    cur = rng.normal(0.3, 1.0, size=(300, 2))
    counts = rng.integers(0, 4, size=400)
    weighted = feature_drift(ref, cur, ["a", "b"], reference_weights=counts.astype(float))
    rows = np.repeat(ref, counts, axis=0)  # unit weights: the same (inverted-CDF) quantiles
    repeated = feature_drift(rows, cur, ["a", "b"], reference_weights=np.ones(len(rows)))
    for column in ("psi", "ks_statistic", "reference_mean", "current_mean"):
        assert np.allclose(weighted[column].to_numpy(), repeated[column].to_numpy(), atol=1e-12)
    scipy_ks = feature_drift(rows, cur, ["a", "b"])["ks_statistic"].to_numpy()
    assert np.allclose(repeated["ks_statistic"].to_numpy(), scipy_ks, atol=1e-12)


def test_a_small_days_noise_is_not_a_flag_but_a_large_shift_is() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(100, 3))
    same = rng.normal(size=(40, 3))
    frame = feature_drift(ref, same, ["a", "b", "c"])
    bound = psi_noise_bound(40, 100, 10, 0.01 / 3)
    assert bound > 0.2  # forty rows: PSI of noise alone easily passes 0.2
    assert frame["flagged"].to_list() == list(frame["psi"].to_numpy() > bound)
    assert not frame["flagged"].any()
    moved = same + np.array([0.0, 0.0, 3.0])
    assert feature_drift(ref, moved, ["a", "b", "c"])["flagged"].to_list() == [False, False, True]
