"""Configuration of the simulator (the ``[simulator]`` table of the TOML config)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SimulatorConfig(BaseModel):
    """What to simulate; every field has a default so ``[simulator]`` may be omitted."""

    model_config = ConfigDict(extra="forbid")

    scenario: Literal["promotion", "recommendation"] = "promotion"
    action_space: Literal["discrete", "continuous"] = "discrete"
    n_users: int = Field(2_000, gt=0)
    seed: int = 0
    start_date: dt.date = dt.date(2026, 1, 5)
    days: int = Field(28, gt=0)
    log_propensity: bool = True
