"""Features from the source (``[etl.features]``): numeric, categorical with a discovered and
stored vocabulary, fixed-length lists, the decision's position; constant ones dropped."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from ecomrl.config import ConfigError, config_from_dict
from etl import EtlConfig, EtlError, ObservationBuilder, build_transitions, run_etl
from etl.features import FeatureSpec
from etl.validate import ActionSpace

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
REGIONS = ["north", "south", "north", "east", "north", "south", "west", "north"]


def impression_log(day: int = 0, regions: list[str] = REGIONS) -> pl.DataFrame:
    n = len(regions)
    return pl.DataFrame(
        {
            "event_id": [f"e{day}-{i}" for i in range(n)],
            "event_ts": [T0 + dt.timedelta(days=day, minutes=7 * i) for i in range(n)],
            "anonymous_id": [f"v{day}-{i}" for i in range(n)],
            "session_id": [f"s{day}-{i}" for i in range(n)],
            "event_type": ["decision"] * n,
            "decision_id": [f"d{day}-{i}" for i in range(n)],
            "action": ["a" if i % 2 else "b" for i in range(n)],
            "position": [i % 3 + 1 for i in range(n)],
            "price_level": [float(i) * 1.5 for i in range(n)],
            "site": ["shop"] * n,  # constant: dropped
            "region": regions,
            "affinity": [[0.1 * i, 1.0 - 0.1 * i, 0.5] for i in range(n)],  # element 2 constant
            "click": [i % 2 for i in range(n)],
        },
        schema_overrides={"affinity": pl.Array(pl.Float64, 3)},
    )


def no_orders() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "order_id": pl.String,
            "order_ts": pl.Datetime("us", "UTC"),
            "quantity": pl.Int32,
            "unit_price": pl.Float64,
        }
    )


FEATURES = {
    "numeric": ["price_level", "site_n"],
    "categorical": ["region", "site"],
    "lists": {"affinity": 3},
    "position": True,
    "top_k": 2,
}


def _config(**features: object) -> EtlConfig:
    return EtlConfig.model_validate(
        {
            "episode_mode": "one_step",
            "bots": {"enabled": False},
            "outcomes": {"click": "click"},
            "features": {**FEATURES, **features},
        }
    )


def test_source_features_layout_vocabulary_and_constants() -> None:
    res = build_transitions(impression_log(), no_orders(), _config(), as_of=dt.date(2026, 2, 1))
    names = res.manifest["feature_names"]
    builtin = FeatureSpec.from_config(EtlConfig(), ActionSpace(False, ("a", "b"))).names
    assert names[: len(builtin)] == builtin  # built-ins first, unchanged
    assert names[len(builtin) :] == [
        "price_level",
        "position",
        "affinity_0",
        "affinity_1",
        "region_north",
        "region_south",
        "region__other",
    ]
    feats = res.manifest["config"]["features"]
    # top 2 by frequency: north (4), south (2); east and west are "other"
    assert feats["vocabulary"] == {"region": ["north", "south"], "site": ["shop"]}
    # site_n is missing (null: 0 everywhere), site has one value, affinity_2 is 0.5 always
    assert feats["constant"] == ["affinity_2", "site__other", "site_n", "site_shop"]
    obs = res.transitions.sort("decision_id")["observation"].to_numpy()
    scale = res.manifest["scaling"]
    for name, raw in [
        ("price_level", np.arange(8) * 1.5),
        ("position", np.arange(8) % 3 + 1.0),
        ("affinity_1", 1.0 - 0.1 * np.arange(8)),
        ("region__other", np.array([0, 0, 0, 1, 0, 0, 1, 0], dtype=float)),
    ]:
        assert scale[name]["mean"] == pytest.approx(raw.mean())
        want = (raw - raw.mean()) / raw.std()
        np.testing.assert_allclose(obs[:, names.index(name)], want, rtol=1e-5, atol=1e-6)


def test_constant_features_kept_when_asked() -> None:
    res = build_transitions(
        impression_log(), no_orders(), _config(drop_constant=False), as_of=dt.date(2026, 2, 1)
    )
    assert "site_shop" in res.manifest["feature_names"]
    assert res.manifest["config"]["features"]["constant"] == []


def test_online_hook_matches_the_etl_bit_for_bit() -> None:
    log = impression_log()
    res = build_transitions(log, no_orders(), _config(), as_of=dt.date(2026, 2, 1))
    hook = ObservationBuilder.from_manifest(res.manifest)
    online = hook(log.head(0), no_orders(), log)
    etl = res.transitions.sort("decision_id")["observation"].to_numpy()
    order = np.argsort(log["decision_id"].to_numpy())
    assert online.dtype == np.float32
    assert np.array_equal(online[order], etl)


def test_nightly_runs_reuse_the_stored_vocabulary(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    days = [impression_log(0), impression_log(1, ["west"] * 8)]  # day 2: all "west"

    def arrive(day: int) -> None:
        folder = raw / "events" / f"date=2026-01-{5 + day:02d}"
        folder.mkdir(parents=True)
        days[day].write_parquet(folder / "part-00000.parquet")

    arrive(0)
    first = run_etl(raw, tmp_path / "out", _config(), date="2026-01-05", as_of="2026-02-01")
    arrive(1)
    night = run_etl(raw, tmp_path / "out", _config(), date="2026-01-06", as_of="2026-02-01")
    assert night.manifest["feature_names"] == first.manifest["feature_names"]
    assert night.manifest["config"]["features"]["vocabulary"]["region"] == ["north", "south"]
    names = night.manifest["feature_names"]
    # every decision of the second night is "other" (unscaled raw value 1 on each row)
    other = night.transitions["observation"].to_numpy()[:, names.index("region__other")]
    assert len(set(other.tolist())) == 1
    # a backfill of both days discovers afresh: "west" is now the most frequent value
    back = run_etl(raw, tmp_path / "back", _config(), as_of="2026-02-01")
    assert back.manifest["config"]["features"]["vocabulary"]["region"] == ["west", "north"]


def test_context_column_named_like_a_contract_column_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="'position' is a column of the raw-event"):
        EtlConfig(context_columns={"position": ["1", "2"]})
    with pytest.raises(ConfigError, match="'user_id' is a column of the raw-event contract"):
        config_from_dict({"etl": {"context_columns": {"user_id": ["a"]}}})
    with pytest.raises(ValidationError, match="declared twice"):
        EtlConfig.model_validate({"features": {"numeric": ["device"]}})
    with pytest.raises(ValidationError, match="not a list"):
        EtlConfig.model_validate({"features": {"lists": {"price": 2}}})


def test_unresolved_source_features_are_refused() -> None:
    cfg = EtlConfig.model_validate({"features": {"numeric": ["price_level"]}})
    with pytest.raises(EtlError, match="not resolved"):
        FeatureSpec.from_config(cfg, ActionSpace(False, ("a", "b")))


def test_feature_name_clash_is_named() -> None:
    cfg = EtlConfig.model_validate({"features": {"numeric": ["n_orders"], "constant": []}})
    with pytest.raises(EtlError, match="'n_orders' is built twice"):
        FeatureSpec.from_config(cfg, ActionSpace(False, ("a", "b")))
