"""A policy table with decision_ids the data lacks: counted, warned, refused beyond a share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from structlog.testing import capture_logs

from ecomrl.cli import main
from evaluation.candidates import DEFAULT_MAX_UNKNOWN_SHARE, TablePolicy, parse_policy_spec
from evaluation.data import EpisodeData
from evaluation.errors import EvaluationError
from evaluation.testing.synthetic import TabularMDP, softmax_policy

MDP = TabularMDP.random(seed=1)
BEHAVIOUR = softmax_policy(np.random.default_rng(0).normal(size=(4, 3)))


def _uniform_table(decision_ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "decision_id": np.repeat(decision_ids, 3),
            "action": np.tile(np.arange(3), len(decision_ids)),
            "probability": np.full(3 * len(decision_ids), 1 / 3),
        }
    )


@pytest.fixture(scope="module")
def logged() -> EpisodeData:
    data, _ = MDP.sample(BEHAVIOUR, 400, np.random.default_rng(1))
    return data


def _ids(data: EpisodeData) -> list[str]:
    assert data.decision_id is not None
    return [str(d) for d in data.decision_id]


def test_a_few_unknown_ids_are_ignored_with_a_warning_that_counts_them(
    logged: EpisodeData,
) -> None:
    ids = _ids(logged)
    n_unknown = int(len(ids) * DEFAULT_MAX_UNKNOWN_SHARE) // 2  # half the allowed share
    assert n_unknown >= 2
    stray = [f"stray-{i}" for i in range(n_unknown)]
    table = _uniform_table(ids + stray)
    with capture_logs() as records:
        probs = TablePolicy(table, name="table:t").probabilities(logged)
    assert probs.distribution is not None
    assert np.allclose(probs.distribution, 1 / 3)  # the valid rows are used as they are
    warnings = [r for r in records if r["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["unknown_decision_ids"] == n_unknown
    assert warnings[0]["table_decision_ids"] == len(ids) + n_unknown


def test_no_warning_when_every_id_is_known(logged: EpisodeData) -> None:
    with capture_logs() as records:
        TablePolicy(_uniform_table(_ids(logged))).probabilities(logged)
    assert not [r for r in records if r["log_level"] == "warning"]


def test_unknown_ids_beyond_the_share_are_refused_and_the_share_is_configurable(
    logged: EpisodeData, tmp_path: Path
) -> None:
    ids = _ids(logged)
    table = _uniform_table(ids + [f"other-{i}" for i in range(500)])
    share = 500 / (len(ids) + 500)
    with pytest.raises(EvaluationError, match=r"500 of the table's \d+ decision_ids"):
        TablePolicy(table, name="table:t").probabilities(logged)
    path = tmp_path / "t.parquet"
    table.write_parquet(path)
    looser = parse_policy_spec(f"table:{path}#max_unknown_share={share + 0.01:.4f}")
    with capture_logs() as records:
        looser.probabilities(logged)
    assert [r["unknown_decision_ids"] for r in records if r["log_level"] == "warning"] == [500]
    with pytest.raises(EvaluationError, match="max_unknown_share must be in"):
        parse_policy_spec(f"table:{path}#max_unknown_share=2")
    with pytest.raises(EvaluationError, match="unknown option"):
        parse_policy_spec(f"table:{path}#epsilon=0.1")


def test_null_decision_ids_count_as_unknown(logged: EpisodeData) -> None:
    ids = _ids(logged)
    table = pl.concat(
        [_uniform_table(ids), _uniform_table(["x"]).with_columns(decision_id=pl.lit(None))],
        how="vertical_relaxed",
    )
    with capture_logs() as records:
        TablePolicy(table).probabilities(logged)
    assert [r["unknown_decision_ids"] for r in records if r["log_level"] == "warning"] == [1]


def test_the_evaluate_command_exits_2_on_a_table_for_other_data(
    logged: EpisodeData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "etl"
    part = root / "transitions" / "date=2026-01-05"
    part.mkdir(parents=True)
    pl.DataFrame(
        {
            "episode_id": [f"user{e:05d}" for e in logged.episode],
            "step": logged.step.astype(np.int32),
            "decision_id": _ids(logged),
            "action": logged.action.astype(np.int32),
            "reward": logged.reward,
            "terminal": logged.terminal,
            "timeout": logged.timeout,
            "behaviour_propensity": logged.behaviour_propensity,
            "propensity_source": ["logged"] * logged.n_decisions,
        }
    ).write_parquet(part / "part-00000.parquet")
    (root / "_manifest.json").write_text(
        json.dumps({"gamma": 0.9, "action_space": {"type": "discrete", "n": 3}})
    )
    table = tmp_path / "probs.parquet"
    _uniform_table(_ids(logged) + [f"other-{i}" for i in range(500)]).write_parquet(table)
    code = main(["evaluate", "--data", str(root), "--policy", f"table:{table}",
                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "500 of the table's" in err and "Traceback" not in err
