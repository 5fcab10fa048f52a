"""Certifiable candidates: stochastic policies between the logging policy and a trained agent.

A greedy agent keeps few logged episodes whose actions it would repeat over up to ten
decisions, so its importance weights collapse and no off-policy bound can certify it. The
candidates here stay close to the behaviour policy ``pi_b`` where the logs are thin, so that
the gate can measure them (``evaluation.selection`` picks one member, the gate tests it once):

* ``mixture``: ``(1 - e) * pi_b + e * greedy(agent)`` (``offline_rl.spibb.mixture_policy``);
* ``spibb``: Pi_b-SPIBB (Laroche, Trichelair & Tachet des Combes, ICML 2019): follow ``pi_b``
  on state-action pairs seen fewer than ``n_wedge`` times, move the rest of the mass to the
  best-supported action by the agent's Q;
* ``soft_spibb``: Approx-Soft-SPIBB (Nadjahi, Laroche & Tachet des Combes, ECML-PKDD 2019):
  move mass towards the agent's best action within an error budget ``sum_a e(s,a) |pi - pi_b|
  <= epsilon`` with ``e(s,a) = kappa / sqrt(N(s,a))``;
* ``tilt``: ``pi(a|s) ∝ pi_b(a|s) exp(eta * A(s,a) / sigma_A)``, the behaviour policy tilted by
  the agent's advantage ``A = Q - sum_a pi_b Q`` (``sigma_A`` its behaviour-weighted standard
  deviation on the fitting data). It maximises the first-order gain ``sum_a (pi - pi_b) A`` under
  a KL budget to ``pi_b`` (Peters, Muelling & Altun, AAAI 2010, relative entropy policy search;
  the same solution as advantage-weighted regression, Peng et al. 2019): it spends the
  deviation from ``pi_b``, which is what costs variance off-policy, where the advantage is
  large, unlike the mixture, which moves every state by the same share. Its ratio to ``pi_b`` is
  bounded by ``exp(eta * (A_max - A_min) / sigma_A)``.

``pi_b`` is the behaviour model (a multinomial logit, ``offline_rl.behaviour``) stored as plain
coefficients; ``N(s, a)`` are pseudo-counts: the logged (cell, action) counts of the fitting
data, where the cells are a k-means partition of the standardised observations (SPIBB's counts
need a finite state space; the partition is its function-approximation stand-in, as in the
papers' pseudo-count experiments). Both are fitted on the training part of the logs only.

A certified candidate is saved as an artifact folder: ``certified.json`` (operator, parameter,
behaviour coefficients, cells and counts: JSON, nothing pickled), the agent's own artifact in
``agent/`` (JSON and safetensors, see ``offline_rl.safe_io``), ``SHA256SUMS`` over everything
and, with ``ECOMRL_ARTIFACT_KEY`` set, ``SIGNATURE``. ``load_policy`` below loads it; nothing
is unpickled.
Discrete action spaces only: for a continuous agent a bounded-ratio candidate is not built yet
(see offline_rl/README.md).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import KMeans

from offline_rl.artifacts import TrainedPolicy, verify_checksums, write_checksums
from offline_rl.artifacts import load_policy as load_agent
from offline_rl.errors import TrainingError
from offline_rl.spibb import mixture_policy, soft_spibb_policy, spibb_policy

CERTIFIED_NAME = "certified.json"
AGENT_DIR = "agent"
Operator = Literal["behaviour", "mixture", "spibb", "soft_spibb", "tilt"]
FloatArray = NDArray[np.float64]


def _softmax(z: FloatArray) -> FloatArray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@dataclass(frozen=True)
class LinearBehaviour:
    """A fitted multinomial logit of the logging policy, as plain arrays (JSON-serialisable).

    ``predict_proba`` reproduces scikit-learn's ``LogisticRegression.predict_proba`` (binary:
    a sigmoid of one score; more classes: a softmax); actions never logged get probability 0.
    """

    coef: FloatArray
    intercept: FloatArray
    classes: NDArray[np.int64]
    n_actions: int

    @classmethod
    def from_sklearn(cls, model: Any, n_actions: int) -> LinearBehaviour:
        if not hasattr(model, "coef_"):
            raise TrainingError(
                "the certified candidates need an uncalibrated behaviour model "
                "([train.behaviour] calibration = \"none\")"
            )
        return cls(
            np.asarray(model.coef_, dtype=np.float64),
            np.asarray(model.intercept_, dtype=np.float64),
            np.asarray(model.classes_, dtype=np.int64),
            n_actions,
        )

    def predict_proba(self, observations: NDArray[Any]) -> FloatArray:
        x = np.asarray(observations, dtype=np.float64)
        scores = x @ self.coef.T + self.intercept
        if len(self.classes) == 2:
            p1 = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            fitted = np.column_stack([1.0 - p1, p1])
        else:
            fitted = _softmax(scores)
        probs = np.zeros((x.shape[0], self.n_actions))
        probs[:, self.classes] = fitted
        return probs

    def to_dict(self) -> dict[str, Any]:
        return {
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "classes": self.classes.tolist(),
            "n_actions": self.n_actions,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearBehaviour:
        return cls(
            np.asarray(data["coef"], dtype=np.float64),
            np.asarray(data["intercept"], dtype=np.float64),
            np.asarray(data["classes"], dtype=np.int64),
            int(data["n_actions"]),
        )


@dataclass(frozen=True)
class StateCells:
    """A k-means partition of the standardised observations and the logged (cell, action) counts."""

    mean: FloatArray
    scale: FloatArray
    centroids: FloatArray
    counts: FloatArray

    @classmethod
    def fit(
        cls,
        observations: NDArray[Any],
        actions: NDArray[Any],
        n_actions: int,
        n_cells: int = 32,
        seed: int = 0,
    ) -> StateCells:
        x = np.asarray(observations, dtype=np.float64)
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale == 0] = 1.0
        z = (x - mean) / scale
        k = max(1, min(n_cells, len(np.unique(z, axis=0))))
        km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(z)
        cells = np.asarray(km.labels_, dtype=np.int64)
        counts = np.zeros((k, n_actions))
        np.add.at(counts, (cells, np.asarray(actions, dtype=np.int64).reshape(-1)), 1.0)
        return cls(mean, scale, np.asarray(km.cluster_centers_, dtype=np.float64), counts)

    def assign(self, observations: NDArray[Any]) -> NDArray[np.int64]:
        """The nearest cell of each observation."""
        z = (np.asarray(observations, dtype=np.float64) - self.mean) / self.scale
        d2 = (
            (z**2).sum(axis=1)[:, None]
            - 2.0 * z @ self.centroids.T
            + (self.centroids**2).sum(axis=1)[None, :]
        )
        return np.asarray(d2.argmin(axis=1), dtype=np.int64)

    def counts_for(self, observations: NDArray[Any]) -> FloatArray:
        """(n, K) logged counts of each action in each observation's cell."""
        return np.asarray(self.counts[self.assign(observations)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "centroids": self.centroids.tolist(),
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StateCells:
        return cls(*(np.asarray(data[k], dtype=np.float64) for k in
                     ("mean", "scale", "centroids", "counts")))


@dataclass(frozen=True)
class CertifiedSpec:
    """Which member of the family: the operator and its one parameter."""

    operator: Operator
    parameter: float = 0.0
    """mixture: the agent's share e; spibb: n_wedge; soft_spibb: the budget epsilon; tilt: eta."""
    kappa: float = 1.0
    """soft_spibb: the error scale of ``e(s, a) = kappa / sqrt(N(s, a))``."""

    @property
    def label(self) -> str:
        if self.operator == "behaviour":
            return "behaviour"
        return f"{self.operator}({self.parameter:g})"

    @property
    def needs_q(self) -> bool:
        return self.operator in ("spibb", "soft_spibb", "tilt")


class CertifiedPolicy:
    """A stochastic member of the family: ``action_probabilities`` and a sampling ``predict``.

    ``agent`` is a loaded discrete policy with ``predict`` (greedy actions) and, for the SPIBB
    operators, ``predict_value(observations, actions)`` (its critic).
    """

    stochastic = True

    def __init__(
        self,
        spec: CertifiedSpec,
        behaviour: LinearBehaviour,
        agent: Any,
        cells: StateCells | None = None,
        *,
        advantage_scale: float = 1.0,
        seed: int = 0,
        folder: Path | None = None,
    ) -> None:
        if spec.needs_q and (cells is None or not hasattr(agent, "predict_value")):
            raise TrainingError(f"{spec.label} needs state cells and an agent with a critic")
        self.spec = spec
        self.behaviour = behaviour
        self.agent = agent
        self.cells = cells
        self.advantage_scale = advantage_scale
        self.folder = folder
        self.n_actions = behaviour.n_actions
        self.discrete = True
        self._rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"CertifiedPolicy({self.spec.label})"

    def q_values(self, observations: NDArray[Any]) -> FloatArray:
        """(n, K) the agent critic's Q of every action."""
        obs = np.asarray(observations, dtype=np.float32)
        cols = [
            self.agent.predict_value(obs, np.full(len(obs), k, dtype=np.int64))
            for k in range(self.n_actions)
        ]
        return np.asarray(np.column_stack(cols), dtype=np.float64)

    def _greedy(self, observations: NDArray[Any]) -> FloatArray:
        greedy = np.asarray(self.agent.predict(observations), dtype=np.int64).reshape(-1)
        return np.asarray(np.eye(self.n_actions)[greedy])

    def action_probabilities(
        self, observations: NDArray[Any], epsilon: float = 0.0
    ) -> FloatArray:
        """(n, K) probabilities of the member (``epsilon`` > 0 mixes in the uniform policy)."""
        obs = np.asarray(observations, dtype=np.float32)
        pi_b = self.behaviour.predict_proba(obs)
        spec = self.spec
        if spec.operator == "behaviour":
            probs = pi_b
        elif spec.operator == "mixture":
            probs = mixture_policy(pi_b, self._greedy(obs), spec.parameter)
        elif spec.operator == "tilt":
            probs = tilt_policy(self.q_values(obs), pi_b, spec.parameter / self.advantage_scale)
        else:
            assert self.cells is not None
            q = self.q_values(obs)
            counts = self.cells.counts_for(obs)
            if spec.operator == "spibb":
                probs = spibb_policy(q, pi_b, counts, spec.parameter)
            else:
                probs = soft_spibb_policy(q, pi_b, counts, spec.parameter, spec.kappa)
        if epsilon:
            probs = (1.0 - epsilon) * probs + epsilon / self.n_actions
        return np.asarray(probs, dtype=np.float64)

    def act(self, observations: NDArray[Any], rng: np.random.Generator) -> NDArray[np.int64]:
        """Sample one action per observation with ``rng``."""
        probs = self.action_probabilities(observations)
        cum = np.cumsum(probs, axis=1)
        u = np.asarray(rng.random(probs.shape[0]))[:, None] * cum[:, -1:]
        return np.minimum((u >= cum).sum(axis=1), self.n_actions - 1).astype(np.int64)

    def predict(self, observations: NDArray[Any]) -> NDArray[np.int64]:
        """Sampled actions (the policy is stochastic), from the policy's own seeded stream."""
        return self.act(observations, self._rng)

    def save(self, folder: Path | str, agent_artifact: Path | str) -> Path:
        """Write the member as an artifact folder (the agent's artifact copied into it).

        The agent's artifact is verified first (hashes, signature when a key is set): the new
        folder's sums and signature must not vouch for an agent that was tampered with."""
        verify_checksums(Path(agent_artifact))
        out = Path(folder)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        shutil.copytree(Path(agent_artifact), out / AGENT_DIR)
        meta = {
            "operator": self.spec.operator,
            "parameter": self.spec.parameter,
            "kappa": self.spec.kappa,
            "advantage_scale": self.advantage_scale,
            "behaviour": self.behaviour.to_dict(),
            "cells": None if self.cells is None else self.cells.to_dict(),
        }
        (out / CERTIFIED_NAME).write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
        write_checksums(out)
        return out


def is_certified(folder: Path | str) -> bool:
    """Whether an artifact folder holds a certified candidate (not a plain agent)."""
    return (Path(folder) / CERTIFIED_NAME).is_file()


def load_policy(
    folder: Path | str, device: str = "cpu:0", seed: int = 0
) -> TrainedPolicy | CertifiedPolicy:
    """Any policy artifact: a trained agent, or a certified candidate around one.

    Every file's hash (and, with ``ECOMRL_ARTIFACT_KEY`` set, the signature) is checked before
    anything is read: the certified folder's ``SHA256SUMS`` first, then the agent's own
    (``offline_rl.artifacts.load_policy``). Nothing is unpickled.
    """
    path = Path(folder)
    if not is_certified(path):
        return load_agent(path, device=device)
    verify_checksums(path)
    return load_certified(path, load_agent(path / AGENT_DIR, device=device), seed=seed)


def load_certified(folder: Path | str, agent: Any, seed: int = 0) -> CertifiedPolicy:
    """A certified candidate from its (already verified) folder and its loaded agent."""
    meta = json.loads((Path(folder) / CERTIFIED_NAME).read_text(encoding="utf-8"))
    spec = CertifiedSpec(meta["operator"], float(meta["parameter"]), float(meta["kappa"]))
    cells = None if meta["cells"] is None else StateCells.from_dict(meta["cells"])
    behaviour = LinearBehaviour.from_dict(meta["behaviour"])
    scale = float(meta.get("advantage_scale", 1.0))
    return CertifiedPolicy(
        spec, behaviour, agent, cells, advantage_scale=scale, seed=seed, folder=Path(folder)
    )


def tilt_policy(q: FloatArray, behaviour: FloatArray, eta: float) -> FloatArray:
    """``pi(a|s) ∝ pi_b(a|s) exp(eta * A(s, a))`` with ``A = q - sum_a pi_b q`` (rows of (n, K))."""
    advantage = q - np.sum(behaviour * q, axis=1, keepdims=True)
    logits = eta * advantage
    logits = logits - logits.max(axis=1, keepdims=True)
    weights = behaviour * np.exp(logits)
    return np.asarray(weights / weights.sum(axis=1, keepdims=True))


def advantage_scale(q: FloatArray, behaviour: FloatArray) -> float:
    """The behaviour-weighted standard deviation of the advantage (1 when it is 0)."""
    advantage = q - np.sum(behaviour * q, axis=1, keepdims=True)
    scale = float(np.sqrt(np.mean(np.sum(behaviour * advantage**2, axis=1))))
    return scale if scale > 1e-12 and np.isfinite(scale) else 1.0


def family_specs(
    mixtures: list[float],
    spibb_n_wedge: list[float],
    soft_spibb_epsilon: list[float],
    kappa: float,
    has_critic: bool,
    tilts: list[float] | None = None,
) -> list[CertifiedSpec]:
    """The members of the family (the Q-based members only when the agent has a critic)."""
    specs = [CertifiedSpec("mixture", float(e)) for e in mixtures]
    if has_critic:
        specs += [CertifiedSpec("tilt", float(e)) for e in tilts or []]
        specs += [CertifiedSpec("spibb", float(n)) for n in spibb_n_wedge]
        specs += [CertifiedSpec("soft_spibb", float(e), kappa) for e in soft_spibb_epsilon]
    return specs
