"""Step-level logs -> transitions (``etl.steps``): accounting, quarantine, the dataset contract."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from etl.errors import EtlError
from etl.steps import StepColumns, StepImportConfig, import_steps, read_steps
from offline_rl.data import load_transitions

DAY = dt.date(2026, 3, 1)


def _steps(n_episodes: int = 40, length: int = 5, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_episodes * length
    return pl.DataFrame(
        {
            "episode": np.repeat(np.arange(n_episodes), length),
            "step": np.tile(np.arange(length), n_episodes),
            "observation": rng.normal(2.0, 3.0, size=(n, 3)).tolist(),
            "action": rng.choice(["left", "right", "stay"], size=n),
            "reward": rng.normal(size=n),
            "terminal": np.tile(np.arange(length) == length - 1, n_episodes)
            & (np.repeat(np.arange(n_episodes), length) % 2 == 0),
            "propensity": np.full(n, 1 / 3),
        }
    )


def _config(**kw: object) -> StepImportConfig:
    return StepImportConfig.model_validate(
        {"date": DAY, "columns": {"propensity": "propensity"}, **kw}
    )


def test_clean_steps_make_a_dataset_the_trainer_reads(tmp_path: Path) -> None:
    steps = _steps()
    result = import_steps(steps, tmp_path / "data", _config())
    frame, manifest = load_transitions(tmp_path / "data")  # the trainer's own loader and checks
    assert frame.height == steps.height == manifest.data["counts"]["steps"]["used"]
    assert manifest.data["action_space"] == {
        "type": "discrete", "n": 3, "labels": ["left", "right", "stay"],
    }
    # the observations are standardised with the scaling the manifest records, and invertible
    scaling = manifest.data["scaling"]
    mean = np.array([scaling[n]["mean"] for n in manifest.data["feature_names"]])
    std = np.array([scaling[n]["std"] for n in manifest.data["feature_names"]])
    restored = np.asarray(frame["observation"].to_list()) * std + mean
    ordered = steps.sort(pl.col("episode").cast(pl.String), "step")
    np.testing.assert_allclose(restored, np.asarray(ordered["observation"].to_list()), atol=1e-5)
    labels = ["left", "right", "stay"]
    assert [labels[i] for i in frame["action"]] == ordered["action"].to_list()
    # the last step of an episode is terminal (odd-numbered: not) or else a timeout
    last = frame.filter(pl.col("step") == 4)
    assert (last["terminal"] ^ last["timeout"]).all()
    assert not frame.filter(pl.col("step") < 4)["timeout"].any()
    assert result.quarantine.height == 0


def test_bad_rows_quarantine_their_whole_episode_with_reason_and_column(tmp_path: Path) -> None:
    steps = _steps().with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(float("nan")).otherwise("reward")
        .alias("reward"),
        pl.when(pl.int_range(pl.len()) == 12).then(pl.lit("jump")).otherwise("action")
        .alias("action"),
    )
    steps = steps.filter(pl.int_range(pl.len()) != 33)  # a missing step in episode 6
    result = import_steps(steps, tmp_path / "data", _config(max_quarantine_share=0.5,
                                                            action_labels=["left", "right",
                                                                           "stay"]))
    q = result.quarantine.sort("row_number")
    assert dict(zip(q["row_number"], zip(q["reason"], q["column"], strict=True),
                    strict=True))[7] == ("bad_reward", "reward")
    assert ("bad_action", "action") in set(zip(q["reason"], q["column"], strict=True))
    assert "broken_step_sequence" in set(q["reason"])
    # episodes 1 (rows 5-9), 2 (10-14) and 6 go whole; nothing is lost
    assert set(q.filter(pl.col("reason") == "bad_episode")["row_number"]) >= {5, 6, 8, 9}
    assert result.transitions.height + q.height == steps.height
    assert set(result.transitions["episode_id"]).isdisjoint({"1", "2", "6"})
    counts = json.loads((tmp_path / "data" / "_manifest.json").read_text())["counts"]["steps"]
    assert counts["rows_in"] == steps.height and sum(counts["quarantined"].values()) == q.height


def test_quarantine_above_the_ceiling_stops_with_the_counts(tmp_path: Path) -> None:
    steps = _steps().with_columns(pl.lit(1.5).alias("propensity"))
    with pytest.raises(EtlError, match=r"200 of 200 rows .*bad_propensity: 200.*column "
                                       r"'propensity'"):
        import_steps(steps, tmp_path / "data", _config())
    assert not (tmp_path / "data").exists()


def test_contract_errors_name_the_column(tmp_path: Path) -> None:
    with pytest.raises(EtlError, match=r"missing columns \['obs'\]"):
        import_steps(_steps(), tmp_path / "d", _config(columns={"observation": "obs"}))
    with pytest.raises(EtlError, match="no timestamp column"):
        import_steps(_steps(), tmp_path / "d", StepImportConfig())
    with pytest.raises(EtlError, match="must be a list of numbers"):
        import_steps(_steps().with_columns(pl.lit("x").alias("observation")), tmp_path / "d",
                     _config())


def test_continuous_actions_from_columns_and_timestamps(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 60
    steps = pl.DataFrame(
        {
            "ep": np.repeat(np.arange(20), 3), "t": np.tile(np.arange(3), 20),
            "x1": rng.normal(size=n), "x2": rng.normal(size=n),
            "rate": rng.uniform(0.0, 0.3, size=n), "r": rng.normal(size=n),
            "done": np.tile([False, False, True], 20),
            "at": [dt.datetime(2026, 3, 1) + dt.timedelta(hours=int(h)) for h in range(n)],
        }
    )
    cols = StepColumns(episode="ep", step="t", observation=["x1", "x2"], action="rate",
                       reward="r", terminal="done", timestamp="at")
    config = StepImportConfig(columns=cols, continuous_low=[0.0], continuous_high=[0.3])
    import_steps(steps, tmp_path / "data", config)
    frame, manifest = load_transitions(tmp_path / "data")
    assert manifest.data["action_space"] == {"type": "continuous", "low": [0.0], "high": [0.3]}
    assert manifest.data["feature_names"] == ["x1", "x2"]
    assert frame.schema["action"] == pl.Array(pl.Float32, 1)
    assert frame.schema["decision_ts"] == pl.Datetime("us", "UTC")
    assert sorted(p.name for p in (tmp_path / "data" / "transitions").iterdir()) == [
        "date=2026-03-01", "date=2026-03-02", "date=2026-03-03",
    ]


def test_reruns_are_byte_identical_and_csv_reads_the_same(tmp_path: Path) -> None:
    steps = _steps().drop("observation").with_columns(
        pl.Series("o1", np.arange(200.0)), pl.Series("o2", np.arange(200.0) % 7)
    )
    config = _config(columns={"observation": ["o1", "o2"], "propensity": "propensity"})
    steps.write_csv(tmp_path / "steps.csv")
    import_steps(read_steps(tmp_path / "steps.csv"), tmp_path / "a", config)
    import_steps(steps, tmp_path / "b", config)
    import_steps(steps, tmp_path / "b", config)  # replaces the dataset in place
    for name in ("_manifest.json", "transitions/date=2026-03-01/part-00000.parquet"):
        a, b = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        if name == "_manifest.json":  # only the input's name differs
            a = a.replace(str(tmp_path / "steps.csv").encode(), b"<frame>")
        assert a == b, name
