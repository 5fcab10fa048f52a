"""The ETL's state builder, online: the observation hook of the simulator's rollout.

It cleans the raw rows so far exactly as the ETL does (``etl.core.history_and_pending``) and
builds the features of the pending decisions with the ETL's feature registry
(``etl.features.raw_features``), so that a trained agent run online sees bit for bit the
features it was trained on (a test checks it, dirt included). It lives above both modules, so
that neither imports the other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from etl.config import EtlConfig
from etl.core import history_and_pending
from etl.errors import EtlError
from etl.features import FeatureSpec, Scaling, raw_features
from etl.validate import ActionSpace


class ObservationBuilder:
    """The observation hook of the simulator's rollout: the ETL's state builder, online.

    ``builder(events, orders, decisions)`` returns the scaled float32 features
    ``(len(decisions), n_features)`` of each pending decision, computed from the raw rows given
    (all rows before the decisions) exactly as the ETL computes them for its transitions.
    """

    def __init__(self, config: EtlConfig, space: ActionSpace, scaling: Scaling | None) -> None:
        self.config = config
        self.space = space
        self.spec = FeatureSpec.from_config(config, space)
        self.scaling = scaling or Scaling.identity(self.spec.names)

    @property
    def feature_names(self) -> list[str]:
        """The names of the observation's columns."""
        return self.spec.names

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any] | Path | str) -> ObservationBuilder:
        """The builder a transition dataset was made with (its ``_manifest.json``)."""
        data: Mapping[str, Any]
        if isinstance(manifest, Mapping):
            data = manifest
        else:
            path = Path(manifest)
            if path.is_dir():
                path = path / "_manifest.json"
            data = json.loads(path.read_text(encoding="utf-8"))
        config = EtlConfig.model_validate(data["config"])
        space = ActionSpace.from_manifest(data["action_space"])
        builder = cls(config, space, None)
        if builder.spec.names != list(data["feature_names"]):
            raise EtlError(
                "manifest: its feature_names do not match the features its config builds; "
                "the dataset was written by another version of the ETL"
            )
        builder.scaling = Scaling.from_manifest(builder.spec.names, data["scaling"])
        return builder

    @classmethod
    def from_config(
        cls, config: EtlConfig | None = None, *, continuous: bool = False,
        scaling: Scaling | None = None,
    ) -> ObservationBuilder:
        """A builder from an ETL config (identity scaling unless given)."""
        config = config or EtlConfig()
        return cls(config, ActionSpace.from_config(config, continuous), scaling)

    def raw(
        self, events: pl.DataFrame, orders: pl.DataFrame, decisions: pl.DataFrame
    ) -> np.ndarray:
        """Unscaled features of the pending decisions."""
        history, od, pending, links = history_and_pending(
            events, orders, _as_events(decisions), self.config, self.space
        )
        return raw_features(history, od, pending, links, self.spec)

    def __call__(
        self, events: pl.DataFrame, orders: pl.DataFrame, decisions: pl.DataFrame
    ) -> np.ndarray:
        """Scaled float32 observations, one row per pending decision, in their order."""
        return self.scaling.apply(self.raw(events, orders, decisions))


def _as_events(decisions: pl.DataFrame) -> pl.DataFrame:
    out = decisions
    if "event_type" not in out.columns:
        out = out.with_columns(pl.lit("decision").alias("event_type"))
    if "event_id" not in out.columns:
        out = out.with_columns(("pending:" + pl.col("decision_id")).alias("event_id"))
    return out
