"""The state builder: no leakage, brute-force reference values, and one implementation online
and offline."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from etl import EtlConfig, EtlResult, ObservationBuilder, build_transitions
from tests.etl.synth import Logs


def _obs(result: EtlResult) -> dict[str, np.ndarray]:
    tr = result.transitions
    return dict(zip(tr["decision_id"], tr["observation"].to_numpy(), strict=True))


def _decisions(logs: Logs) -> pl.DataFrame:
    return logs.events.filter(pl.col("event_type") == "decision").sort("event_ts")


def test_perturbing_the_future_leaves_the_observation_unchanged(logs: Logs,
                                                                result: EtlResult) -> None:
    base = _obs(result)
    decisions = _decisions(logs)
    scaling = ObservationBuilder.from_manifest(result.manifest).scaling
    rng = np.random.default_rng(0)
    for i in rng.choice(decisions.height, 5, replace=False):
        row = decisions.row(int(i), named=True)
        t = row["event_ts"]
        after = pl.col("event_ts") > t
        # change everything after the decision: types, prices, amounts, identities, new rows
        ev = logs.events.with_columns(
            pl.when(after & (pl.col("event_type") != "decision")).then(pl.lit("add_to_cart"))
            .otherwise(pl.col("event_type")).alias("event_type"),
            pl.when(after).then(pl.col("price") * 3).otherwise(pl.col("price")).alias("price"),
            pl.when(after).then(pl.lit("u9999")).otherwise(pl.col("user_id")).alias("user_id"),
        )
        od = logs.orders.with_columns(
            pl.when(pl.col("order_ts") > t).then(pl.col("unit_price") * 7)
            .otherwise(pl.col("unit_price")).alias("unit_price"),
            pl.when(pl.col("order_ts") > t).then(pl.lit("u9999"))
            .otherwise(pl.col("user_id")).alias("user_id"),
        )
        perturbed = _obs(build_transitions(ev, od, scaling=scaling))
        np.testing.assert_array_equal(perturbed[row["decision_id"]], base[row["decision_id"]])
        # and the perturbation did change later decisions of that user
        later = decisions.filter(
            (pl.col("anonymous_id") == row["anonymous_id"]) & (pl.col("event_ts") > t)
        )
        for dec in later["decision_id"]:
            if dec in perturbed:
                assert not np.array_equal(perturbed[dec], base[dec])


def test_online_hook_equals_etl_observation(logs: Logs, result: EtlResult) -> None:
    builder = ObservationBuilder.from_manifest(result.manifest)
    base = _obs(result)
    decisions = _decisions(logs)
    # decision rounds: every decision at a time, all rows strictly before it
    for i in range(0, decisions.height, 9):
        row = decisions.slice(i, 1)
        t = row["event_ts"][0]
        got = builder(
            logs.events.filter(pl.col("event_ts") < t), logs.orders.filter(pl.col("order_ts") < t),
            row.drop("event_type"),
        )
        assert got.dtype == np.float32 and got.shape == (1, len(builder.feature_names))
        np.testing.assert_array_equal(got[0], base[row["decision_id"][0]])


def test_features_match_a_brute_force_reference(logs: Logs, result: EtlResult) -> None:
    builder = ObservationBuilder.from_manifest(result.manifest)
    names = builder.feature_names
    window = dt.timedelta(days=EtlConfig().feature_window_days)
    tr = result.transitions
    raw = tr["observation"].to_numpy() * builder.scaling.std + builder.scaling.mean
    checked = 0
    for k, row in enumerate(tr.iter_rows(named=True)):
        if not row["user_id"].startswith("u"):
            continue
        user, t = row["user_id"], row["decision_ts"]
        if logs.events.filter((pl.col("event_ts") < t) & (pl.col("user_id").is_null())
                              & (pl.col("anonymous_id") == "a" + user[1:])).height:
            continue  # anonymous history: stitching rules, tested elsewhere
        ev = [e for e in logs.events.iter_rows(named=True)
              if e["user_id"] == user and t - window <= e["event_ts"] < t]
        od = [o for o in logs.orders.iter_rows(named=True)
              if o["user_id"] == user and t - window <= o["order_ts"] < t]
        placed = [o for o in od if o["status"] == "placed"]
        want = {
            "n_events": len(ev),
            "n_views": sum(e["event_type"] in ("page_view", "view_item") for e in ev),
            "n_carts": sum(e["event_type"] == "add_to_cart" for e in ev),
            "n_orders": len({o["order_id"] for o in placed}),
            "n_offers": sum(e["event_type"] == "decision" and e["action"] != "none" for e in ev),
            "monetary": sum((1 if o["status"] == "placed" else -1)
                            * (o["quantity"] * o["unit_price"] - o["discount_amount"])
                            for o in od),
            "hour_sin": np.sin(2 * np.pi * (t.hour * 3600 + t.minute * 60 + t.second
                                            + t.microsecond / 1e6) / 86400),
            "dow_cos": np.cos(2 * np.pi * t.weekday() / 7),
        }
        for name, value in want.items():
            assert raw[k, names.index(name)] == pytest.approx(value, abs=1e-4), (name, row)
        checked += 1
    assert checked > 50


def test_context_columns_are_one_hot(result: EtlResult, logs: Logs) -> None:
    builder = ObservationBuilder.from_manifest(result.manifest)
    names = builder.feature_names
    tr = result.transitions.join(
        logs.events.select("decision_id", "device", "channel"), on="decision_id"
    )
    raw = tr["observation"].to_numpy() * builder.scaling.std + builder.scaling.mean
    for k, row in enumerate(tr.iter_rows(named=True)):
        assert raw[k, names.index(f"device_{row['device']}")] == pytest.approx(1.0)
        assert raw[k, names.index(f"channel_{row['channel']}")] == pytest.approx(1.0)
    assert np.allclose(raw[:, [names.index(f"device_{d}") for d in ("mobile", "desktop", "app")]]
                       .sum(axis=1), 1.0)


def test_scaling_is_stored_and_reused(logs: Logs, result: EtlResult) -> None:
    obs = result.transitions["observation"].to_numpy()
    scaling = result.manifest["scaling"]
    assert set(scaling) == set(result.manifest["feature_names"])
    varying = obs.std(axis=0) > 0
    assert np.allclose(obs.mean(axis=0)[varying], 0.0, atol=1e-4)
    builder = ObservationBuilder.from_manifest(result.manifest)
    half = logs.events.filter(pl.col("event_ts") < pl.col("event_ts").median())
    again = build_transitions(half, logs.orders, scaling=builder.scaling)
    assert again.manifest["scaling"] == scaling


def test_hook_from_a_manifest_read_back_from_json_keeps_the_layout(
    logs: Logs, result: EtlResult
) -> None:
    """A manifest written to disk (keys sorted) must build the very same feature vector.

    Regression: the context one-hots once followed the order of the config's table, which a
    JSON round trip with sorted keys changed (device/channel swapped online only).
    """
    import json

    config = EtlConfig(context_columns={"device": ["mobile", "app"], "channel": ["email", "x"]})
    swapped = build_transitions(logs.events, logs.orders, config)
    on_disk = json.loads(json.dumps(swapped.manifest, sort_keys=True, default=str))
    builder = ObservationBuilder.from_manifest(on_disk)
    assert builder.feature_names == swapped.manifest["feature_names"]
    base = _obs(swapped)
    decisions = _decisions(logs)
    row = decisions.slice(decisions.height // 2, 1)
    t = row["event_ts"][0]
    got = builder(
        logs.events.filter(pl.col("event_ts") < t), logs.orders.filter(pl.col("order_ts") < t),
        row.drop("event_type"),
    )
    np.testing.assert_array_equal(got[0], base[row["decision_id"][0]])


@pytest.mark.parametrize("wide", [False, True])
def test_packed_keys_find_the_history_strictly_before_each_query(wide: bool) -> None:
    """The state builder's as-of search (packed 64-bit keys + binary search) against brute force:
    for every query (identity, time), the history rows of that identity strictly before the time.
    ``wide`` forces identity codes so large that times must be stored as ranks."""
    from etl.features import _pack, _search

    rng = np.random.default_rng(3)
    n_ids = 40
    kid_h = rng.integers(0, n_ids, 2_000)
    t_h = rng.integers(1_700_000_000_000_000, 1_700_000_000_000_000 + 10**12, 2_000)
    t_h[::7] = t_h[1::7][: len(t_h[::7])]  # ties between history rows
    kid_q = rng.integers(0, n_ids, 300)
    t_q = np.concatenate([rng.choice(t_h, 150), rng.integers(t_h.min() - 5, t_h.max() + 5, 150)])
    if wide:
        kid_h = kid_h + (1 << 40)
        kid_q = kid_q + (1 << 40)
    packed = _pack(kid_h, t_h, kid_q, [t_q], flag_bits=2)
    assert (packed.ranked is not None) is wide
    keys = np.sort(packed.hist)
    start, (pos,) = _search(keys, packed)
    for i in range(len(kid_q)):
        expected = np.sort(t_h[(kid_h == kid_q[i]) & (t_h < t_q[i])])
        got = packed.time_of(keys[start[i]:pos[i]])
        np.testing.assert_array_equal(got, expected)


def test_recommendation_category_features_match_a_brute_force_count() -> None:
    """Per category: the user's item views and earlier recommendations in the window before each
    decision, counted row by row from the raw logs, equal the ETL's features; the online hook
    gives the same observations."""
    from simulator import SimulatorConfig, simulate

    sim = SimulatorConfig(scenario="recommendation", n_users=60, seed=4, days=10)
    logs = simulate(sim)
    config = EtlConfig(scenario="recommendation")
    result = build_transitions(logs.events, logs.orders, config)
    names = result.manifest["feature_names"]
    scaling = result.manifest["scaling"]
    obs = np.asarray(result.transitions["observation"].to_list(), dtype=np.float64)
    raw = obs * np.array([scaling[n]["std"] for n in names]) + np.array(
        [scaling[n]["mean"] for n in names])
    ev = logs.events
    window = dt.timedelta(days=config.feature_window_days)
    rows = result.transitions.select("user_id", "decision_ts").to_dicts()
    counted = 0
    for i in range(0, len(rows), 7):  # every 7th decision
        user, t = rows[i]["user_id"], rows[i]["decision_ts"]
        mine = ev.filter((pl.col("user_id") == user) & (pl.col("event_ts") < t)
                         & (pl.col("event_ts") >= t - window))
        for k in range(sim.n_categories):
            label = f"cat_{k:02d}"
            views = mine.filter((pl.col("event_type") == "view_item")
                                & (pl.col("item_category") == label)).height
            recs = mine.filter((pl.col("event_type") == "decision")
                               & (pl.col("action") == label)).height
            counted += views + recs
            assert raw[i, names.index(f"views_{label}")] == pytest.approx(views, abs=1e-3)
            assert raw[i, names.index(f"recommended_{label}")] == pytest.approx(recs, abs=1e-3)
    assert counted > 100  # the check saw real histories, not only zeros
    hook = ObservationBuilder.from_manifest(result.manifest)
    assert hook.feature_names == names
