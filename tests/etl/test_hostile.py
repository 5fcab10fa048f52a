"""Hostile inputs (issue 22): future-dated rows and stray folders, non-finite and absurd numbers,
undecodable files, logs without decisions, unknown context values, and a property-based test of
the reader and validator: every input ends in exit 0 with every row accounted for, or exit 2
naming the file; never exit 1."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecomrl.cli import main
from etl import EtlConfig, EtlError, build_transitions, run_etl
from tests.etl.synth import make_logs, write_raw

SAMPLE = Path(__file__).resolve().parents[2] / "data_samples" / "promotion"
LOOSE = EtlConfig(max_quarantine_share=1.0)
FUTURE = dt.datetime(2099, 1, 10, 12, tzinfo=dt.UTC)


def _labels(trans: pl.DataFrame) -> dict[str, int]:
    return {
        "terminal": int(trans["terminal"].sum()),
        "timeout": int(trans["timeout"].sum()),
        "transitions": trans.height,
    }


def _shifted(rows: pl.DataFrame, prefix: str, ts: dt.datetime, ingest: dt.datetime) -> pl.DataFrame:
    return rows.with_columns(
        (pl.lit(prefix) + pl.col("event_id")).alias("event_id"),
        pl.lit(ts).cast(rows.schema["event_ts"]).alias("event_ts"),
        pl.lit(ingest).cast(rows.schema["ingest_ts"]).alias("ingest_ts"),
    )


def _sample_copy(root: Path) -> Path:
    if not (SAMPLE / "events").is_dir():
        pytest.skip("no bundled sample")
    for table in ("events", "orders"):
        shutil.copytree(SAMPLE / table, root / table)
    return root


# ----------------------------------------------------------------------------- 22.1 future rows
def test_future_rows_and_stray_folders_leave_the_labels_alone(tmp_path: Path) -> None:
    raw = _sample_copy(tmp_path / "raw")
    clean = run_etl(raw, tmp_path / "clean")
    first = sorted((raw / "events").glob("date=*/*.parquet"))[3]
    rows = pl.read_parquet(first)
    # 40 events (decisions among them) with event_ts and ingest_ts in 2099, in a normal folder
    _shifted(rows.head(40), "f-", FUTURE, FUTURE).write_parquet(first.parent / "part-f.parquet")
    # one event in a stray folder date=2099-01-10
    stray = raw / "events" / "date=2099-01-10"
    stray.mkdir()
    _shifted(rows.head(1), "s-", FUTURE, FUTURE).write_parquet(stray / "part-00000.parquet")
    # an event stamped an hour after it arrived (a device clock running ahead)
    ts = rows["ingest_ts"][5] + dt.timedelta(hours=1)
    _shifted(rows.slice(5, 1), "k-", ts, rows["ingest_ts"][5]).write_parquet(
        first.parent / "part-k.parquet"
    )
    res = run_etl(raw, tmp_path / "hostile")
    assert _labels(res.transitions) == _labels(clean.transitions)
    assert res.transitions.equals(clean.transitions)
    assert res.counts["events"]["quarantined"] == {"future_event": 42}
    q = res.quarantine
    assert set(q["column"]) == {"event_ts"}
    assert set(q["source_file"]) == {
        first.relative_to(raw).parent.as_posix() + "/part-f.parquet",
        first.relative_to(raw).parent.as_posix() + "/part-k.parquet",
        "events/date=2099-01-10/part-00000.parquet",
    }


def test_the_run_date_bounds_the_data(tmp_path: Path) -> None:
    logs = make_logs(20, 20, seed=3)
    last = logs.events["ingest_ts"].max()
    assert isinstance(last, dt.datetime)
    as_of = last.date() - dt.timedelta(days=3)
    cut = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    later = logs.events.filter(pl.col("event_ts") >= cut).height
    later += logs.orders.filter(pl.col("order_ts") >= cut).height
    assert later > 0
    res = build_transitions(logs.events, logs.orders, LOOSE, as_of=as_of)
    quarantined = {
        t: res.counts[t]["quarantined"].get("future_event", 0) for t in ("events", "orders")
    }
    # every row after the end of the run date (tolerance: 10 minutes) and nothing else
    assert sum(quarantined.values()) == later
    # the same as the logs cut at the run date: the data ends with the run date
    ev = logs.events.filter(pl.col("event_ts") < cut)
    od = logs.orders.filter(pl.col("order_ts") < cut)
    assert res.transitions.equals(build_transitions(ev, od, LOOSE).transitions)


# ----------------------------------------------------------------------------- 22.2 numbers
def test_non_finite_and_absurd_numbers_are_quarantined_with_column_and_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = make_logs(10, 8, seed=2)
    prices = logs.orders["unit_price"].to_list()
    prices[0:3] = [float("nan"), float("inf"), 1e300]
    orders = logs.orders.with_columns(pl.Series("unit_price", prices))
    priced = logs.events["price"].is_not_null().arg_true()
    decision = logs.events["event_type"].eq("decision").arg_true()
    ev_price = logs.events["price"].to_list()
    ev_price[priced[0]] = float("nan")
    prop = logs.events["propensity"].to_list()
    prop[decision[0]] = float("-inf")
    events = logs.events.with_columns(pl.Series("price", ev_price), pl.Series("propensity", prop))
    write_raw(type(logs)(events, orders), tmp_path / "raw")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[etl]\nmax_quarantine_share = 1.0\n")
    code = main(
        [
            "etl",
            "--input",
            str(tmp_path / "raw"),
            "--out",
            str(tmp_path / "out"),
            "--config",
            str(cfg),
        ]
    )
    assert code == 0, capsys.readouterr().err
    q = pl.read_parquet(tmp_path / "out" / "quarantine" / "**" / "*.parquet")
    got = sorted(zip(q["source_table"], q["reason"], q["column"], strict=True))
    assert got == [
        ("events", "non_finite", "price"),
        ("events", "non_finite", "propensity"),
        ("orders", "non_finite", "unit_price"),
        ("orders", "non_finite", "unit_price"),
        ("orders", "out_of_range", "unit_price"),
    ]
    assert (q["row_number"] >= 1).all() and q["source_file"].str.contains("date=").all()


# ----------------------------------------------------------------------------- 22.3 readers
def _run(raw: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["etl", "--input", str(raw), "--out", str(out), *extra])
    return code, capsys.readouterr().err


def _small_raw(root: Path, fmt: str = "parquet") -> Path:
    return write_raw(make_logs(6, 6, seed=4), root, fmt=fmt)


def test_corrupt_parquet_pages_with_a_valid_footer_name_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _small_raw(tmp_path / "raw")
    victim = sorted((raw / "events").glob("date=*/*.parquet"))[2]
    frame = pl.read_parquet(victim)
    frame.write_parquet(victim, compression="uncompressed", statistics=False)
    data = bytearray(victim.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for i in range(8, len(data) - footer, 3):  # every data page, not the footer
        data[i] = (data[i] * 31 + 7) % 256
    victim.write_bytes(bytes(data))
    code, err = _run(raw, tmp_path / "out", capsys)
    assert code == 2, err
    assert victim.relative_to(raw).as_posix() in err


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_invalid_utf8_names_the_file(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _small_raw(tmp_path / "raw", fmt)
    victim = sorted((raw / "events").glob(f"date=*/*.{fmt}"))[1]
    frame = pl.read_csv(victim) if fmt == "csv" else pl.read_parquet(victim)
    marker = "QQQQQQQQ"
    frame = frame.with_columns(pl.lit(marker).alias("item_category"))
    if fmt == "csv":
        frame.write_csv(victim)
    else:
        frame.write_parquet(victim, compression="uncompressed", statistics=False)
    victim.write_bytes(victim.read_bytes().replace(marker.encode(), b"\xff\xfe\xfd\xfc" * 2))
    code, err = _run(raw, tmp_path / "out", capsys)
    assert code == 2, err
    assert victim.relative_to(raw).as_posix() in err


def test_an_invalid_partition_folder_names_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _small_raw(tmp_path / "raw")
    first = sorted((raw / "orders").glob("date=*"))[0]
    first.rename(first.with_name("date=2026-13-45"))
    code, err = _run(raw, tmp_path / "out", capsys)
    assert code == 2 and "date=2026-13-45" in err and "orders/" in err, err


# ----------------------------------------------------------------------------- 22.6 silence
def test_logs_without_decision_events_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = make_logs(6, 6, seed=4)
    events = logs.events.filter(pl.col("event_type") != "decision")
    write_raw(type(logs)(events, logs.orders), tmp_path / "raw")
    code, err = _run(tmp_path / "raw", tmp_path / "out", capsys)
    assert code == 2
    assert (
        f"no decision events in {events.height} rows: map the events that record what the "
        "platform chose" in err
    )
    with pytest.raises(EtlError, match="no decision events"):
        build_transitions(events, logs.orders)


def test_unknown_context_values_are_counted_per_column(tmp_path: Path) -> None:
    logs = make_logs(10, 8, seed=5)
    decision = logs.events["event_type"].eq("decision").arg_true()
    device = logs.events["device"].to_list()
    channel = logs.events["channel"].to_list()
    for i in decision[:3]:
        device[i] = "<script>alert(1)</script>"
    channel[decision[3]] = "tv\x00\u202e"
    events = logs.events.with_columns(pl.Series("device", device), pl.Series("channel", channel))
    write_raw(type(logs)(events, logs.orders), tmp_path / "raw")
    res = run_etl(tmp_path / "raw", tmp_path / "out")
    assert res.counts["decisions"]["unknown_context"] == {"channel": 1, "device": 3}
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["counts"]["decisions"]["unknown_context"] == {"channel": 1, "device": 3}


# ----------------------------------------------------------------------------- property test
_BASE = make_logs(4, 5, seed=6)
_VALUES: list[Any] = [
    None,
    float("nan"),
    float("inf"),
    float("-inf"),
    1e300,
    -5,
    0,
    "",
    "garbage",
    "2099-01-01T00:00:00+00:00",
    "1970-01-01 00:00:00",
    "\u202e<b>x</b>\x00",
    "9" * 40,
]
_FOLDERS = ["date=2026-13-45", "date=abc", "date=2099-01-01", "date=1970-01-01", "misc"]


@st.composite
def _corruption(draw: st.DrawFn) -> dict[str, Any]:
    table = draw(st.sampled_from(["events", "orders"]))
    frame = _BASE.events if table == "events" else _BASE.orders
    return {
        "table": table,
        "cells": draw(
            st.lists(
                st.tuples(
                    st.integers(0, frame.height - 1),
                    st.sampled_from(frame.columns),
                    st.sampled_from(_VALUES),
                ),
                max_size=4,
            )
        ),
        "duplicate": draw(st.lists(st.integers(0, frame.height - 1), max_size=2)),
        "folder": draw(st.none() | st.sampled_from(_FOLDERS)),
        "bad_bytes": draw(st.booleans()),
        "fmt": draw(st.sampled_from(["csv", "parquet"])),
    }


def _corrupted(c: dict[str, Any], root: Path) -> int:
    """Write the base logs with the corruption applied; returns the number of input rows."""
    frame = _BASE.events if c["table"] == "events" else _BASE.orders
    typed = all(
        v is None or (isinstance(v, int | float) and frame.schema[col].is_numeric())
        for _, col, v in c["cells"]
    )
    if c["fmt"] == "csv" or not typed:  # values of another type: a CSV file of strings
        frame = frame.with_columns(pl.all().cast(pl.String))
        c = {**c, "fmt": "csv"}
    for row, col, value in c["cells"]:
        values = frame[col].to_list()
        values[row] = str(value) if value is not None and frame.schema[col] == pl.String else value
        frame = frame.with_columns(pl.Series(col, values, dtype=frame.schema[col], strict=False))
    frame = pl.concat([frame, *[frame.slice(i, 1) for i in c["duplicate"]]])
    write_raw(_BASE, root, fmt="parquet")
    target = root / c["table"]
    shutil.rmtree(target)
    files = target / "date=2026-01-06"
    files.mkdir(parents=True, exist_ok=True)
    path = files / f"part-00000.{c['fmt']}"
    if c["fmt"] == "csv":
        frame.write_csv(path)
        if c["bad_bytes"]:
            path.write_bytes(path.read_bytes().replace(b"e", b"\xff", 1))
    else:
        frame.write_parquet(path)
    if c["folder"] is not None:
        files.rename(files.with_name(c["folder"]))
    return _BASE.events.height + _BASE.orders.height + len(c["duplicate"])


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(c=_corruption())
def test_any_corruption_ends_in_exit_0_with_every_row_or_exit_2_naming_the_file(
    c: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path_factory.mktemp("prop")
    rows_in = _corrupted(c, root / "raw")
    cfg = root / "c.toml"
    cfg.write_text("[etl]\nmax_quarantine_share = 1.0\n")
    code = main(
        ["etl", "--input", str(root / "raw"), "--out", str(root / "out"), "--config", str(cfg)]
    )
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        assert f"{c['table']}/" in err or "no decision events" in err, err
        return
    counts = json.loads((root / "out" / "_manifest.json").read_text())["counts"]
    total = 0
    for table in ("events", "orders"):
        t = counts[table]
        total += t["rows_in"]
        assert t["rows_in"] == t["used"] + sum(t["quarantined"].values()) + sum(
            t["dropped"].values()
        )
    assert total == rows_in
