"""Small synthetic transition datasets in the ETL's contract, for tests and benchmarks.

Episodes of a toy promotion problem: features ``x ~ N(0, I)``; a softmax logging policy with
known logits ``x @ W`` (so its propensities are known exactly); reward ``x @ B[a] + noise`` for
discrete actions, or ``x[0] * a - 2 a^2 + noise`` for a continuous rate ``a`` drawn from a
Gaussian logging policy clipped to its bounds. Episodes end as terminal or timeout at random,
with a few one-step episodes of both kinds.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from offline_rl.data import TransitionManifest


def softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def logging_weights(n_features: int, n_actions: int, seed: int = 0) -> NDArray[np.float64]:
    """The logit weights ``W`` (features x actions) of the synthetic softmax logging policy."""
    rng = np.random.default_rng(seed + 1000)
    return np.asarray(rng.normal(0.0, 0.8, size=(n_features, n_actions)), dtype=np.float64)


def make_transitions(
    n_episodes: int = 200,
    n_features: int = 8,
    n_actions: int = 4,
    *,
    continuous: bool = False,
    max_len: int = 6,
    seed: int = 0,
    n_days: int = 10,
) -> tuple[pl.DataFrame, TransitionManifest]:
    """A transitions frame (the ETL's columns, sorted by episode and step) and its manifest."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, size=n_episodes)
    n = int(lengths.sum())
    episode = np.repeat(np.arange(n_episodes), lengths)
    starts = np.cumsum(lengths) - lengths
    step = np.arange(n) - np.repeat(starts, lengths)
    last = step == np.repeat(lengths - 1, lengths)
    ends_terminal = rng.random(n_episodes) < 0.5
    terminal = last & np.repeat(ends_terminal, lengths)
    timeout = last & ~terminal
    obs = rng.normal(size=(n, n_features)).astype(np.float32)
    weights = logging_weights(n_features, n_actions, seed)
    first_day = np.repeat(rng.integers(0, n_days, size=n_episodes), lengths)
    micros = (first_day * 86_400 + step * 3_600).astype(np.int64) * 1_000_000
    base = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
    index = pl.Series("i", np.arange(n))
    ep = pl.Series("e", episode)

    def ids(prefix: str, values: pl.Series, width: int) -> pl.Series:
        return (prefix + values.cast(pl.String).str.zfill(width)).alias(prefix)

    columns: dict[str, Any] = {
        "episode_id": ids("ep", ep, 6),
        "step": step.astype(np.int32),
        "decision_id": ids("d", index, 7),
        "user_id": ids("u", ep, 6),
        "session_id": ids("s", index, 7),
        "decision_ts": pl.Series(base + micros).cast(pl.Datetime("us", "UTC")),
    }
    if continuous:
        action_col, propensity, reward, space = _continuous_logs(rng, obs)
    else:
        action_col, propensity, reward, space = _discrete_logs(rng, obs, weights, n_actions, seed)
    frame = pl.DataFrame(columns).with_columns(
        pl.Series("observation", obs, dtype=pl.Array(pl.Float32, n_features)),
        action_col,
        pl.Series("reward", reward.astype(np.float64)),
        pl.Series("terminal", terminal),
        pl.Series("timeout", timeout),
        pl.Series("behaviour_propensity", propensity.astype(np.float64)),
        pl.lit("logged").alias("propensity_source"),
        pl.Series("revenue", np.maximum(reward, 0.0)),
        pl.Series("margin", reward.astype(np.float64)),
        pl.lit(0.0).alias("discount_cost"),
        pl.lit(0.0).alias("returns"),
    )
    manifest = TransitionManifest.from_dict(
        {
            "schema_version": 1,
            "scenario": "synthetic",
            "episode_mode": "promotion",
            "gamma": 0.9,
            "feature_names": [f"f{i}" for i in range(n_features)],
            "scaling": {},
            "action_space": space,
            "reward": {"name": "synthetic"},
        }
    )
    return frame, manifest


def _continuous_logs(
    rng: np.random.Generator, obs: np.ndarray
) -> tuple[pl.Series, np.ndarray, np.ndarray, dict[str, Any]]:
    """A Gaussian logging policy on [0, 0.3] around a mean linear in the first feature, and a
    quadratic reward: (actions, densities, rewards, action space)."""
    n = obs.shape[0]
    low, high = 0.0, 0.3
    mean = np.clip(0.15 + 0.05 * obs[:, 0], low, high)
    sd = 0.05
    actions = np.clip(mean + rng.normal(0.0, sd, size=n), low, high).astype(np.float32)
    density = np.exp(-0.5 * ((actions - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
    reward = 10.0 * (obs[:, 0] * actions - 2.0 * actions**2) + rng.normal(0, 0.1, size=n)
    action_col = pl.Series("action", actions.reshape(n, 1), dtype=pl.Array(pl.Float32, 1))
    return action_col, density, reward, {"type": "continuous", "low": [low], "high": [high]}


def _discrete_logs(
    rng: np.random.Generator, obs: np.ndarray, weights: np.ndarray, n_actions: int, seed: int
) -> tuple[pl.Series, np.ndarray, np.ndarray, dict[str, Any]]:
    """A softmax logging policy linear in the features, and a reward linear in them per action:
    (actions, propensities, rewards, action space)."""
    n = obs.shape[0]
    probs = softmax(obs.astype(np.float64) @ weights)
    cum = probs.cumsum(axis=1)
    actions_i = (rng.random((n, 1)) > cum).sum(axis=1).clip(0, n_actions - 1)
    effects = np.random.default_rng(seed + 7).normal(0.0, 1.0, size=(n_actions, obs.shape[1]))
    reward = (obs * effects[actions_i]).sum(axis=1) + rng.normal(0, 0.1, size=n)
    action_col = pl.Series("action", actions_i.astype(np.int32))
    space = {"type": "discrete", "n": n_actions, "labels": [f"a{i}" for i in range(n_actions)]}
    return action_col, probs[np.arange(n), actions_i], reward, space


def make_purchase_bandit(
    n_episodes: int,
    buy_probability: Any,
    *,
    purchase: float = 30.0,
    n_features: int = 4,
    seed: int = 0,
) -> tuple[pl.DataFrame, TransitionManifest]:
    """One-step episodes of ``make_transitions`` whose reward is a purchase worth ``purchase``
    with a probability that depends on the action only (``buy_probability``: one number for
    three actions, or one per action), else 0: ``E[r | s, a] = purchase * buy_probability[a]``
    in every state. The shape of promotion rewards (mostly nothing, sometimes an order), with a
    closed form."""
    p = np.asarray(buy_probability, dtype=np.float64).reshape(-1)
    n_actions = 3 if p.size == 1 else p.size
    frame, manifest = make_transitions(
        n_episodes, n_features=n_features, n_actions=n_actions, max_len=1, seed=seed
    )
    rng = np.random.default_rng(seed + 7)
    chance = np.broadcast_to(p, (n_actions,))[frame["action"].to_numpy()]
    reward = np.where(rng.random(frame.height) < chance, purchase, 0.0)
    return frame.with_columns(pl.Series("reward", reward)), manifest


def write_dataset(frame: pl.DataFrame, manifest: TransitionManifest, out: Any) -> None:
    """Write ``frame`` and its manifest in the ETL's layout (partitioned by decision date)."""
    import json
    from pathlib import Path

    root = Path(out)
    dated = frame.with_columns(date=pl.col("decision_ts").dt.date().cast(pl.String))
    for (day,), part in dated.group_by(["date"], maintain_order=True):
        folder = root / "transitions" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        part.drop("date").write_parquet(folder / "part-00000.parquet")
    (root / "_manifest.json").write_text(json.dumps(manifest.data, indent=2), encoding="utf-8")
