"""Configuration of the ETL (the ``[etl]`` table of the TOML config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EtlConfig(BaseModel):
    """How raw logs become transitions."""

    model_config = ConfigDict(extra="forbid")
