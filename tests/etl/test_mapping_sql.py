"""Mappings by configuration alone: CSV options, derived columns (SQL), time formats, the
refusals of every mapping mistake (exit 2, the key and the expression named), orders-only input
and the ceilings per drop or quarantine reason."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from ecomrl.cli import main
from etl import EtlConfig, EtlError, run_etl
from etl.config import ColumnMapping, CsvOptions, TableMapping
from etl.io import discover, scan_table

CDNOW_HEAD = (
    "   customer_id date number_of_cds dollar_value\r\n"
    "   00001 19970101  1  11.77\r\n"
    "   00002 19970112  1  12.00\r\n"
    "   00002 19970112  5  77.00\r\n"
    "\r\n"
    "   00003 19970102  2  20.76\r\n"
)
CDNOW_MAPPING = """
[etl]
currencies = { USD = 1.0 }

[etl.mapping.orders.csv]
separator = "whitespace"

[etl.mapping.orders.derive]
order_id = "customer_id || '-' || CAST(date AS VARCHAR)"
line_no = "_row_nr"
unit_price = "dollar_value / number_of_cds"
session_id = "customer_id"

[etl.mapping.orders.rename]
customer_id = "user_id"
date = "order_ts"
number_of_cds = "quantity"

[etl.mapping.orders.parse_time]
order_ts = "yyyymmdd"

[etl.mapping.orders.constant]
status = "placed"
currency = "USD"
"""


def _orders_only(root: Path, text: str, name: str = "orders.txt") -> Path:
    (root / "raw" / "orders").mkdir(parents=True, exist_ok=True)
    path = root / "raw" / "orders" / name
    path.write_bytes(text.encode())
    return root / "raw"


def _etl(
    root: Path, raw: Path, config: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    cfg = root / "c.toml"
    cfg.write_text(config)
    code = main(
        [
            "etl",
            "--input",
            str(raw),
            "--out",
            str(root / "out"),
            "--config",
            str(cfg),
            "--as-of",
            "2026-12-01",
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def _scanned(raw: Path, config: EtlConfig) -> pl.DataFrame:
    return pl.concat([scan_table(f, config, continuous=False).collect() for f in discover(raw)])


# ----------------------------------------------------------------------------- what works
def test_whitespace_orders_with_derived_ids_prices_and_integer_dates(tmp_path: Path) -> None:
    import tomllib

    raw = _orders_only(tmp_path, CDNOW_HEAD)
    cfg = EtlConfig.model_validate(tomllib.loads(CDNOW_MAPPING)["etl"])
    got = _scanned(raw, cfg)
    assert got["order_id"].to_list() == [
        "00001-19970101",
        "00002-19970112",
        "00002-19970112",
        "00003-19970102",
    ]
    assert got["line_no"].to_list() == [1, 2, 3, 4]  # blank line skipped, header not a row
    assert got["unit_price"].to_list() == pytest.approx([11.77, 12.0, 15.4, 10.38])
    assert got["quantity"].to_list() == [1, 1, 5, 2]
    # one source column, two targets (the id is kept as written: leading zeros)
    assert (
        got["user_id"].to_list()
        == got["session_id"].to_list()
        == ["00001", "00002", "00002", "00003"]
    )
    assert got["order_ts"].dt.date().to_list() == [
        dt.date(1997, 1, 1),
        dt.date(1997, 1, 12),
        dt.date(1997, 1, 12),
        dt.date(1997, 1, 2),
    ]
    assert got["order_ts"].dt.hour().to_list() == [0, 0, 0, 0]
    assert not got["_naive_ts"].any()


@pytest.mark.parametrize(
    ("fmt", "values", "expected"),
    [
        ("yyyymmdd", ["19970101", "20240229"], ["1997-01-01T00:00:00", "2024-02-29T00:00:00"]),
        ("%d/%m/%Y", ["31/12/1998", "01/02/2024"], ["1998-12-31T00:00:00", "2024-02-01T00:00:00"]),
        ("epoch_s", ["852076800", "1700000000"], ["1997-01-01T00:00:00", "2023-11-14T22:13:20"]),
        (
            "epoch_ms",
            ["852076800000", "1700000000123"],
            ["1997-01-01T00:00:00", "2023-11-14T22:13:20.123000"],
        ),
        (
            "%d/%m/%Y %H:%M %z",
            ["01/02/2024 10:00 +0200", "01/02/2024 10:00 +0000"],
            ["2024-02-01T08:00:00", "2024-02-01T10:00:00"],
        ),
        (
            "iso",
            ["2024-02-01T10:00:00Z", "2024-02-01 12:00:00+02:00"],
            ["2024-02-01T10:00:00", "2024-02-01T10:00:00"],
        ),
    ],
)
def test_parse_time_formats(
    tmp_path: Path, fmt: str, values: list[str], expected: list[str]
) -> None:
    root = tmp_path / "raw" / "orders"
    root.mkdir(parents=True)
    pl.DataFrame(
        {"o": ["a", "b"], "t": values, "u": ["x", "y"], "q": [1, 1], "p": [1.0, 2.0]}
    ).write_csv(root / "o.csv", separator=";")
    mapping = ColumnMapping(
        orders=TableMapping(
            csv=CsvOptions(separator=";"),
            parse_time={"order_ts": fmt},
            rename={
                "o": "order_id",
                "t": "order_ts",
                "u": "user_id",
                "q": "quantity",
                "p": "unit_price",
            },
        )
    )
    got = _scanned(tmp_path / "raw", EtlConfig(mapping=mapping))
    assert [t.replace(tzinfo=None).isoformat() for t in got["order_ts"]] == expected
    assert not got["_naive_ts"].any()


def test_naive_times_in_a_pattern_follow_naive_timezone(tmp_path: Path) -> None:
    root = tmp_path / "raw" / "orders"
    root.mkdir(parents=True)
    (root / "o.tsv").write_text(
        "order\twhen\tcustomer\tqty\tprice\nA1\t01/07/2024 09:30\tc1\t2\t3.5\n"
    )
    base = {
        "csv": CsvOptions(separator="tab"),
        "parse_time": {"order_ts": "%d/%m/%Y %H:%M"},
        "rename": {
            "order": "order_id",
            "when": "order_ts",
            "customer": "user_id",
            "qty": "quantity",
            "price": "unit_price",
        },
    }
    naive = _scanned(
        tmp_path / "raw", EtlConfig(mapping=ColumnMapping(orders=TableMapping.model_validate(base)))
    )
    assert naive["_naive_ts"].to_list() == [True]  # quarantined later: no zone given
    london = _scanned(
        tmp_path / "raw",
        EtlConfig(
            mapping=ColumnMapping(
                orders=TableMapping.model_validate({**base, "naive_timezone": "Europe/London"})
            )
        ),
    )
    assert london["order_ts"][0] == dt.datetime(2024, 7, 1, 8, 30, tzinfo=dt.UTC)  # BST
    assert london["_naive_ts"].to_list() == [False]


def test_csv_without_header_takes_the_configured_names(tmp_path: Path) -> None:
    raw = _orders_only(
        tmp_path, "A1,2024-03-01T10:00:00Z,c1,2,4.5\nA2,2024-03-02T10:00:00Z,c2,1,9\n", "o.csv"
    )
    mapping = ColumnMapping(
        orders=TableMapping(
            csv=CsvOptions(
                has_header=False,
                columns=["order_id", "order_ts", "user_id", "quantity", "unit_price"],
            )
        )
    )
    got = _scanned(raw, EtlConfig(mapping=mapping))
    assert got["order_id"].to_list() == ["A1", "A2"]
    assert got["unit_price"].to_list() == [4.5, 9.0]


def test_orders_only_input_is_read_and_accounted_then_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _orders_only(tmp_path, CDNOW_HEAD)
    code, _, err = _etl(tmp_path, raw, CDNOW_MAPPING, capsys)
    assert code == 2
    assert "no decision events in 0 rows: map the events that record what the platform" in err
    assert "orders: 4 in = 4 used + 0 quarantined + 0 dropped" in err
    assert "docs/mapping.md" in err
    assert not (tmp_path / "out").exists()
    history = CDNOW_MAPPING.replace("[etl]\n", "[etl]\nrequire_decisions = false\n", 1)
    code, _, err = _etl(tmp_path, raw, history, capsys)
    assert code == 0, err
    counts = json.loads((tmp_path / "out" / "_manifest.json").read_text())["counts"]
    assert counts["orders"] == {"rows_in": 4, "used": 4, "quarantined": {}, "dropped": {}}


# ----------------------------------------------------------------------------- mistakes
_BAD = [
    (
        '[etl.mapping.orders.derive]\norder_ts = "date"\n',
        "[etl.mapping.orders.rename] date = 'order_ts': the file (or derive) already has a column "
        "'order_ts'",
        "a rename onto an existing column",
    ),
    (
        '[etl.mapping.orders.cast]\nquantity = "Integer64"\n',
        "[etl.mapping.orders.cast] quantity = 'Integer64': unknown type",
        "",
    ),
    (
        '[etl.mapping.orders.cast]\norder_ts = "Date"\n',
        "[etl.mapping.orders.cast] order_ts = 'Date': timestamps are not cast; give their format "
        "with [etl.mapping.orders.parse_time]",
        "",
    ),
    (
        '[etl.mapping.orders.derive]\nunit_price = "p +* 2"\n',
        '[etl.mapping.orders.derive] unit_price = "p +* 2": not a valid SQL expression',
        "",
    ),
    (
        '[etl.mapping.orders.derive]\nunit_price = "price / qty"\n',
        '[etl.mapping.orders.derive] unit_price = "price / qty": unable to find column "price"',
        "",
    ),
    (
        '[etl.mapping.orders.derive]\nunit_price = "u / q"\n',
        '[etl.mapping.orders.derive] unit_price = "u / q": ',
        "",
    ),
    (
        '[etl.mapping.orders.parse_time]\nquantity = "yyyymmdd"\n',
        "[etl.mapping.orders.parse_time] quantity = 'yyyymmdd': not a timestamp column",
        "",
    ),
    (
        '[etl.mapping.orders.parse_time]\norder_ts = "%d/%m/%Y"\n',
        "column 'order_ts': cannot parse '19970101' (row 1) as '%d/%m/%Y' "
        "([etl.mapping.orders.parse_time] order_ts)",
        "",
    ),
]


@pytest.mark.parametrize(("extra", "message", "note"), _BAD)
def test_mapping_mistakes_exit_2_naming_the_key_and_expression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, message: str, note: str
) -> None:
    raw = _orders_only(tmp_path, "o,date,u,q,p\nA,19970101,c1,2,3.0\n", "o.csv")
    config = (
        '[etl.mapping.orders.rename]\no = "order_id"\nu = "user_id"\nq = "quantity"\n'
        'p = "unit_price"\n'
    )
    config += 'date = "order_ts"\n' + extra
    if "parse_time" not in extra:
        config += '[etl.mapping.orders.parse_time]\norder_ts = "yyyymmdd"\n'
    code, _, err = _etl(tmp_path, raw, config, capsys)
    assert code == 2, err
    assert "orders/o.csv" in err and message in err, err
    assert "Traceback" not in err


def test_an_integer_date_mapped_straight_to_a_timestamp_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _orders_only(tmp_path, "o,date,u,q,p\nA,19970101,c1,2,3.0\n", "o.csv")
    config = (
        '[etl.mapping.orders.rename]\no = "order_id"\nu = "user_id"\nq = "quantity"\n'
        'p = "unit_price"\ndate = "order_ts"\n'
    )
    code, _, err = _etl(tmp_path, raw, config, capsys)
    assert code == 2
    assert "column 'order_ts' holds numbers" in err
    assert "[etl.mapping.orders.parse_time] order_ts = 'yyyymmdd'" in err
    # an explicit unit reads it as epoch microseconds: 1970, before min_date
    code, _, err = _etl(
        tmp_path,
        raw,
        config.replace(
            "[etl.mapping.orders.rename]",
            '[etl.mapping.orders]\ntime_unit = "us"\n[etl.mapping.orders.rename]',
        ),
        capsys,
    )
    assert code == 2
    assert (
        "column 'order_ts': '19970101' (row 1) reads as 1970-01-01 00:00:19 UTC through 'epoch_us'"
    ) in err
    assert "before [etl] min_date = 1990-01-01" in err
    # unless the config allows older times
    code, _, err = _etl(
        tmp_path,
        raw,
        "[etl]\nmin_date = 1960-01-01\nrequire_decisions = false\n"
        + config.replace(
            "[etl.mapping.orders.rename]",
            '[etl.mapping.orders]\ntime_unit = "us"\n[etl.mapping.orders.rename]',
        ),
        capsys,
    )
    assert code == 0, err


def test_epoch_seconds_read_as_milliseconds_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _orders_only(tmp_path, "o,t,u,q,p\nA,1700000000,c1,2,3.0\n", "o.csv")
    config = (
        '[etl.mapping.orders.rename]\no = "order_id"\nu = "user_id"\nq = "quantity"\n'
        'p = "unit_price"\nt = "order_ts"\n[etl.mapping.orders.parse_time]\n'
        'order_ts = "epoch_ms"\n'
    )
    code, _, err = _etl(tmp_path, raw, config, capsys)
    assert code == 2
    assert "reads as 1970-01-20" in err and "min_date" in err


def test_whitespace_row_with_a_missing_field_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _orders_only(tmp_path, CDNOW_HEAD + "   00004 19970103  3\r\n")
    code, _, err = _etl(tmp_path, raw, CDNOW_MAPPING, capsys)
    assert code == 2
    assert "orders/orders.txt: row 5 has 3 fields, expected 4" in err


def test_bad_options_are_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _orders_only(tmp_path, CDNOW_HEAD)
    for extra, message in (
        ('[etl.mapping.orders.parse_time]\norder_ts = "dd.mm"\n', "not a format"),
        ('[etl.mapping.orders.csv]\nseparator = "::"\n', "separator must be one character"),
        ("[etl.mapping.orders.csv]\nhas_header = false\n", "has_header = false needs columns"),
    ):
        code, _, err = _etl(tmp_path, raw, extra, capsys)
        assert code == 2 and message in err, err


# ----------------------------------------------------------------------------- ceilings
def _bot_logs(root: Path, n_bot: int, n_human: int) -> Path:
    """A decision per human session, and one session of n_bot events in one minute."""
    t0 = dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC)
    rows = []
    for i in range(n_human):
        rows.append(
            {
                "event_id": f"d{i}",
                "event_ts": t0 + dt.timedelta(minutes=i),
                "session_id": f"h{i}",
                "user_id": f"u{i}",
                "event_type": "decision",
                "decision_id": f"d{i}",
                "action": "none",
                "propensity": 0.25,
            }
        )
    for j in range(n_bot):
        rows.append(
            {
                "event_id": f"b{j}",
                "event_ts": t0 + dt.timedelta(seconds=j / 100),
                "session_id": "bot",
                "user_id": "bot",
                "event_type": "page_view",
                "decision_id": None,
                "action": None,
                "propensity": None,
            }
        )
    path = root / "raw" / "events" / "date=2026-03-02"
    path.mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(path / "part-00000.parquet")
    return root / "raw"


def test_a_reason_above_its_ceiling_stops_the_run_with_the_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _bot_logs(tmp_path, n_bot=70, n_human=30)  # 40 of 100 rows dropped as bot
    code, out, err = _etl(tmp_path, raw, "[etl]\nmax_reason_share = { bot = 0.2 }\n", capsys)
    assert code == 2
    assert (
        "40 of 100 events rows (40.0%) dropped as bot, above [etl] max_reason_share.bot = "
        "20.0%; nothing written"
    ) in err
    assert "events: 100 in = 60 used + 0 quarantined + 40 dropped (bot 40.0%)" in err
    assert not (tmp_path / "out").exists()
    code, out, err = _etl(tmp_path, raw, "[etl]\nmax_drop_share = 0.3\n", capsys)
    assert code == 2 and "above [etl] max_drop_share = 30.0%" in err
    code, out, err = _etl(tmp_path, raw, "", capsys)  # the default: 50 % per drop reason
    assert code == 0, err
    assert "dropped bot: 40 (40.00% of events)" in out


def test_a_quarantine_reason_can_have_its_own_ceiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _bot_logs(tmp_path, n_bot=0, n_human=50)
    frame = pl.read_parquet(next((raw / "events").rglob("*.parquet")))
    frame.with_columns(
        pl.when(pl.col("event_id") == "d3")
        .then(pl.lit(7.0))
        .otherwise(pl.col("propensity"))
        .alias("propensity")
    ).write_parquet(next((raw / "events").rglob("*.parquet")))
    code, out, err = _etl(tmp_path, raw, "", capsys)
    assert code == 0 and "quarantined bad_propensity: 1 (2.00% of events)" in out
    code, out, err = _etl(
        tmp_path, raw, "[etl]\nmax_reason_share = { bad_propensity = 0.01 }\n", capsys
    )
    assert code == 2
    assert "1 of 50 events rows (2.0%) quarantined as bad_propensity" in err


def test_library_errors_are_etl_errors(tmp_path: Path) -> None:
    raw = _orders_only(tmp_path, "o,date,u,q,p\nA,19970101,c1,2,3.0\n", "o.csv")
    mapping = ColumnMapping(
        orders=TableMapping(
            derive={"unit_price": "p * "},
            rename={"o": "order_id", "u": "user_id", "q": "quantity", "date": "order_ts"},
            parse_time={"order_ts": "yyyymmdd"},
        )
    )
    with pytest.raises(EtlError, match=r"derive\] unit_price = \"p \* \": not a valid SQL"):
        run_etl(raw, tmp_path / "out", EtlConfig(mapping=mapping))
