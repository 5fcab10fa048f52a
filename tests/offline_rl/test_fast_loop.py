"""The fast loop is d3rlpy's maths: identical minibatches give identical losses and weights."""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from offline_rl.agents import AGENT_CONFIGS
from offline_rl.data import TransitionManifest, to_arrays, to_mdp_dataset
from offline_rl.fast_loop import FastTrainer, numpy_batch, to_tensors, transition_numpy
from offline_rl.train import build_algo

SMALL = {"hidden_units": [32, 32], "batch_size": 16}


def _algo(name: str, manifest: TransitionManifest, seed: int = 0) -> Any:
    import d3rlpy

    agent = AGENT_CONFIGS[name](**SMALL)
    d3rlpy.seed(seed)
    return build_algo(agent, manifest, gamma=0.9, multiplier=0.5, device="cpu:0", n_steps=100)


def _params(algo: Any) -> torch.Tensor:
    modules = algo.impl.modules.get_torch_modules()
    return torch.cat([p.detach().flatten() for m in modules.values() for p in m.parameters()])


def _d3rlpy_batch(dataset: Any, indices: np.ndarray) -> Any:
    """d3rlpy's own sampling path for given transition indices (its transition picker)."""
    from d3rlpy.dataset import TransitionMiniBatch

    picked = [dataset.transition_picker(*dataset.buffer[int(i)]) for i in indices]
    return TransitionMiniBatch.from_transitions(picked)


@pytest.mark.parametrize("name", ["discrete_cql", "discrete_bcq", "cql", "bcq"])
def test_same_minibatches_give_identical_losses_and_weights(
    name: str,
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
    continuous_data: tuple[pl.DataFrame, TransitionManifest],
) -> None:
    frame, manifest = continuous_data if name in ("cql", "bcq") else discrete_data
    arrays = to_arrays(frame, manifest)
    dataset = to_mdp_dataset(arrays)
    stock = _algo(name, manifest)
    fast = _algo(name, manifest)
    public = _algo(name, manifest)
    assert torch.equal(_params(stock), _params(fast))
    trainer = FastTrainer(fast, to_tensors(arrays, fast, "cpu:0"), seed=1)
    fields = transition_numpy(arrays)
    n_steps = 6 if name in ("cql", "bcq") else 25
    for step in range(n_steps):
        idx = trainer.sample_indices()
        torch.manual_seed(100 + step)  # the continuous agents sample actions from torch's RNG
        loss_stock = stock.update(_d3rlpy_batch(dataset, idx.numpy()))
        torch.manual_seed(100 + step)
        loss_fast = trainer.update(trainer.batch(idx))
        torch.manual_seed(100 + step)
        loss_public = public.update(numpy_batch(fields, idx.numpy()))
        assert loss_fast == loss_stock  # bit-identical floats
        assert loss_public == loss_stock
    assert stock.grad_step == fast.grad_step == public.grad_step == n_steps
    assert torch.equal(_params(stock), _params(fast))
    assert torch.equal(_params(stock), _params(public))


def test_sampler_is_seeded(discrete_data: tuple[pl.DataFrame, TransitionManifest]) -> None:
    frame, manifest = discrete_data
    arrays = to_arrays(frame, manifest)
    algo = _algo("discrete_cql", manifest)
    data = to_tensors(arrays, algo, "cpu:0")
    a = FastTrainer(algo, data, seed=5)
    b = FastTrainer(algo, data, seed=5)
    c = FastTrainer(algo, data, seed=6)
    first = [a.sample_indices() for _ in range(3)]
    assert all(torch.equal(x, b.sample_indices()) for x in first)
    assert not torch.equal(first[0], c.sample_indices())
    assert int(torch.cat(first).max()) < arrays.n_transitions


def test_target_sync_follows_the_step_counter(
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
) -> None:
    frame, manifest = discrete_data
    arrays = to_arrays(frame, manifest)
    agent = AGENT_CONFIGS["discrete_cql"](**SMALL, target_update_interval=5)
    algo = build_algo(agent, manifest, gamma=0.9, multiplier=1.0, device="cpu:0", n_steps=100)
    trainer = FastTrainer(algo, to_tensors(arrays, algo, "cpu:0"), seed=0)
    q, targ = algo.impl._modules.q_funcs, algo.impl._modules.targ_q_funcs

    def synced() -> bool:
        return all(
            torch.equal(a, b) for a, b in zip(q.parameters(), targ.parameters(), strict=True)
        )

    for _ in range(4):  # step 0 synced (0 % 5 == 0), steps 1..3 not
        trainer.step()
    assert not synced()
    trainer.step()  # grad_step 4 -> no sync
    trainer.step()  # grad_step 5 -> sync after the update
    assert synced()


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("ECOMRL_TEST_COMPILE") == "0", reason="ECOMRL_TEST_COMPILE=0 skips torch.compile"
)
def test_compiled_update_matches_to_float_rounding(
    discrete_data: tuple[pl.DataFrame, TransitionManifest],
) -> None:
    from offline_rl.fast_loop import compile_update

    frame, manifest = discrete_data
    arrays = to_arrays(frame, manifest)
    plain = _algo("discrete_cql", manifest)
    comp = _algo("discrete_cql", manifest)
    assert compile_update(comp)
    tp = FastTrainer(plain, to_tensors(arrays, plain, "cpu:0"), seed=2)
    tc = FastTrainer(comp, to_tensors(arrays, comp, "cpu:0"), seed=2)
    for _ in range(8):
        idx = tp.sample_indices()
        tc.sample_indices()
        lp = tp.update(tp.batch(idx))
        lc = tc.update(tc.batch(idx))
        assert lp.keys() == lc.keys()
        for key in lp:
            assert lc[key] == pytest.approx(lp[key], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(_params(comp), _params(plain), rtol=1e-5, atol=1e-6)


def test_a_failed_compilation_falls_back_to_d3rlpys_update(
    discrete_data: tuple[pl.DataFrame, TransitionManifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No C++ toolchain (say): the first update's compilation fails and training goes on with
    d3rlpy's own update, bit for bit."""
    import offline_rl.fast_loop as fl

    def broken_compile(fn: Any, **_: Any) -> Any:
        def run(*args: Any) -> Any:
            raise RuntimeError("InductorError: no working C++ compiler found")

        return run

    monkeypatch.setattr(fl.torch, "compile", broken_compile)
    frame, manifest = discrete_data
    arrays = to_arrays(frame, manifest)
    plain = _algo("discrete_cql", manifest)
    comp = _algo("discrete_cql", manifest)
    assert fl.compile_update(comp)
    tp = FastTrainer(plain, to_tensors(arrays, plain, "cpu:0"), seed=2)
    tc = FastTrainer(comp, to_tensors(arrays, comp, "cpu:0"), seed=2)
    for _ in range(5):
        idx = tp.sample_indices()
        tc.sample_indices()
        assert tc.update(tc.batch(idx)) == tp.update(tp.batch(idx))
    assert torch.equal(_params(comp), _params(plain))


@pytest.mark.parametrize(
    ("setting", "steps_left", "expected"),
    [("auto", 4_999, False), ("auto", 5_000, True), (True, 10, True), (False, 10**6, False)],
)
def test_compile_auto_compiles_long_runs_only(
    setting: Any, steps_left: int, expected: bool
) -> None:
    from offline_rl.config import TrainConfig
    from offline_rl.train import _wants_compile

    assert _wants_compile(TrainConfig(compile=setting), steps_left) is expected


def _critic_grads(algo: Any) -> torch.Tensor:
    q_funcs = algo.impl._modules.q_funcs
    return torch.cat([p.grad.flatten() for p in q_funcs.parameters() if p.grad is not None])


@pytest.mark.parametrize("name", ["cql", "bcq"])
@pytest.mark.parametrize("chunk_rows", [40, 1024])
def test_continuous_terms_equal_d3rlpys_on_the_same_weights(
    name: str,
    chunk_rows: int,
    continuous_data: tuple[pl.DataFrame, TransitionManifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CQL's conservative term (value and critic gradients) and BCQ's target, computed once per
    observation, equal d3rlpy's own on the same weights and random draws (in blocks of 40 rows
    too, so that the blocked path runs)."""
    import offline_rl.fast_continuous as fc

    monkeypatch.setattr(fc, "CHUNK_ROWS", chunk_rows)
    frame, manifest = continuous_data
    algo = _algo(name, manifest)
    trainer = FastTrainer(algo, to_tensors(to_arrays(frame, manifest), algo, "cpu:0"), seed=1)
    batch = trainer.batch(trainer.sample_indices())
    impl = algo.impl
    ours = functools.partial(fc.cql_conservative_loss if name == "cql" else fc.bcq_target, impl)
    theirs = impl._compute_conservative_loss if name == "cql" else impl.compute_target
    results: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    for term in (theirs, ours):
        impl._modules.q_funcs.zero_grad()
        torch.manual_seed(7)  # the same random actions for both
        if name == "cql":
            value = term(
                batch.observations, batch.actions, batch.next_observations, batch.returns_to_go
            )
            value.sum().backward()
            grads.append(_critic_grads(algo))
        else:
            value = term(batch)
        results.append(value.detach())
    assert results[0].shape == results[1].shape
    torch.testing.assert_close(results[1], results[0], rtol=1e-6, atol=1e-6)
    if grads:
        # sums that cancel to zero (the last bias's gradient of a logsumexp minus a value is
        # exactly 0 in exact arithmetic) keep rounding noise: compare at the gradients' scale
        scale = float(grads[0].abs().max())
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5 * scale)


def test_fast_bcq_update_follows_d3rlpys_loss_trace(
    continuous_data: tuple[pl.DataFrame, TransitionManifest],
) -> None:
    """With BCQ's target installed (``compile_update``), the update's losses equal d3rlpy's
    update's to 1e-6 relative, step by step on the same minibatches and seeds; CQL and BC keep
    d3rlpy's own update."""
    from offline_rl.fast_loop import compile_update

    frame, manifest = continuous_data
    arrays = to_arrays(frame, manifest)
    plain = _algo("bcq", manifest)
    fast = _algo("bcq", manifest)
    assert compile_update(fast)
    assert not compile_update(_algo("cql", manifest))
    assert not compile_update(_algo("bc", manifest))
    tp = FastTrainer(plain, to_tensors(arrays, plain, "cpu:0"), seed=2)
    tf = FastTrainer(fast, to_tensors(arrays, fast, "cpu:0"), seed=2)
    for step in range(5):
        idx = tp.sample_indices()
        tf.sample_indices()
        torch.manual_seed(200 + step)
        lp = tp.update(tp.batch(idx))
        torch.manual_seed(200 + step)
        lf = tf.update(tf.batch(idx))
        assert lp.keys() == lf.keys()
        for key in lp:
            assert lf[key] == pytest.approx(lp[key], rel=1e-6, abs=1e-7), (step, key)
