"""d3rlpy datasets as step-level logs, for ``etl.import_steps`` (``ecomrl import``).

A d3rlpy ``MDPDataset`` / ``ReplayBuffer`` holds episodes of observations, actions and rewards
with a ``terminated`` flag. :func:`steps_from_mdp_dataset` flattens it to one row per step in the
columns :class:`etl.steps.StepColumns` expects by default (``episode``, ``step``,
``observation``, ``action``, ``reward``, ``terminal``); the last step of an episode that did not
terminate becomes a timeout on import. :func:`read_d3rlpy` reads a file written by d3rlpy's
``dump`` (HDF5 arrays, no pickle).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from offline_rl._quiet import import_d3rlpy
from offline_rl.errors import TrainingError

if TYPE_CHECKING:
    from d3rlpy.dataset import ReplayBufferBase

_d3rlpy = import_d3rlpy()  # keeps the CLI's logging configuration (d3rlpy resets structlog)


def steps_from_mdp_dataset(dataset: ReplayBufferBase) -> pl.DataFrame:
    """One row per step of every episode of ``dataset``."""
    discrete = dataset.dataset_info.action_space == _d3rlpy.constants.ActionSpace.DISCRETE
    episodes, steps, obs, actions, rewards, terminal = [], [], [], [], [], []
    for index, episode in enumerate(dataset.episodes):
        length = len(episode.rewards)
        observations = np.asarray(episode.observations, dtype=np.float64)[:length]
        episodes.append(np.full(length, index, dtype=np.int64))
        steps.append(np.arange(length, dtype=np.int64))
        obs.append(observations.reshape(length, -1))
        actions.append(np.asarray(episode.actions)[:length].reshape(length, -1))
        rewards.append(np.asarray(episode.rewards, dtype=np.float64)[:length].reshape(-1))
        ends = np.zeros(length, dtype=bool)
        ends[-1] = bool(episode.terminated)
        terminal.append(ends)
    if not episodes:
        raise TrainingError("the d3rlpy dataset has no episodes")
    action = np.concatenate(actions)
    action_column = (
        pl.Series("action", action[:, 0].astype(np.int64)) if discrete
        else pl.Series("action", action.astype(np.float64))
    )
    return pl.DataFrame(
        {
            "episode": np.concatenate(episodes),
            "step": np.concatenate(steps),
            "observation": pl.Series("observation", np.concatenate(obs)).arr.to_list(),
            "action": action_column,
            "reward": np.concatenate(rewards),
            "terminal": np.concatenate(terminal),
        }
    )


def read_d3rlpy(path: Path) -> pl.DataFrame:
    """Steps of a d3rlpy dataset file (``ReplayBuffer.dump`` / ``MDPDataset.dump``, HDF5)."""
    try:
        with Path(path).open("rb") as f:
            dataset = _d3rlpy.dataset.ReplayBuffer.load(f, _d3rlpy.dataset.InfiniteBuffer())
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(f"{path}: not a d3rlpy dataset file: {exc}") from exc
    return steps_from_mdp_dataset(dataset)
