"""Configuration of training (the ``[train]`` table of the TOML config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class TrainConfig(BaseModel):
    """Which agent to train and how."""

    model_config = ConfigDict(extra="forbid")
