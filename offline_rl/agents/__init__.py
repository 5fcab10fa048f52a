"""The agents, one module per family (CQL, BCQ, BC), each with discrete and continuous configs."""

from __future__ import annotations

from offline_rl.agents.base import AgentConfig
from offline_rl.agents.bc import BCConfig, DiscreteBCConfig
from offline_rl.agents.bcq import BCQConfig, DiscreteBCQConfig
from offline_rl.agents.cql import CQLConfig, DiscreteCQLConfig

AGENT_CONFIGS: dict[str, type[AgentConfig]] = {
    cls.name: cls
    for cls in (
        DiscreteCQLConfig,
        DiscreteBCQConfig,
        DiscreteBCConfig,
        CQLConfig,
        BCQConfig,
        BCConfig,
    )
}
"""Our agent names (the ``agent`` key of ``[train]``) to their config models."""

__all__ = [
    "AGENT_CONFIGS",
    "AgentConfig",
    "BCConfig",
    "BCQConfig",
    "CQLConfig",
    "DiscreteBCConfig",
    "DiscreteBCQConfig",
    "DiscreteCQLConfig",
]
