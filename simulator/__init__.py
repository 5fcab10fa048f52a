"""E-commerce simulator: emits raw logs and gives the true value of any policy.

Public API::

    simulate(config) -> SimulatedLogs(events, orders, truth)    # raw logs under the logging policy
    write_raw_logs(logs, root) / read_raw_logs(root)            # date-partitioned Parquet, atomic
    rollout(policy, config, observation_hook=...) -> RolloutResult   # true value with a 95 % CI
    deployment_value(policy, config) -> RolloutResult           # value per new user's first episode
    as_policy(obj), constant_action(k), logging_policy(config), logging_probabilities(obs, config)
    simulate_summary(logs)                                      # one-screen summary frame

See ``simulator/README.md`` for the behaviour model and ``data_samples/README.md`` for the tables.
"""

from simulator.config import (
    DirtConfig,
    PromotionResponse,
    RecommendationRewardWeights,
    SimulatorConfig,
)
from simulator.errors import SimulatorError
from simulator.logs import SimulatedLogs, read_raw_logs, simulate, simulate_summary, write_raw_logs
from simulator.model import PROMOTION_FEATURES, TIERS, action_labels, recommendation_features
from simulator.policies import (
    LoggingPolicy,
    Policy,
    TargetingRule,
    as_policy,
    constant_action,
    continuous_density,
    logging_policy,
    logging_probabilities,
)
from simulator.rollout import (
    ObservationHook,
    RolloutResult,
    deployment_value,
    deployment_world,
    rollout,
    value_from_truth,
)
from simulator.samples import SAMPLE_CONFIGS, write_sample_set

__all__ = [
    "PROMOTION_FEATURES",
    "SAMPLE_CONFIGS",
    "TIERS",
    "DirtConfig",
    "LoggingPolicy",
    "ObservationHook",
    "Policy",
    "PromotionResponse",
    "RecommendationRewardWeights",
    "RolloutResult",
    "SimulatedLogs",
    "SimulatorConfig",
    "SimulatorError",
    "TargetingRule",
    "action_labels",
    "as_policy",
    "constant_action",
    "continuous_density",
    "deployment_value",
    "deployment_world",
    "logging_policy",
    "logging_probabilities",
    "read_raw_logs",
    "recommendation_features",
    "rollout",
    "simulate",
    "simulate_summary",
    "value_from_truth",
    "write_raw_logs",
    "write_sample_set",
]
