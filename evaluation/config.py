"""Configuration of evaluation and approval (``[evaluate]`` and ``[approval]`` tables)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EvaluateConfig(BaseModel):
    """Which estimators to run and how to compute intervals."""

    model_config = ConfigDict(extra="forbid")


class ApprovalConfig(BaseModel):
    """The approval rule's margin and diagnostic thresholds."""

    model_config = ConfigDict(extra="forbid")
