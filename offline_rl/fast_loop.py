"""The fast training loop: d3rlpy's maths, without d3rlpy's per-transition Python sampling.

d3rlpy's ``fit()`` draws every minibatch transition by transition in Python (a ``Transition``
object per sample, then ``np.stack``), converts the numpy batch to tensors and applies the
scalers, all on every step. Here:

1. the transitions live once in contiguous tensors on the training device (observations,
   actions, rewards, next observations, next actions, terminals, intervals; next observation and
   next action are zeros after a terminal step, as d3rlpy's ``BasicTransitionPicker`` makes them);
2. the action and reward scalers are applied once to the whole dataset (they are element-wise,
   so each element gets the exact same float as d3rlpy's per-batch transform);
3. a minibatch is one ``torch.randint`` (own seeded generator) and one ``index_select`` per
   field;
4. the update is d3rlpy's own: ``algo.impl.update(batch, grad_step)`` followed by the step
   counter increment, which is precisely what the public ``algo.update(numpy_batch)`` does after
   its numpy-to-tensor conversion (``numpy_update`` below goes through ``algo.update`` itself).

Optionally (``compile=True``, on the CPU) the loss of the discrete Q-learning agents' d3rlpy
``compute_grad`` (``compute_loss(batch, compute_target(batch))``) is wrapped in
``torch.compile``: the same functions are traced, the duplicated forward passes (d3rlpy runs
the online Q-network twice on the same observations, for the TD error and for the conservative
term) are merged and the element-wise kernels fused. Losses then equal d3rlpy's to float rounding
(about 1e-7 relative), not bitwise. For continuous BCQ the same switch computes its target's
first layers once per next observation instead of once per candidate action
(``offline_rl.fast_continuous``), also equal to float rounding. On CUDA, d3rlpy's own
``compile_graph`` is used instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import structlog
import torch
from numpy.typing import NDArray

from offline_rl._quiet import import_d3rlpy
from offline_rl.data import TransitionArrays

import_d3rlpy()
from d3rlpy.dataset import TransitionMiniBatch  # noqa: E402
from d3rlpy.torch_utility import TorchMiniBatch  # noqa: E402

log = structlog.get_logger(__name__)


@dataclasses.dataclass
class TensorTransitions:
    """The training transitions as contiguous float32 tensors, scalers applied."""

    observations: torch.Tensor  # (T, F)
    actions: torch.Tensor  # (T, A) (discrete: (T, 1) action index as float, as d3rlpy)
    rewards: torch.Tensor  # (T, 1)
    next_observations: torch.Tensor
    next_actions: torch.Tensor
    terminals: torch.Tensor  # (T, 1)
    intervals: torch.Tensor  # (T, 1)
    device: str

    @property
    def size(self) -> int:
        return int(self.observations.shape[0])


def transition_numpy(arrays: TransitionArrays) -> dict[str, NDArray[np.float32]]:
    """The transitions as numpy arrays laid out as d3rlpy's ``TransitionMiniBatch`` fields."""
    rows, nxt = arrays.transition_rows, arrays.next_rows
    terminal = nxt < 0
    safe_next = np.where(terminal, rows, nxt)
    obs = arrays.observations[rows]
    next_obs = arrays.observations[safe_next]
    next_obs[terminal] = 0.0
    actions = arrays.actions.reshape(arrays.n_rows, -1).astype(np.float32)
    act = actions[rows]
    next_act = actions[safe_next]
    next_act[terminal] = 0.0
    t = len(rows)
    return {
        "observations": np.ascontiguousarray(obs),
        "actions": np.ascontiguousarray(act),
        "rewards": arrays.rewards[rows].reshape(t, 1).astype(np.float32),
        "next_observations": np.ascontiguousarray(next_obs),
        "next_actions": np.ascontiguousarray(next_act),
        "terminals": terminal.astype(np.float32).reshape(t, 1),
        "intervals": np.ones((t, 1), dtype=np.float32),
    }


def to_tensors(arrays: TransitionArrays, algo: Any, device: str) -> TensorTransitions:
    """Move the transitions to ``device`` once, applying the algo's scalers once."""
    fields = transition_numpy(arrays)
    tensors = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in fields.items()}
    cfg = algo.config
    with torch.no_grad():
        if cfg.observation_scaler is not None:
            for key in ("observations", "next_observations"):
                tensors[key] = cfg.observation_scaler.transform(tensors[key])
        if cfg.action_scaler is not None:
            for key in ("actions", "next_actions"):
                tensors[key] = cfg.action_scaler.transform(tensors[key])
        if cfg.reward_scaler is not None:
            tensors["rewards"] = cfg.reward_scaler.transform(tensors["rewards"])
    return TensorTransitions(**{k: v.contiguous() for k, v in tensors.items()}, device=device)


class FastTrainer:
    """Minibatches drawn at once from contiguous tensors, updated by d3rlpy's own update.

    The index stream comes from a dedicated ``torch.Generator`` seeded with ``seed`` (on the
    CPU, so a CPU run and a GPU run draw the same minibatches); its state is part of the
    checkpoints, so a resumed run draws the minibatches the uninterrupted run would have drawn.
    """

    def __init__(
        self, algo: Any, data: TensorTransitions, seed: int = 0, foreach_optim: bool = True
    ) -> None:
        if algo.impl is None:
            raise ValueError("build the algo (create_impl) before the FastTrainer")
        self.algo = algo
        if foreach_optim:
            use_foreach_optimizers(algo)
        self.data = data
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.batch_size = int(algo.config.batch_size)

    def sample_indices(self) -> torch.Tensor:
        """One minibatch of transition indices, uniform with replacement (as d3rlpy)."""
        return torch.randint(
            self.data.size, (self.batch_size,), generator=self.generator, device="cpu"
        )

    def batch(self, indices: torch.Tensor) -> TorchMiniBatch:
        """The ``TorchMiniBatch`` of the given transition indices."""
        d = self.data
        idx = indices.to(d.device, non_blocking=True)
        rewards = d.rewards.index_select(0, idx)
        return TorchMiniBatch(
            observations=d.observations.index_select(0, idx),
            actions=d.actions.index_select(0, idx),
            rewards=rewards,
            next_observations=d.next_observations.index_select(0, idx),
            next_actions=d.next_actions.index_select(0, idx),
            returns_to_go=torch.zeros_like(rewards),
            terminals=d.terminals.index_select(0, idx),
            intervals=d.intervals.index_select(0, idx),
            device=d.device,
        )

    def update(self, batch: TorchMiniBatch) -> dict[str, float]:
        """d3rlpy's update on a ready ``TorchMiniBatch`` (what ``algo.update`` does after
        converting its numpy batch)."""
        algo = self.algo
        loss: dict[str, float] = algo.impl.update(batch, algo.grad_step)
        algo.set_grad_step(algo.grad_step + 1)
        return loss

    def step(self) -> dict[str, float]:
        """Draw one minibatch and apply one gradient step."""
        return self.update(self.batch(self.sample_indices()))

    def state(self) -> dict[str, Any]:
        """The sampler's state, for checkpoints."""
        return {"generator": self.generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def use_foreach_optimizers(algo: Any) -> int:
    """Switch d3rlpy's Adam optimizers to torch's multi-tensor (``foreach``) implementation.

    Same update rule and the same per-element arithmetic, in a few grouped kernels instead of
    a dozen small ones per parameter tensor (torch picks ``foreach`` by default only on CUDA).
    The parity tests check that the losses and weights stay bit-identical. Returns the number of
    optimizers switched.
    """
    from d3rlpy.optimizers.optimizers import OptimizerWrapper

    count = 0
    for value in vars(algo.impl.modules).values():
        if isinstance(value, OptimizerWrapper):
            for group in value.optim.param_groups:
                if "foreach" in group:
                    group["foreach"] = True
            count += 1
    return count


def numpy_batch(fields: dict[str, NDArray[np.float32]], indices: NDArray[np.int64]) -> Any:
    """A d3rlpy ``TransitionMiniBatch`` of the given transitions, built with numpy fancy
    indexing (no ``Transition`` objects), for d3rlpy's public ``algo.update``."""
    return TransitionMiniBatch(
        observations=fields["observations"][indices],
        actions=fields["actions"][indices],
        rewards=fields["rewards"][indices],
        next_observations=fields["next_observations"][indices],
        next_actions=fields["next_actions"][indices],
        terminals=fields["terminals"][indices],
        intervals=fields["intervals"][indices],
        transitions=[],
    )


COMPILE_AUTO_MIN_STEPS = 5_000
"""``compile = "auto"`` compiles a run with at least this many steps left to train, where the
faster updates repay the 25-40 s of compilation (the ratios: ``python -m
benchmarks.train_speed``, and ``offline_rl/README.md``, "Measured speed")."""


def compile_update(algo: Any) -> bool:
    """The faster, not bit-identical update (CPU); ``True`` if installed.

    Discrete Q-learning agents: ``torch.compile`` of the loss. d3rlpy's ``compute_grad`` is
    ``zero_grad(); loss = compute_loss(batch, compute_target(batch)); loss.loss.backward()``:
    the same sequence runs here with the two d3rlpy methods traced into one compiled graph
    (forward and backward via AOTAutograd).

    Continuous BCQ: its target's observation terms computed once per next observation
    (``offline_rl.fast_continuous``); no compilation. Continuous CQL: not applicable (d3rlpy's
    update is kept; see ``install_fast_terms``).
    """
    from offline_rl.fast_continuous import install_fast_terms

    if install_fast_terms(algo):
        log.info("fast_continuous_terms_installed", agent=type(algo).__name__)
        return True
    impl = algo.impl
    if impl is None or not all(
        hasattr(impl, name) for name in ("compute_loss", "compute_target", "_compute_grad")
    ):
        log.info("compile_not_applicable", agent=type(algo).__name__)
        return False
    optim = impl._modules.optim

    def loss_fn(batch: TorchMiniBatch) -> Any:
        return impl.compute_loss(batch, impl.compute_target(batch))

    compiled: Callable[[TorchMiniBatch], Any] = torch.compile(loss_fn, dynamic=False)
    eager = impl._compute_grad
    first = [True]

    def compute_grad(batch: TorchMiniBatch) -> Any:
        optim.zero_grad()
        if not first[0]:
            loss = compiled(batch)
            loss.loss.backward()
            return loss
        first[0] = False
        try:  # the first call compiles: fall back to d3rlpy's own path if that fails
            loss = compiled(batch)
            loss.loss.backward()
        except Exception as exc:  # any compiler failure (no C++ toolchain, ...)
            log.warning(
                "compile_failed_training_uncompiled",
                agent=type(algo).__name__,
                error=f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}",
            )
            impl._compute_grad = eager
            return eager(batch)
        return loss

    impl._compute_grad = compute_grad
    return True
