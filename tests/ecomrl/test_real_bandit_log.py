"""Real public data through ``ecomrl import`` and ``ecomrl evaluate``: the Open Bandit Dataset
sample (tests/data/README.md), mapped by configs/mappings/obd_bandit.toml alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ecomrl.cli import main

ROOT = Path(__file__).resolve().parents[2]
OBD = ROOT / "tests" / "data" / "obd_random_all.parquet"


@pytest.mark.slow
def test_open_bandit_dataset_imports_and_evaluates_to_its_brute_force_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    data = tmp_path / "obd"
    assert (
        main(
            [
                "import",
                "--input",
                str(OBD),
                "--out",
                str(data),
                "--config",
                "configs/mappings/obd_bandit.toml",
            ]
        )
        == 0
    )
    manifest = json.loads((data / "_manifest.json").read_text())
    assert manifest["counts"]["steps"] == {
        "rows_in": 10000,
        "used": 10000,
        "quarantined": {},
        "dropped": {},
    }
    assert manifest["action_space"]["labels"] == [str(i) for i in range(80)]
    assert manifest["feature_names"][0] == "position"
    assert len(manifest["feature_names"]) == 1 + sum(
        len(v) for v in manifest["categories"].values()
    )

    code = main(
        [
            "evaluate",
            "--data",
            str(data),
            "--policy",
            "rule:constant=25",
            "--policy",
            "rule:behaviour",
            "--out",
            str(tmp_path / "ope"),
        ]
    )
    assert code in (0, 3)
    ope = json.loads((tmp_path / "ope" / "ope.json").read_text())
    logs = pl.read_parquet(OBD)
    click = logs["click"].to_numpy().astype(float)
    # on-policy value: the mean click; importance sampling of "always item 25" by brute force
    assert ope["behaviour"]["estimate"] == pytest.approx(click.mean(), abs=1e-12)
    weight = (logs["item_id"].to_numpy() == 25) / logs["propensity_score"].to_numpy()
    estimates = {e["estimator"]: e["estimate"] for e in ope["candidates"][0]["estimates"]}
    assert estimates["is"] == pytest.approx(float(np.mean(weight * click)), abs=1e-12)
    assert estimates["wis"] == pytest.approx(
        float((weight * click).sum() / weight.sum()), abs=1e-12
    )
    behaviour = {e["estimator"]: e["estimate"] for e in ope["candidates"][1]["estimates"]}
    assert behaviour["is"] == pytest.approx(click.mean(), abs=1e-12)
