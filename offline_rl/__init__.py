"""Offline RL: conservative agents (d3rlpy), behaviour-policy and response models.

The public names are imported lazily, so that reading the configuration (``offline_rl.config``)
does not import torch and d3rlpy.

* data: ``load_transitions``, ``to_arrays``, ``to_mdp_dataset``, ``TransitionManifest``
* splits: ``split_by_episode``, ``split_by_time``
* training: ``train``, ``train_on_frame``, ``TrainResult``, ``FastTrainer``
* artifacts: ``load_policy`` (an agent or a certified candidate), ``TrainedPolicy``,
  ``CertifiedPolicy``
* models: ``behaviour_model`` (``DiscreteBehaviourModel`` / ``BetaBehaviourModel``),
  ``fit_predict_crossfit``, ``fill_propensities``,
  ``propensity_check``, ``ResponseModel``
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_transitions": "offline_rl.data",
    "to_arrays": "offline_rl.data",
    "to_mdp_dataset": "offline_rl.data",
    "TransitionArrays": "offline_rl.data",
    "TransitionManifest": "offline_rl.data",
    "split_by_episode": "offline_rl.splits",
    "split_by_time": "offline_rl.splits",
    "train": "offline_rl.train",
    "train_on_frame": "offline_rl.train",
    "TrainResult": "offline_rl.train",
    "FastTrainer": "offline_rl.fast_loop",
    "load_policy": "offline_rl.certified",
    "CertifiedPolicy": "offline_rl.certified",
    "TrainedPolicy": "offline_rl.artifacts",
    "BehaviourModel": "offline_rl.behaviour",
    "BetaBehaviourModel": "offline_rl.behaviour",
    "DiscreteBehaviourModel": "offline_rl.behaviour",
    "behaviour_model": "offline_rl.behaviour",
    "fit_predict_crossfit": "offline_rl.behaviour",
    "fill_propensities": "offline_rl.behaviour",
    "propensity_check": "offline_rl.behaviour",
    "ResponseModel": "offline_rl.response",
    "TrainConfig": "offline_rl.config",
    "TrainingError": "offline_rl.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'offline_rl' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
