"""The bundled sample logs (``data_samples/``): their fixed configs and the regeneration."""

from __future__ import annotations

from pathlib import Path

from simulator.config import DirtConfig, SimulatorConfig
from simulator.logs import simulate, write_raw_logs

# Every sample pins ``arrival_days=7`` (all users arrive in the first week), the window the
# samples were generated with, so that they stay byte for byte what is committed.
SAMPLE_CONFIGS: dict[str, SimulatorConfig] = {
    # discrete tiers, every kind of dirt on (the ETL has something to clean)
    "promotion": SimulatorConfig(
        scenario="promotion",
        action_space="discrete",
        n_users=800,
        seed=20260105,
        days=28,
        arrival_days=7,
        dirt=DirtConfig.all_on().model_copy(update={"bot_fraction": 0.005}),
    ),
    "promotion_continuous": SimulatorConfig(
        scenario="promotion",
        action_space="continuous",
        n_users=800,
        seed=20260106,
        days=28,
        arrival_days=7,
    ),
    "recommendation": SimulatorConfig(
        scenario="recommendation", n_users=700, seed=20260107, days=21, arrival_days=7
    ),
}


def write_sample_set(root: Path | str) -> dict[str, Path]:
    """Regenerate the three sample datasets under ``root`` (byte-for-byte reproducible)."""
    root = Path(root)
    written = {}
    for name, config in SAMPLE_CONFIGS.items():
        written[name] = write_raw_logs(simulate(config), root / name)
    return written
