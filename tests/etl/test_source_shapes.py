"""Every source shape of docs/mapping.md runs with its config from configs/mappings/ on a small
fixture, through the command line: exit 0 with the expected accounting, or exit 2 with the
refusal and the accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecomrl.cli import main
from ecomrl.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "mappings"
FIXTURES = Path(__file__).parent / "fixtures"
REAL = ROOT / "tests" / "data" / "real_logs"

# config -> (input, exit code, what stdout (exit 0) or stderr (exit 2) must hold)
SHAPES = {
    "ga4": (
        FIXTURES / "ga4",
        0,
        [
            "wrote 3 transitions",
            "events          15 in =         14 used +       0 quarantined +       1 dropped",
            "dropped duplicate_event_id: 1 (6.67% of events)",
        ],
    ),
    "snowplow": (
        FIXTURES / "snowplow",
        0,
        ["wrote 2 transitions", "orders           2 in =          2 used"],
    ),
    "retailrocket": (
        FIXTURES / "retailrocket",
        0,
        [
            "wrote 0 transitions",
            "events          18 in =         18 used +       0 quarantined +       0 dropped",
        ],
    ),
    "online_retail": (
        FIXTURES / "online_retail",
        2,
        [
            "no decision events in 0 rows: map the events that record what the platform chose",
            "orders: 10 in = 8 used + 2 quarantined (null_identity 10.0%, reversal_without_parent "
            "10.0%) + 0 dropped",
        ],
    ),
    "cdnow": (
        REAL / "cdnow",
        2,
        ["no decision events in 0 rows", "orders: 200 in = 200 used + 0 quarantined + 0 dropped"],
    ),
    "retentioneering": (
        REAL / "retentioneering",
        2,
        ["no decision events in 512 rows", "events: 512 in = 511 used"],
    ),
}


def test_every_shipped_config_loads_and_has_a_shape_test() -> None:
    names = {p.stem for p in CONFIGS.glob("*.toml")}
    assert names - {"obd_bandit"} == set(SHAPES)  # obd_bandit: ecomrl import (test_steps)
    for path in CONFIGS.glob("*.toml"):
        load_config(path)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_source_shape_runs_with_its_config(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, expected_code, expected = SHAPES[name]
    code = main(
        [
            "etl",
            "--input",
            str(raw),
            "--out",
            str(tmp_path / "out"),
            "--config",
            str(CONFIGS / f"{name}.toml"),
            "--as-of",
            "2026-12-01",
        ]
    )
    out, err = capsys.readouterr()
    assert code == expected_code, err
    text = out if code == 0 else err
    for piece in expected:
        assert piece in text, text
    if code == 0:
        counts = json.loads((tmp_path / "out" / "_manifest.json").read_text())["counts"]
        for table in ("events", "orders"):
            if table in counts:
                c = counts[table]
                assert c["rows_in"] == c["used"] + sum(c["quarantined"].values()) + sum(
                    c["dropped"].values()
                )
    else:
        assert not (tmp_path / "out").exists()
