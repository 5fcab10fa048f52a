"""The continuous agents' repeated-observation terms, the observation's share computed once.

Continuous BCQ spends most of an update in its target: the imitator's decoder, the target actor
and both target critics run on ``n_action_samples`` candidate actions for every next observation
(10,000 rows at batch 100), without gradients. CQL's conservative term runs both critics,
forward and backward, on ``3 * n_action_samples`` sampled actions per transition (7,680 rows at
batch 256). Every one of those networks begins with a linear layer on ``[observation, input]``,
whose observation half is the same for all the samples of a transition: here it is computed
once per transition and broadcast (``W [s, a] + b = (W_s s + b) + W_a a``), the rows go through
the rest of the network in blocks that stay in the cache, and ReLUs run in place.

Everything else is d3rlpy's: the same random draws in the same order (a seeded run samples the
same actions), the same layers after the first, the same reductions, and d3rlpy's own update
around these terms. Only the order of some additions changes, so values equal d3rlpy's to float
rounding, not bitwise. ``install_fast_terms`` installs BCQ's target only: CQL's one-pass term is
equal but measured no faster (``offline_rl/README.md``, "Measured speed").
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn

from offline_rl._quiet import import_d3rlpy

import_d3rlpy()
from d3rlpy.models.torch import build_squashed_gaussian_distribution  # noqa: E402


def _split_encoder(encoder: Any) -> tuple[nn.Linear, list[nn.Module]] | None:
    """The first linear layer of d3rlpy's ``VectorEncoderWithAction`` and the layers after it;
    ``None`` for any other encoder (batch norm, discrete actions ...)."""
    layers = getattr(encoder, "_layers", None)
    if not isinstance(layers, nn.Sequential) or getattr(encoder, "_discrete_action", True):
        return None
    modules = list(layers)
    if not modules or not isinstance(modules[0], nn.Linear):
        return None
    if any(isinstance(m, (nn.BatchNorm1d, nn.Dropout, nn.LayerNorm)) for m in modules):
        return None
    return modules[0], modules[1:]


CHUNK_ROWS = 1024
"""Rows per block of the repeated evaluations: a block's hidden activations (1,024 x 256 floats,
1 MiB) stay in a core's L2 cache between the matrix product and the activation, where BCQ's
full 10,000-row pass goes through memory every time (``offline_rl/README.md``, "Measured
speed")."""


def repeated_forward(encoder: Any, head: nn.Linear, obs: torch.Tensor, extra: torch.Tensor) -> Any:
    """``head(encoder(repeat(obs), extra))`` for ``extra`` of shape (batch, k, E): the network
    on each observation paired with each of its k inputs; returns (batch, k, out). Evaluated in
    blocks of about ``CHUNK_ROWS`` rows."""
    step = max(1, CHUNK_ROWS // extra.shape[1])
    if obs.shape[0] <= step:
        return _repeated_block(encoder, head, obs, extra)
    parts = [
        _repeated_block(encoder, head, o, e)
        for o, e in zip(obs.split(step), extra.split(step), strict=True)
    ]
    return torch.cat(parts)


def _repeated_block(encoder: Any, head: nn.Linear, obs: torch.Tensor, extra: torch.Tensor) -> Any:
    split = _split_encoder(encoder)
    assert split is not None
    first, rest = split
    n_obs = obs.shape[1]
    batch, k, _ = extra.shape
    weight = first.weight
    per_obs = torch.addmm(first.bias, obs, weight[:, :n_obs].t())
    h = torch.matmul(extra, weight[:, n_obs:].t()).add_(per_obs.unsqueeze(1))
    h = h.view(batch * k, -1)
    for module in rest:
        # in place where it is ReLU: the product before it is not needed for its gradient
        h = torch.relu_(h) if type(module) is nn.ReLU else module(h)
    return head(h).view(batch, k, -1)


def cql_conservative_loss(
    impl: Any,
    obs_t: torch.Tensor,
    act_t: torch.Tensor,
    obs_tp1: torch.Tensor,
    returns_to_go: torch.Tensor,
) -> torch.Tensor:
    """d3rlpy ``CQLImpl._compute_conservative_loss``, each critic in one pass."""
    n = impl._n_action_samples
    batch = obs_t.shape[0]
    policy = impl._modules.policy
    with torch.no_grad():  # d3rlpy detaches the policy's samples
        dist_t = build_squashed_gaussian_distribution(policy(obs_t))
        acts_t, logp_t = dist_t.sample_n_with_log_prob(n)
        dist_tp1 = build_squashed_gaussian_distribution(policy(obs_tp1))
        acts_tp1, logp_tp1 = dist_tp1.sample_n_with_log_prob(n)
    flat_shape = (batch * n, impl._action_size)
    random_actions = torch.zeros(flat_shape, device=impl._device).uniform_(-1.0, 1.0)
    random_log_prob = math.log(0.5**impl._action_size)
    actions = torch.cat(
        [acts_t, acts_tp1, random_actions.view(batch, n, -1), act_t.view(batch, 1, -1)], dim=1
    )
    values = torch.stack(
        [
            repeated_forward(q._encoder, q._fc, obs_t, actions).view(batch, 3 * n + 1)
            for q in impl._modules.q_funcs
        ]
    )
    target_values = torch.cat(
        [
            values[:, :, :n] - logp_t.view(1, batch, n),
            values[:, :, n : 2 * n] - logp_tp1.view(1, batch, n),
            values[:, :, 2 * n : 3 * n] - random_log_prob,
        ],
        dim=2,
    )
    logsumexp = torch.logsumexp(target_values, dim=2, keepdim=True)
    data_values = values[:, :, 3 * n :]
    loss = (logsumexp - data_values).mean(dim=[1, 2])
    weight: float = impl._conservative_weight
    return weight * (loss - impl._alpha_threshold)


def bcq_target(impl: Any, batch: Any) -> torch.Tensor:
    """d3rlpy ``BCQImpl.compute_target``: the best of ``n_action_samples`` perturbed decoder
    actions under the target critics' mix of max and min (``lam``)."""
    with torch.no_grad():
        obs = batch.next_observations
        size, n, a = obs.shape[0], impl._n_action_samples, impl._action_size
        latent = torch.randn(size * n, 2 * a, device=impl._device).clamp(-0.5, 0.5)
        decoder = impl._modules.vae_decoder
        sampled = repeated_forward(decoder._encoder, decoder._fc, obs, latent.view(size, n, -1))
        policy = impl._modules.targ_policy
        residual = policy._scale * torch.tanh(
            repeated_forward(policy._encoder, policy._fc, obs, sampled)
        )
        action = (sampled + residual).clamp(-1.0, 1.0)
        values = torch.stack(
            [
                repeated_forward(q._encoder, q._fc, obs, action).view(size, n)
                for q in impl._modules.targ_q_funcs
            ]
        )
        lam = impl._lam
        mix = (1.0 - lam) * values.max(dim=0).values + lam * values.min(dim=0).values
        best = mix.argmax(dim=1, keepdim=True)
        return mix.gather(1, best)


def _mean_q_heads(q_funcs: Any) -> bool:
    return all(
        _split_encoder(getattr(q, "_encoder", None)) is not None
        and isinstance(getattr(q, "_fc", None), nn.Linear)
        and q._fc.out_features == 1
        for q in q_funcs
    )


def install_fast_terms(algo: Any) -> bool:
    """Replace BCQ's target by ``bcq_target`` on ``algo.impl``; ``False`` (nothing changed) for
    any other agent or network layout.

    CQL's one-pass conservative term (``cql_conservative_loss``, tested equal to d3rlpy's) is
    not installed: it measured no faster than d3rlpy's, because the critics' second-layer
    products, which it cannot remove, are half of d3rlpy's update (``offline_rl/README.md``,
    "Measured speed")."""
    from d3rlpy.algos.qlearning.torch.bcq_impl import BCQImpl

    impl = algo.impl
    if isinstance(impl, BCQImpl):
        mods = impl._modules
        if not (
            _mean_q_heads(mods.targ_q_funcs)
            and _split_encoder(mods.vae_decoder._encoder) is not None
            and _split_encoder(mods.targ_policy._encoder) is not None
        ):
            return False
        impl.compute_target = functools.partial(bcq_target, impl)
        return True
    return False
