"""The root configuration: TOML in, validated model out, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecomrl.config import EcomrlConfig, config_from_dict, load_config
from ecomrl.errors import ConfigError


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert isinstance(config, EcomrlConfig)
    assert config.simulator.scenario == "promotion"


def test_toml_values_are_loaded(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[simulator]\nscenario = "recommendation"\nn_users = 17\n')
    config = load_config(path)
    assert config.simulator.scenario == "recommendation"
    assert config.simulator.n_users == 17


def test_wrong_type_names_the_key_and_the_type(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[simulator]\nn_users = "many"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "simulator.n_users" in message
    assert "integer" in message
    assert str(path) in message


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown key 'simulator.n_user'"):
        config_from_dict({"simulator": {"n_user": 3}})


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[simulator\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_shipped_configs_validate() -> None:
    root = Path(__file__).resolve().parents[2]
    for path in [root / "configs" / "nightly.toml", root / "ecomrl" / "demo.toml"]:
        config = load_config(path)
        assert config.run.eval_days >= 1, path


@pytest.mark.parametrize("name", ["dm", "is", "fqe"])
def test_a_primary_estimator_without_measured_coverage_is_refused(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"evaluate": {"primary_estimator": name}})
    message = str(info.value)
    assert "evaluate.primary_estimator" in message
    assert f"'{name}'" in message and "90 %" in message


def test_the_gate_estimators_are_accepted() -> None:
    for name in ("mdr", "mis", "dr", "wdr", "pdis", "wpdis", "wis"):
        assert config_from_dict({"evaluate": {"primary_estimator": name}}).evaluate
