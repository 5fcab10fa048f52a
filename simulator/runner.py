"""The decision-round loop shared by ``simulate`` (logging policy) and ``rollout`` (any policy)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import structlog
from tqdm import tqdm

from simulator.config import SimulatorConfig
from simulator.engine import Engine, Pending
from simulator.errors import SimulatorError
from simulator.frames import (
    concat_blocks,
    decisions_frame,
    events_frame,
    finish_round_events,
    orders_frame,
    public,
)
from simulator.model import MAX_RATE, action_labels
from simulator.policies import Policy
from simulator.truth import build_truth

log = structlog.get_logger(__name__)

ObservationHookFn = Callable[[pl.DataFrame, pl.DataFrame, pl.DataFrame], np.ndarray]

_S_POLICY = 50
_S_SHUFFLE = 60


@dataclass
class RunOutput:
    """Public frames of one run, plus the observations handed to the policy (when recorded)."""

    events: pl.DataFrame
    orders: pl.DataFrame
    truth: pl.DataFrame
    observations: pl.DataFrame | None


def _validate_actions(actions: np.ndarray, p: Pending, config: SimulatorConfig) -> np.ndarray:
    actions = np.asarray(actions)
    if actions.ndim == 2 and actions.shape[1] == 1:
        actions = actions[:, 0]
    if actions.shape != (p.size,):
        raise SimulatorError(f"the policy returned {actions.shape} actions for {p.size} decisions")
    if config.scenario == "promotion" and config.action_space == "continuous":
        rates = actions.astype(np.float64)
        if not np.isfinite(rates).all():
            raise SimulatorError("the policy returned a non-finite discount rate")
        return np.clip(rates, 0.0, MAX_RATE)
    n_actions = len(action_labels(config))
    if not np.issubdtype(actions.dtype, np.integer):
        rounded = np.rint(actions.astype(np.float64))
        if not np.allclose(rounded, actions):
            raise SimulatorError("a discrete policy must return integer action indices")
        actions = rounded
    idx = actions.astype(np.int64)
    if ((idx < 0) | (idx >= n_actions)).any():
        raise SimulatorError(f"action index out of range 0..{n_actions - 1}")
    return idx


class _History:
    """Every raw row emitted so far, cut per user at the pending decision's time."""

    def __init__(self) -> None:
        self.events: list[pl.DataFrame] = []
        self.orders: list[pl.DataFrame] = []

    def add(self, events: pl.DataFrame, orders: pl.DataFrame) -> None:
        if self.events:
            # keep one frame per kind: concatenating the whole list again every round is O(R^2)
            self.events = [pl.concat([self.events[0], events], rechunk=False)]
            self.orders = [pl.concat([self.orders[0], orders], rechunk=False)]
        else:
            self.events, self.orders = [events], [orders]

    def before(
        self, engine: Engine, p: Pending, template: tuple[pl.DataFrame, pl.DataFrame]
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Rows of each pending user strictly before that user's decision; other users' rows
        strictly before the round's earliest decision."""
        cut = np.full(engine.pop.size, int(p.ts.min()), np.int64)
        cut[p.users] = p.ts
        out = []
        for frames, ts_col, empty in zip(
            (self.events, self.orders), ("event_ts", "order_ts"), template, strict=True
        ):
            if not frames:
                out.append(empty)
                continue
            df = frames[0]
            ts = df[ts_col].dt.epoch("us").to_numpy()
            keep = ts < cut[df["_u"].to_numpy()]
            out.append(public(df.filter(pl.Series(keep))))
        return out[0], out[1]


class _Observer:
    """What the policy sees each round: the default observation, or the hook's features computed
    on the raw history so far; records the observations when asked."""

    def __init__(
        self,
        observation_hook: ObservationHookFn | None,
        *,
        use_hook: bool,
        policy_id: str,
        record: bool,
    ) -> None:
        self.hook = observation_hook if use_hook else None
        self.policy_id = policy_id
        self.record = record
        self.history = _History()
        self.templates: tuple[pl.DataFrame, pl.DataFrame] | None = None
        self.ids: list[pl.DataFrame] = []
        self.rows: list[np.ndarray] = []

    def observe(self, engine: Engine, p: Pending) -> np.ndarray:
        """The round's observations, one float row per pending decision."""
        decisions: pl.DataFrame | None = None
        if self.hook is not None:
            decisions = decisions_frame(engine, p, self.policy_id)
            ev_hist, or_hist = self.history.before(engine, p, self.empty_frames(engine))
            obs = np.asarray(self.hook(ev_hist, or_hist, decisions), dtype=np.float32)
            if obs.ndim != 2 or obs.shape[0] != p.size:
                raise SimulatorError(
                    f"the observation hook returned shape {obs.shape} for {p.size} decisions"
                )
        else:
            obs = p.observation
        if self.record:
            if decisions is None:
                decisions = decisions_frame(engine, p, self.policy_id)
            self.ids.append(decisions.select("decision_id"))
            self.rows.append(obs)
        return obs

    def empty_frames(self, engine: Engine) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Empty events and orders frames of the run's schemas (made once)."""
        if self.templates is None:
            self.templates = _empty_frames(engine)
        return self.templates

    def observations(self) -> pl.DataFrame | None:
        """``decision_id`` and ``observation`` of every recorded decision (``None`` unless
        recording)."""
        if not self.record:
            return None
        width = self.rows[0].shape[1] if self.rows else 0
        ids = pl.concat(self.ids) if self.ids else pl.DataFrame(schema={"decision_id": pl.String})
        matrix = np.concatenate(self.rows) if self.rows else np.zeros((0, width), np.float32)
        return ids.with_columns(pl.Series("observation", matrix, pl.Array(pl.Float32, width)))


def run_policy(
    config: SimulatorConfig,
    policy: Policy,
    *,
    observation_hook: ObservationHookFn | None = None,
    log_propensity: bool,
    policy_id: str,
    record_observations: bool = False,
    keep_events: bool = True,
    progress: bool = False,
) -> RunOutput:
    """Simulate ``config`` with ``policy`` choosing every decision; returns the raw logs.

    With ``keep_events=False`` (and no hook) the events table is not built (it comes back
    empty): a value-only rollout needs the orders and the truth record only.
    """
    engine = Engine(config)
    ev_blocks: list[dict[str, np.ndarray]] = []
    or_blocks: list[dict[str, np.ndarray]] = []
    use_hook = observation_hook is not None and not policy.uses_default_observation
    observer = _Observer(
        observation_hook, use_hook=use_hook, policy_id=policy_id, record=record_observations
    )
    bar = tqdm(
        desc=f"simulate {config.scenario}", unit=" rounds", disable=None if progress else True
    )
    while (p := engine.pending()) is not None:
        obs = observer.observe(engine, p)
        rng = np.random.default_rng([config.seed, _S_POLICY, engine.round])
        actions = _validate_actions(policy.act(obs, rng), p, config)
        prop = policy.propensity(obs, actions)
        propensity = np.full(p.size, np.nan) if prop is None else np.asarray(prop, np.float64)
        ev_raw, or_raw = engine.step(p, actions, propensity)
        or_blocks.append(or_raw)
        if keep_events or use_hook:
            ev_blocks.append(finish_round_events(engine, ev_raw))
        if use_hook:
            observer.history.add(
                events_frame(
                    engine, ev_blocks[-1], log_propensity=log_propensity, policy_id=policy_id
                ),
                orders_frame(engine, or_raw),
            )
        bar.update(1)
    bar.close()
    all_events, all_orders = _final_frames(
        engine,
        ev_blocks,
        or_blocks,
        observer.empty_frames(engine),
        log_propensity=log_propensity,
        policy_id=policy_id,
    )
    truth = build_truth(engine, all_events, all_orders)
    log.debug(
        "simulated",
        scenario=config.scenario,
        rounds=engine.round,
        events=all_events.height,
        orders=all_orders.height,
        decisions=truth.height,
    )
    return RunOutput(all_events, all_orders, truth, observer.observations())


def _final_frames(
    engine: Engine,
    ev_blocks: list[dict[str, np.ndarray]],
    or_blocks: list[dict[str, np.ndarray]],
    templates: tuple[pl.DataFrame, pl.DataFrame],
    *,
    log_propensity: bool,
    policy_id: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The run's public events (sorted, then shuffled within each ingest day with the
    out-of-order dirt) and orders (sorted) frames from every round's blocks."""
    config = engine.config
    ev_all = concat_blocks(ev_blocks)
    or_all = concat_blocks(or_blocks)
    if ev_all is not None:
        # (event_ts, event_id) order, on the numeric keys (event_id = session digits + sequence)
        order = np.lexsort((ev_all["_seq"], ev_all["_s"], ev_all["ts"]))
        ev_all = {k: v[order] for k, v in ev_all.items()}
    all_events = (
        events_frame(engine, ev_all, log_propensity=log_propensity, policy_id=policy_id)
        if ev_all is not None
        else _with_sort_keys(templates[0])
    )
    all_orders = orders_frame(engine, or_all) if or_all is not None else templates[1]
    all_events = public(all_events)
    all_orders = public(all_orders).sort("order_ts", "order_id", "line_no")
    if config.dirt.out_of_order and all_events.height:
        rng = np.random.default_rng([config.seed, _S_SHUFFLE])
        all_events = (
            all_events.with_columns(pl.Series("_key", rng.permutation(all_events.height)))
            .sort(pl.col("ingest_ts").dt.date(), "_key")
            .drop("_key")
        )
    return all_events, all_orders


def _with_sort_keys(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.lit(0, pl.Int64).alias("_ts"),
        pl.lit(0, pl.Int64).alias("_s"),
        pl.lit(0, pl.Int64).alias("_seq"),
    ).clear()


def _empty_frames(engine: Engine) -> tuple[pl.DataFrame, pl.DataFrame]:
    from simulator.frames import ORDER_SCHEMA, event_schema

    return (
        pl.DataFrame(schema=event_schema(engine.continuous)),
        pl.DataFrame(schema=ORDER_SCHEMA),
    )
