"""Loading transitions: episode boundaries, the timeout convention, d3rlpy's traps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from offline_rl.data import (
    TransitionManifest,
    load_transitions,
    to_arrays,
    to_mdp_dataset,
    validate_transitions,
)
from offline_rl.errors import TrainingError
from offline_rl.testing.synthetic import make_transitions, write_dataset


def test_load_sorts_partitions_and_hashes_the_manifest(
    discrete_dir: Path, discrete_data: tuple[pl.DataFrame, TransitionManifest]
) -> None:
    frame, manifest = load_transitions(discrete_dir)
    original, _ = discrete_data
    assert frame.height == original.height
    # date partitions interleave episodes; the loader restores (episode_id, step) order
    assert frame.select("episode_id", "step").equals(
        original.select("episode_id", "step").sort("episode_id", "step")
    )
    import hashlib

    raw = (discrete_dir / "_manifest.json").read_bytes()
    assert manifest.sha256 == hashlib.sha256(raw).hexdigest()
    assert manifest.discrete and manifest.action_size == 4
    # the transitions folder itself is accepted too
    assert load_transitions(discrete_dir / "transitions")[0].height == frame.height


def test_episode_boundaries_survive_the_conversion(
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
) -> None:
    frame, manifest = discrete_data
    arrays = to_arrays(frame, manifest)
    # reference: per-episode facts computed with a plain group-by
    ref = (
        frame.group_by("episode_id", maintain_order=True)
        .agg(
            length=pl.len(),
            terminal=pl.col("terminal").last(),
            timeout=pl.col("timeout").last(),
        )
        .sort("episode_id")
    )
    assert arrays.n_episodes == ref.height
    assert arrays.episode_lengths.tolist() == ref["length"].to_list()
    assert arrays.terminals.sum() == ref["terminal"].sum()
    assert arrays.timeouts.sum() == ref["timeout"].sum()
    # the timeout convention: the last step of a timeout episode is not a transition
    expected_transitions = frame.height - int(ref["timeout"].sum())
    assert arrays.n_transitions == expected_transitions

    dataset = to_mdp_dataset(arrays)
    one_step_timeouts = ref.filter(pl.col("timeout") & (pl.col("length") == 1)).height
    assert one_step_timeouts > 0  # the fixture has some: they vanish in d3rlpy
    assert dataset.transition_count == expected_transitions
    episodes = dataset.episodes
    assert len(episodes) == ref.height - one_step_timeouts
    kept = ref.filter(~(pl.col("timeout") & (pl.col("length") == 1)))
    assert [e.size() for e in episodes] == kept["length"].to_list()
    assert [bool(e.terminated) for e in episodes] == kept["terminal"].to_list()


def test_action_space_and_size_come_from_the_manifest() -> None:
    frame, manifest = make_transitions(40, n_actions=6, seed=1)
    # the largest action (5) never appears: d3rlpy alone would infer 5 actions
    frame = frame.with_columns(pl.col("action").clip(0, 3))
    arrays = to_arrays(frame, manifest)
    dataset = to_mdp_dataset(arrays)
    assert dataset.dataset_info.action_size == 6
    import d3rlpy

    assert dataset.dataset_info.action_space == d3rlpy.ActionSpace.DISCRETE


def test_integer_valued_continuous_actions_stay_continuous() -> None:
    frame, manifest = make_transitions(40, continuous=True, seed=2)
    frame = frame.with_columns(
        pl.Series("action", np.zeros((frame.height, 1), np.float32), dtype=pl.Array(pl.Float32, 1))
    )
    dataset = to_mdp_dataset(to_arrays(frame, manifest))
    import d3rlpy

    assert dataset.dataset_info.action_space == d3rlpy.ActionSpace.CONTINUOUS
    assert dataset.dataset_info.action_size == 1


def test_next_rows_follow_the_episode(
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
) -> None:
    frame, manifest = discrete_data
    arrays = to_arrays(frame, manifest)
    rows, nxt = arrays.transition_rows, arrays.next_rows
    inner = nxt >= 0
    assert np.all(nxt[inner] == rows[inner] + 1)
    assert np.all(arrays.episode_index[nxt[inner]] == arrays.episode_index[rows[inner]])
    assert np.all(arrays.terminals[rows[~inner]] == 1.0)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.with_columns(timeout=pl.col("terminal") | pl.col("timeout")), "both"),
        (lambda f: f.with_columns(action=pl.lit(9, dtype=pl.Int32)), "outside"),
        (lambda f: f.filter(pl.col("step") != 1), "steps are not"),
        (lambda f: f.drop("reward"), "lack the columns"),
        (
            lambda f: f.with_columns(terminal=(pl.col("step") == 0) & ~pl.col("timeout")),
            "before its",
        ),
    ],
)
def test_contract_breaches_are_refused(
    discrete_data: tuple[pl.DataFrame, TransitionManifest], mutate: object, message: str
) -> None:
    frame, manifest = discrete_data
    with pytest.raises(TrainingError, match=message):
        validate_transitions(mutate(frame), manifest)  # type: ignore[operator]


def test_bad_manifest_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="not found"):
        load_transitions(tmp_path / "nope")
    frame, manifest = make_transitions(10)
    write_dataset(frame, manifest, tmp_path / "d")
    data = dict(manifest.data, action_space={"type": "discrete"})
    (tmp_path / "d" / "_manifest.json").write_text(json.dumps(data))
    with pytest.raises(TrainingError, match="n. >= 2"):
        load_transitions(tmp_path / "d")


def test_an_etl_output_without_decisions_says_so(tmp_path: Path) -> None:
    counts = {"events": {"rows_in": 31106, "used": 31106}, "orders": {"rows_in": 0, "used": 0}}
    (tmp_path / "_manifest.json").write_text(json.dumps({"counts": counts}))
    with pytest.raises(TrainingError, match="the ETL found no decisions in 31106 input rows"):
        load_transitions(tmp_path)
