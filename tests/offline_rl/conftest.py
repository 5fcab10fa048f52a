"""Shared fixtures: tiny transition datasets in the ETL's contract, one torch thread."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

from offline_rl.data import TransitionManifest
from offline_rl.testing.synthetic import make_transitions, write_dataset

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def discrete_data() -> tuple[pl.DataFrame, TransitionManifest]:
    return make_transitions(120, n_features=6, n_actions=4, seed=3)


@pytest.fixture(scope="session")
def continuous_data() -> tuple[pl.DataFrame, TransitionManifest]:
    return make_transitions(80, n_features=6, continuous=True, seed=4)


@pytest.fixture(scope="session")
def discrete_dir(
    tmp_path_factory: pytest.TempPathFactory, discrete_data: tuple[pl.DataFrame, TransitionManifest]
) -> Path:
    root = tmp_path_factory.mktemp("etl_discrete")
    write_dataset(*discrete_data, root)
    return root


@pytest.fixture(scope="session")
def continuous_dir(
    tmp_path_factory: pytest.TempPathFactory,
    continuous_data: tuple[pl.DataFrame, TransitionManifest],
) -> Path:
    root = tmp_path_factory.mktemp("etl_continuous")
    write_dataset(*continuous_data, root)
    return root
