"""Build the family of certifiable candidates around a trained agent and select one (HCPI).

Everything here looks only at the fitting users (behaviour model, SPIBB's counts) and the
selection users (the choice); the held-out episodes are left to the gate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import structlog

from evaluation.candidates import ModelPolicy
from evaluation.config import ApprovalConfig, EvaluateConfig
from evaluation.data import EpisodeData, TransitionsDataset
from evaluation.propensity import fill_missing_propensities
from evaluation.selection import SelectionResult, select_candidate
from offline_rl.behaviour import DiscreteBehaviourModel
from offline_rl.certified import (
    CertifiedPolicy,
    CertifiedSpec,
    LinearBehaviour,
    StateCells,
    advantage_scale,
    family_specs,
)
from offline_rl.config import BehaviourConfig, CertifyConfig
from offline_rl.data import TransitionManifest
from offline_rl.errors import TrainingError

log = structlog.get_logger(__name__)


def _observations(frame: pl.DataFrame) -> np.ndarray:
    column = frame["observation"]
    if isinstance(column.dtype, pl.Array):
        return np.asarray(column.to_numpy(), dtype=np.float32)
    return np.asarray(column.to_list(), dtype=np.float32)


def build_family(
    fit_frame: pl.DataFrame,
    manifest: TransitionManifest,
    agent: object,
    config: CertifyConfig,
) -> list[CertifiedPolicy]:
    """The members around ``agent``, with a behaviour model and cells fitted on ``fit_frame``."""
    if not manifest.discrete:
        raise TrainingError("certified candidates are built for discrete action spaces only")
    n_actions = manifest.action_size
    obs = _observations(fit_frame)
    actions = fit_frame["action"].to_numpy()
    cfg = BehaviourConfig()
    model = DiscreteBehaviourModel(n_actions, cfg.C, cfg.max_iter, "none").fit(obs, actions)
    behaviour = LinearBehaviour.from_sklearn(model.estimator_, n_actions)
    cells = StateCells.fit(obs, actions, n_actions, config.n_cells, config.seed)
    has_critic = hasattr(agent, "predict_value") and _has_critic(agent)
    specs = family_specs(
        config.mixtures, config.spibb_n_wedge, config.soft_spibb_epsilon, config.kappa,
        has_critic, config.tilts,
    )
    scale = 1.0
    if has_critic:
        probe = CertifiedPolicy(CertifiedSpec("behaviour"), behaviour, agent, cells)
        scale = advantage_scale(probe.q_values(obs), behaviour.predict_proba(obs))
    return [
        CertifiedPolicy(
            spec, behaviour, agent, cells, advantage_scale=scale, seed=config.seed + i
        )
        for i, spec in enumerate(specs)
    ]


def _has_critic(agent: object) -> bool:
    config = getattr(agent, "config", {})
    name = config.get("agent", "") if isinstance(config, dict) else ""
    return name not in ("discrete_bc", "bc")


def selection_data(
    frame: pl.DataFrame, manifest: TransitionManifest, dataset: Path, cfg: EvaluateConfig
) -> EpisodeData:
    """The selection episodes as OPE input, missing propensities estimated as for the gate."""
    data = TransitionsDataset(frame=frame, manifest=manifest.data, path=dataset)
    episodes = data.to_episode_data(cfg.gamma)
    episodes, _ = fill_missing_propensities(episodes, cfg.behaviour_model)
    return episodes


def choose_certified(
    members: list[CertifiedPolicy],
    selection: EpisodeData,
    n_test: int,
    evaluate: EvaluateConfig,
    approval: ApprovalConfig,
    config: CertifyConfig,
) -> SelectionResult:
    """Score the members on the selection episodes and pick one (``evaluation.selection``)."""
    candidates = [ModelPolicy(m, name=m.spec.label) for m in members]
    result = select_candidate(
        selection, candidates, n_test, evaluate, approval, inflation=config.inflation
    )
    picked = result.picked
    log.info(
        "candidate selected",
        pick=None if picked is None else picked.label,
        predicted_lower_bound=None if picked is None else round(picked.predicted_lower_bound, 4),
        certifiable=result.certifiable,
        members=len(members),
    )
    return result
