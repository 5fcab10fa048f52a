"""What every agent config shares: d3rlpy's encoder and scaler plumbing, and ``create()``."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from offline_rl.errors import TrainingError

AnyAlgo = Any
"""A d3rlpy ``QLearningAlgoBase`` (d3rlpy's generics are not worth spelling out here)."""


class AgentConfig(BaseModel):
    """Base of the per-agent tables: d3rlpy's field names, ``create()`` builds the d3rlpy algo.

    Subclasses set ``name`` (our TOML name), ``discrete`` (the action space it handles) and
    ``d3rlpy_name`` (the name of the d3rlpy config class in ``d3rlpy.algos``, imported lazily
    so that reading the config does not import torch); their own fields are passed to it
    verbatim, so a field's meaning and name are d3rlpy's.
    """

    model_config = ConfigDict(extra="forbid")

    name: ClassVar[str] = ""
    discrete: ClassVar[bool] = True
    d3rlpy_name: ClassVar[str] = ""
    learns_values: ClassVar[bool] = True
    """Whether the agent fits a Q-function from rewards (behaviour cloning does not)."""
    auto_reward_source: ClassVar[Literal["logged", "expected"]] = "logged"
    """What ``[train] reward_source = "auto"`` means for this agent."""
    huber_critic: ClassVar[bool] = False
    """Whether d3rlpy fits this agent's critic with the Huber TD loss (threshold 1 training
    unit): its rewards are scaled by 1 / max |reward| under ``reward_scale = "auto"``."""

    hidden_units: list[int] = Field(default_factory=lambda: [256, 256])
    """Hidden layers of every network (d3rlpy ``VectorEncoderFactory``)."""
    activation: str = "relu"
    clip_grad_norm: float | None = None
    """Gradient-norm clipping of every optimizer (d3rlpy ``AdamFactory.clip_grad_norm``)."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """Learning rate of every optimizer over the run: ``constant`` (d3rlpy's), or ``cosine``:
    annealed from the configured rate to 0 at the run's last step (Loshchilov & Hutter, "SGDR",
    2017; d3rlpy ``CosineAnnealingLRFactory(T_max=n_steps)``), so that the weights a run ends
    with are not one noisy Adam iterate (see ``offline_rl/README.md``, "Does it learn?")."""

    # names of the fields that are ours, not d3rlpy's config fields
    _ours: ClassVar[frozenset[str]] = frozenset(
        {"hidden_units", "activation", "clip_grad_norm", "lr_schedule"}
    )

    def d3rlpy_kwargs(self) -> dict[str, Any]:
        """The fields that go to d3rlpy's config unchanged."""
        return {k: v for k, v in self.model_dump().items() if k not in self._ours}

    def create(
        self,
        *,
        gamma: float,
        device: str = "cpu:0",
        action_scaler: Any = None,
        reward_scaler: Any = None,
        compile_graph: bool = False,
        n_steps: int | None = None,
    ) -> AnyAlgo:
        """Build the d3rlpy algorithm with this config (d3rlpy's ``Config.create`` spirit).

        ``n_steps``: the run's length, which ``lr_schedule = "cosine"`` anneals over (required
        then)."""
        from offline_rl._quiet import import_d3rlpy

        d3rlpy = import_d3rlpy()
        from d3rlpy.models.encoders import VectorEncoderFactory
        from d3rlpy.optimizers.lr_schedulers import CosineAnnealingLRFactory
        from d3rlpy.optimizers.optimizers import AdamFactory

        if self.discrete and action_scaler is not None:
            raise TrainingError(f"{self.name}: a discrete agent takes no action scaler")
        encoder = VectorEncoderFactory(
            hidden_units=list(self.hidden_units), activation=self.activation
        )
        schedule = None
        if self.lr_schedule == "cosine":
            if not n_steps or n_steps < 1:
                raise TrainingError(f"{self.name}: lr_schedule = 'cosine' needs the run's n_steps")
            schedule = CosineAnnealingLRFactory(T_max=n_steps)
        optim = AdamFactory(clip_grad_norm=self.clip_grad_norm, lr_scheduler_factory=schedule)
        config_class = getattr(d3rlpy.algos, self.d3rlpy_name)
        fields = config_class.__dataclass_fields__
        kwargs = self.d3rlpy_kwargs()
        for key in fields:
            if key.endswith("encoder_factory"):
                kwargs[key] = encoder
            elif key.endswith("optim_factory"):
                kwargs[key] = optim
        kwargs.update(gamma=gamma, reward_scaler=reward_scaler, compile_graph=compile_graph)
        if not self.discrete:
            kwargs["action_scaler"] = action_scaler
        config = config_class(**kwargs)
        return config.create(device=device)


class DiscreteQLearningConfig(AgentConfig):
    """What DiscreteCQL and DiscreteBCQ share: defaults for logged e-commerce data.

    d3rlpy's defaults come from Atari (batch 32, learning rate 6.25e-5, a hard target sync every
    8,000 steps): on tens of thousands to millions of logged decisions with a few tens of
    features, a batch of 256 gives steadier gradients for the same wall time on a CPU, 3e-4 is
    the usual Adam rate for MLPs of this size, and a sync every 1,000 steps lets the target
    follow a run of 10k-50k steps (a sync every 8,000 would leave a 20k-step run with two). The
    rate is annealed to 0 over the run (``lr_schedule = "cosine"``): with a constant rate the last
    Adam iterate's per-tier values wander by tenths of a euro, the size of the differences the
    agent has to rank. d3rlpy fits their critics with the Huber TD loss (``huber_critic``).
    Their TD targets use the response model's expected reward under ``reward_source = "auto"``
    (``auto_reward_source``): the logged purchases' noise otherwise drowns the tier effects.
    """

    discrete: ClassVar[bool] = True
    huber_critic: ClassVar[bool] = True
    auto_reward_source: ClassVar[Literal["logged", "expected"]] = "expected"

    learning_rate: float = Field(3e-4, gt=0.0)
    batch_size: int = Field(256, ge=1)
    n_critics: int = Field(1, ge=1)
    target_update_interval: int = Field(1_000, ge=1)
    lr_schedule: Literal["constant", "cosine"] = "cosine"


def d3rlpy_defaults(d3rlpy_name: str, names: list[str]) -> dict[str, Any]:
    """d3rlpy's own defaults of some fields of ``d3rlpy.algos.<d3rlpy_name>`` (docs, tests)."""
    from offline_rl._quiet import import_d3rlpy

    d3rlpy = import_d3rlpy()

    fields = getattr(d3rlpy.algos, d3rlpy_name).__dataclass_fields__
    return {name: fields[name].default for name in names}


__all__ = ["AgentConfig", "AnyAlgo", "DiscreteQLearningConfig", "d3rlpy_defaults"]
