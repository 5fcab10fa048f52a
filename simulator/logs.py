"""``simulate`` (raw logs from the logging policy), writing and reading them, and their summary."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import structlog

from simulator.config import SimulatorConfig
from simulator.errors import SimulatorError
from simulator.frames import ORDER_SCHEMA, event_schema
from simulator.policies import logging_policy
from simulator.runner import run_policy

log = structlog.get_logger(__name__)

TRUTH_FILE = "_truth.parquet"
CONFIG_FILE = "_simulator.json"


@dataclass
class SimulatedLogs:
    """What ``simulate`` returns: the raw logs and the simulator's truth record.

    ``events`` and ``orders`` follow the raw-log contract exactly (``docs/architecture.md``);
    ``truth`` has one row per decision (reward and its parts, episode split, terminal/timeout,
    the logging propensity even when the logs carry none, and the hidden state at the decision).
    """

    events: pl.DataFrame
    orders: pl.DataFrame
    truth: pl.DataFrame
    config: SimulatorConfig

    @property
    def bot_user_ids(self) -> list[str]:
        """User ids of the bots the dirt added (empty without ``dirt.bots``)."""
        ids = self.truth.filter(pl.col("is_bot"))["user_id"].unique().sort()
        return list(ids.to_list())


def simulate(config: SimulatorConfig | None = None, *, progress: bool = False) -> SimulatedLogs:
    """Simulate ``config`` under the logging policy and return raw logs plus the truth record.

    Deterministic given ``config.seed`` (numpy ``default_rng`` streams; no global state).
    """
    config = config or SimulatorConfig()
    policy = logging_policy(config)
    out = run_policy(
        config,
        policy,
        log_propensity=config.log_propensity,
        policy_id=config.policy_id,
        progress=progress,
    )
    log.info(
        "simulated raw logs",
        scenario=config.scenario,
        action_space=config.action_space,
        users=config.n_users,
        events=out.events.height,
        order_lines=out.orders.height,
        decisions=out.truth.height,
    )
    return SimulatedLogs(out.events, out.orders, out.truth, config)


def _write_partitions(frame: pl.DataFrame, folder: Path, ts_col: str) -> int:
    dated = frame.with_columns(pl.col(ts_col).dt.date().alias("_date"))
    parts = dated.partition_by("_date", maintain_order=True, as_dict=True)
    for key, part in sorted(parts.items(), key=lambda kv: str(kv[0][0])):
        day = key[0]
        target = folder / f"date={day}"
        target.mkdir(parents=True, exist_ok=True)
        part.drop("_date").write_parquet(target / "part-00000.parquet", compression="zstd")
    return len(parts)


def write_raw_logs(logs: SimulatedLogs, root: Path | str, *, truth: bool = True) -> Path:
    """Write ``root/events/date=.../part-00000.parquet`` and ``root/orders/...`` atomically.

    Partitions are by the UTC date of arrival (``ingest_ts``). With ``truth``, the truth record
    goes to ``root/_truth.parquet`` and the config to ``root/_simulator.json`` (the ETL reads
    only ``events/`` and ``orders/``). Everything is written to a temporary sibling folder that
    is renamed into place, so a reader never sees a half-written dataset.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        n_ev = _write_partitions(logs.events, tmp / "events", "ingest_ts")
        n_or = _write_partitions(logs.orders, tmp / "orders", "ingest_ts")
        if truth:
            logs.truth.write_parquet(tmp / TRUTH_FILE, compression="zstd")
            payload = logs.config.model_dump(mode="json")
            (tmp / CONFIG_FILE).write_text(
                json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
        old = None
        if root.exists():
            old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(root, old)
        os.replace(tmp, root)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote raw logs", root=str(root), event_partitions=n_ev, order_partitions=n_or)
    return root


def read_raw_logs(root: Path | str) -> SimulatedLogs:
    """Read a folder written by :func:`write_raw_logs` (with its truth record) back."""
    root = Path(root)
    cfg_path = root / CONFIG_FILE
    if not (root / "events").is_dir() or not cfg_path.is_file():
        raise SimulatorError(f"{root} is not a simulated raw-log folder (events/, {CONFIG_FILE})")
    config = SimulatorConfig.model_validate(json.loads(cfg_path.read_text(encoding="utf-8")))
    continuous = config.scenario == "promotion" and config.action_space == "continuous"

    def read(kind: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        files = sorted((root / kind).glob("date=*/*.parquet"))
        if not files:
            return pl.DataFrame(schema=schema)
        return pl.concat([pl.read_parquet(f) for f in files]).cast(schema)  # type: ignore[arg-type]

    events = read("events", event_schema(continuous))
    orders = read("orders", ORDER_SCHEMA)
    truth = pl.read_parquet(root / TRUTH_FILE)
    return SimulatedLogs(events, orders, truth, config)


def simulate_summary(logs: SimulatedLogs) -> pl.DataFrame:
    """A one-screen summary (``metric``, ``value``) of simulated logs, used by the CLI."""
    ev, od, tr = logs.events, logs.orders, logs.truth
    real = tr.filter(~pl.col("is_bot"))
    n_users = tr["user_id"].n_unique()
    rows: list[tuple[str, str]] = [
        ("scenario", f"{logs.config.scenario} ({logs.config.action_space})"),
        ("users (with a decision)", f"{n_users}"),
        ("bots", f"{len(logs.bot_user_ids)}"),
        ("sessions", f"{ev['session_id'].n_unique()}"),
        ("events", f"{ev.height}"),
    ]
    counts = ev.group_by("event_type").len().sort("event_type")
    for et, n in counts.iter_rows():
        rows.append((f"  {et!s}", f"{n}"))
    placed = od.filter(pl.col("status") == "placed")
    rows += [
        ("orders placed", f"{placed['order_id'].n_unique()}"),
        ("order lines", f"{od.height}"),
        ("reversal lines", f"{od.height - placed.height}"),
        ("decisions", f"{tr.height}"),
        ("episodes", f"{real['episode_id'].n_unique()}"),
    ]
    n_sessions = max(ev.filter(pl.col("event_type") == "decision")["session_id"].n_unique(), 1)
    purchases = ev.filter(pl.col("event_type") == "purchase")["order_id"].n_unique()
    rows.append(("conversion (orders / sessions)", f"{purchases / n_sessions:.3f}"))
    if real.height:
        mean_reward = float(real["reward"].cast(pl.Float64).mean() or 0.0)  # type: ignore[arg-type]
        rows.append(("mean reward per decision", f"{mean_reward:.3f}"))
        actions = real.group_by("action_label" if "action_label" in real.columns else "action")
        if logs.config.action_space == "discrete" or logs.config.scenario == "recommendation":
            dist = actions.len().sort("action_label")
            for label, n in dist.iter_rows():
                rows.append((f"  action {label!s}", f"{n / real.height:.3f}"))
        else:
            mean_rate = float(real["action"].cast(pl.Float64).mean() or 0.0)  # type: ignore[arg-type]
            rows.append(("mean discount rate", f"{mean_rate:.3f}"))
    return pl.DataFrame(rows, schema=["metric", "value"], orient="row")
