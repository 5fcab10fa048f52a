"""Configuration of training (the ``[train]`` table of the TOML config).

The per-agent tables (``[train.discrete_cql]``, ``[train.cql]``, ...) use d3rlpy's own names
(``learning_rate``, ``batch_size``, ``target_update_interval``, ``alpha`` ...). The continuous
agents keep d3rlpy's defaults; the discrete ones replace d3rlpy's Atari defaults (batch 32, a
hard target sync every 8,000 steps, learning rate 6.25e-5) with values suited to logged
e-commerce data (see ``offline_rl/README.md``). ``gamma`` defaults to the dataset's manifest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from offline_rl.agents.bc import BCConfig, DiscreteBCConfig
from offline_rl.agents.bcq import BCQConfig, DiscreteBCQConfig
from offline_rl.agents.cql import CQLConfig, DiscreteCQLConfig

AgentName = Literal["auto", "discrete_cql", "discrete_bcq", "discrete_bc", "cql", "bcq", "bc"]


class BehaviourConfig(BaseModel):
    """The scikit-learn model of the logging policy."""

    model_config = ConfigDict(extra="forbid")

    C: float = Field(1e4, gt=0.0)
    """Inverse L2 strength of the multinomial logit (large: nearly unpenalised)."""
    calibration: Literal["none", "sigmoid", "isotonic"] = "none"
    """Extra post-hoc calibration of the discrete model (sklearn ``CalibratedClassifierCV``)."""
    n_folds: int = Field(5, ge=2)
    """Folds (grouped by episode) of the cross-fitted propensities used by OPE."""
    max_iter: int = Field(500, ge=10)
    check: bool = True
    """Fit the model during ``train`` and report it beside the logged propensities."""


class ResponseConfig(BaseModel):
    """The scikit-learn model of reward (and purchase) given state and action."""

    model_config = ConfigDict(extra="forbid")

    max_iter: int = Field(200, ge=1)
    learning_rate: float = Field(0.1, gt=0.0)
    max_leaf_nodes: int = Field(31, ge=2)
    min_samples_leaf: int = Field(20, ge=1)


class CertifyConfig(BaseModel):
    """Certifiable candidates and their selection (the ``[certify]`` table; discrete agents).

    The nightly job builds a family of stochastic policies between the logging policy and the
    trained agent (``offline_rl.certified``: mixtures, advantage tilts, SPIBB, Soft-SPIBB),
    scores every member on a selection part of the training users and tests only the pick on
    the held-out episodes (``evaluation.selection``).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """False: the greedy agent itself is the candidate (no family, no selection)."""
    mixtures: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2, 0.35, 0.5, 1.0])
    """Shares e of ``(1 - e) * behaviour + e * greedy agent``."""
    spibb_n_wedge: list[float] = Field(
        default_factory=lambda: [30.0, 100.0, 300.0, 1000.0, 3000.0]
    )
    """Pi_b-SPIBB: state-action pairs logged fewer times than this follow the behaviour."""
    soft_spibb_epsilon: list[float] = Field(
        default_factory=lambda: [0.005, 0.01, 0.02, 0.05, 0.1]
    )
    """Soft-SPIBB error budgets."""
    tilts: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    """Advantage tilts ``pi ∝ pi_b exp(eta A / sigma_A)``: the values of eta."""
    kappa: float = Field(1.0, gt=0.0)
    """Soft-SPIBB error scale: ``e(s, a) = kappa / sqrt(N(s, a))``."""
    n_cells: int = Field(32, ge=1)
    """k-means cells of the observations for SPIBB's pseudo-counts ``N(s, a)``."""
    selection_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    """Share of the training users whose episodes select the member (never trained on)."""
    inflation: float = Field(2.0, ge=1.0)
    """HCPI's widening of the predicted lower bound (2 in Thomas et al. 2015)."""
    seed: int = 0

    def has_members(self) -> bool:
        return bool(
            self.mixtures or self.spibb_n_wedge or self.soft_spibb_epsilon or self.tilts
        )


class TrainConfig(BaseModel):
    """Which agent to train and how."""

    model_config = ConfigDict(extra="forbid")

    agent: AgentName = "auto"
    """``auto``: DiscreteCQL for a discrete action space, CQL for a continuous one."""
    n_steps: int = Field(20_000, ge=1)
    """Gradient steps (every step is trained: no epoch rounding as in d3rlpy's ``fit``)."""
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    torch_threads: int = Field(1, ge=1)
    """Torch intra-op threads; 1 on small shared machines (OpenMP spin-waiting otherwise)."""
    fast_loop: bool = True
    """Vectorised minibatch sampling + d3rlpy's own update; ``False`` runs d3rlpy's ``fit()``."""
    compile: bool | Literal["auto"] = "auto"
    """``torch.compile`` the loss of the discrete Q-learning agents (DiscreteCQL, DiscreteBCQ) on
    the CPU, and give continuous BCQ its blocked target (``fast_continuous.py``): more updates
    per second for 25-40 s of compilation (seconds with torch's on-disk cache; the ratios are
    printed by ``python -m benchmarks.train_speed``); losses equal d3rlpy's to float rounding
    (~1e-7 relative), not bitwise. ``auto``: compile when the run has at least
    ``COMPILE_AUTO_MIN_STEPS`` (5,000) steps to train on the CPU, where it pays for itself;
    ``true`` always; ``false`` never (bit-exact d3rlpy arithmetic). On CUDA, ``true`` switches on
    d3rlpy's own ``compile_graph`` instead (``auto`` leaves it off). If compilation fails (no
    C++ compiler, say), training goes on uncompiled with a warning."""
    checkpoint_every: int = Field(5_000, ge=1)
    log_every: int = Field(500, ge=1)
    """Steps between two points of the loss curves (means over the interval)."""
    reward_scale: float | Literal["auto", "std", "max"] = "auto"
    """Multiplier applied to rewards in training (d3rlpy ``MultiplyRewardScaler``). ``"max"``:
    1 / the largest absolute training reward, so that every reward stays inside the quadratic
    zone of d3rlpy's Huber TD loss (threshold 1) and the critic estimates means; at 1 / std a
    purchase worth several standard deviations falls in the linear zone, and a critic of "most
    decisions earn 0, some earn a purchase" estimates the purchase odds, not the expected margin
    (``offline_rl/README.md``, "Does it learn?"). ``"std"``: 1 / std of the training rewards.
    ``"auto"``: ``"max"`` for the agents whose critic d3rlpy fits with the Huber loss
    (DiscreteCQL, DiscreteBCQ), ``"std"`` for the others (squared loss, or no critic). A number:
    that multiplier."""
    reward_source: Literal["auto", "logged", "expected"] = "auto"
    """The reward in the TD targets of the agents that learn a Q-function (BC ignores it).
    ``logged``: the logged reward. ``expected``: the response model's out-of-fold ``E[reward |
    state, action]`` (``crossfit_expected_rewards``: 2 folds of episodes, the
    ``[train.response]`` model), the same expectation with far less variance where a reward is
    a rare purchase (``offline_rl/README.md``, "Does it learn?"). ``auto``: ``expected`` for
    DiscreteCQL and DiscreteBCQ, ``logged`` for the continuous agents (not measured with
    expected rewards). Validation metrics keep the logged reward."""
    gamma: float | None = Field(None, gt=0.0, le=1.0)
    """Discount factor; ``None`` takes the manifest's ``gamma``."""
    split: Literal["time", "episode", "none"] = "time"
    """Validation split: newest days (``time``) or random episodes (``episode``); never rows."""
    valid_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    onnx: bool = True
    """Also export ``policy.onnx`` (traced, classic exporter) when the exporter works."""

    discrete_cql: DiscreteCQLConfig = Field(default_factory=DiscreteCQLConfig)
    discrete_bcq: DiscreteBCQConfig = Field(default_factory=DiscreteBCQConfig)
    discrete_bc: DiscreteBCConfig = Field(default_factory=DiscreteBCConfig)
    cql: CQLConfig = Field(default_factory=CQLConfig)
    bcq: BCQConfig = Field(default_factory=BCQConfig)
    bc: BCConfig = Field(default_factory=BCConfig)

    behaviour: BehaviourConfig = Field(default_factory=BehaviourConfig)
    response: ResponseConfig = Field(default_factory=ResponseConfig)
