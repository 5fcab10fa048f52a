"""Bootstrap, jackknife and lower bounds against brute force and known distributions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evaluation import intervals
from evaluation.data import EpisodeData
from evaluation.estimators import (
    OPEInput,
    PerDecisionIS,
    WeightedDoublyRobust,
    WeightedPerDecisionIS,
)
from evaluation.intervals import (
    ResampleCounts,
    bernstein_lower_bound,
    bootstrap_from_counts,
    bootstrap_values,
    clear_shared_counts,
    jackknife_values,
    poisson_counts,
    resample_counts,
    shared_counts,
    summarise,
    uniform16,
)


def _random_input(n_episodes: int = 40, seed: int = 0) -> OPEInput:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 6, size=n_episodes)
    episode = np.repeat(np.arange(n_episodes), lengths)
    n = len(episode)
    data = EpisodeData.from_arrays(
        episode=episode,
        action=rng.integers(0, 2, size=n),
        reward=rng.normal(1.0, 1.0, size=n),
        behaviour_propensity=rng.uniform(0.3, 0.7, size=n),
        n_actions=2,
    )
    return OPEInput(
        data,
        rng.uniform(0.1, 0.9, size=n),
        q_logged=rng.normal(size=n),
        v_hat=rng.normal(size=n),
    )


def test_resample_counts_are_multinomial_draws_of_n() -> None:
    counts = resample_counts(50, 200, np.random.default_rng(0))
    assert counts.shape == (200, 50)
    assert np.all(counts.sum(axis=1) == 50)
    assert counts.mean() == pytest.approx(1.0)
    assert counts.var() == pytest.approx(1 - 1 / 50, rel=0.1)  # multinomial variance


def test_poisson_counts_have_the_poisson_one_law() -> None:
    counts = poisson_counts(1000, 1000, np.random.default_rng(0))
    values, freq = np.unique(counts, return_counts=True)
    expected = stats.poisson.pmf(values, 1.0) * counts.size
    assert np.allclose(freq[:5], expected[:5], rtol=0.01)
    assert counts.mean() == pytest.approx(1.0, abs=0.003)


@pytest.mark.parametrize("draw", [resample_counts, poisson_counts])
def test_bootstrap_replicates_equal_brute_force_resampling(draw) -> None:  # type: ignore[no-untyped-def]
    inp = _random_input()
    d = inp.data
    stats_ = [
        WeightedPerDecisionIS().episode_statistics(inp),
        WeightedDoublyRobust().episode_statistics(inp),
        PerDecisionIS().episode_statistics(inp),
    ]
    counts = draw(d.n_episodes, 25, np.random.default_rng(7))
    ours = bootstrap_from_counts(stats_, counts)
    for b, c in enumerate(counts):
        # brute force: episodes duplicated as often as drawn, estimators recomputed
        picks = np.repeat(np.arange(d.n_episodes), c.astype(int))
        rows = np.concatenate([np.flatnonzero(d.episode == i) for i in picks])
        data = EpisodeData.from_arrays(
            episode=np.repeat(np.arange(len(picks)), d.lengths[picks]),
            step=d.step[rows],
            action=d.action[rows],
            reward=d.reward[rows],
            behaviour_propensity=d.behaviour_propensity[rows],
            n_actions=2,
        )
        sub = OPEInput(
            data,
            inp.target_probability[rows],
            q_logged=inp.q_logged[rows],
            v_hat=inp.v_hat[rows],  # type: ignore[index]
        )
        expected = [
            WeightedPerDecisionIS().estimate_policy_value(sub),
            WeightedDoublyRobust().estimate_policy_value(sub),
            PerDecisionIS().estimate_policy_value(sub),
        ]
        assert np.allclose(ours[b], expected, rtol=1e-5), b


def test_generated_replicates_match_explicit_counts_in_distribution() -> None:
    inp = _random_input(n_episodes=200, seed=5)
    s = [PerDecisionIS().episode_statistics(inp)]
    for scheme in ("poisson", "multinomial"):
        reps = bootstrap_values(s, n_resamples=3000, seed=1, scheme=scheme)[:, 0]
        x = s[0].contributions()
        assert reps.mean() == pytest.approx(x.mean(), abs=3 * x.std() / np.sqrt(200) / 20)
        assert reps.std() == pytest.approx(x.std() / np.sqrt(200), rel=0.08)


def test_jackknife_equals_leave_one_episode_out() -> None:
    inp = _random_input(n_episodes=15)
    d = inp.data
    jack = jackknife_values(WeightedDoublyRobust().episode_statistics(inp))
    for i in range(d.n_episodes):
        keep = np.setdiff1d(np.arange(d.n_episodes), [i])
        rows = np.isin(d.episode, keep)
        sub = d.subset_episodes(keep)
        loo = OPEInput(
            sub,
            inp.target_probability[rows],
            q_logged=inp.q_logged[rows],
            v_hat=inp.v_hat[rows],  # type: ignore[index]
        )
        assert jack[i] == pytest.approx(WeightedDoublyRobust().estimate_policy_value(loo))


def test_mean_type_standard_error_and_t_bound_match_the_textbook() -> None:
    inp = _random_input(n_episodes=400, seed=2)
    s = summarise([PerDecisionIS().episode_statistics(inp)], n_resamples=2000, seed=1)[0]
    x = PerDecisionIS().episode_statistics(inp).contributions()
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert s.se == pytest.approx(se, rel=0.1)  # bootstrap SE
    assert s.lower_bound_t == pytest.approx(x.mean() - stats.t.ppf(0.95, len(x) - 1) * se)
    assert s.ci_low < x.mean() < s.ci_high
    assert s.bca_low < s.bca_high and s.percentile_low < s.percentile_high


def test_bca_corrects_a_skewed_statistic_towards_the_exact_interval() -> None:
    # exponential data: the exact interval of the mean is from the gamma distribution
    rng = np.random.default_rng(3)
    hits_bca, hits_pct = [], []
    for j in range(150):
        x = rng.exponential(1.0, size=30)
        data = EpisodeData.from_arrays(
            episode=np.arange(30),
            action=np.zeros(30, int),
            reward=x,
            behaviour_propensity=np.ones(30),
            n_actions=1,
        )
        inp = OPEInput(data, np.ones(30))
        s = summarise([PerDecisionIS().episode_statistics(inp)], n_resamples=400, seed=j)[0]
        hits_bca.append(s.bca_low <= 1.0 <= s.bca_high)
        hits_pct.append(s.percentile_low <= 1.0 <= s.percentile_high)
    assert np.mean(hits_bca) >= 0.88
    assert np.mean(hits_bca) >= np.mean(hits_pct) - 0.02


def test_bernstein_lower_bound_holds_with_high_probability() -> None:
    rng = np.random.default_rng(4)
    misses = 0
    for _ in range(200):
        x = rng.lognormal(0.0, 1.0, size=500)  # true mean exp(0.5)
        lb = bernstein_lower_bound(x, 0.05, seed=int(rng.integers(1 << 30)))
        misses += lb > np.exp(0.5)
        assert lb < x.mean()
    assert misses / 200 <= 0.05


def test_shared_resample_counts_give_the_same_replicates_as_fresh_ones() -> None:
    inp = _random_input(n_episodes=80, seed=9)
    stats_ = [WeightedPerDecisionIS().episode_statistics(inp)]
    fresh = bootstrap_values(stats_, n_resamples=300, seed=4, chunk_size=64)
    shared = ResampleCounts(80, 300, seed=4, chunk_size=64)
    first = bootstrap_values(stats_, n_resamples=300, counts=shared)  # draws and keeps
    second = bootstrap_values(stats_, n_resamples=300, counts=shared)  # reuses the kept counts
    assert np.allclose(fresh, first) and np.allclose(first, second)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 7), (4, 4), (33, 101)])
def test_uniform16_is_numpys_integer_stream_and_leaves_the_same_state(shape) -> None:  # type: ignore[no-untyped-def]
    ours, numpys = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(3):  # consecutive calls, odd sizes leaving half a 64-bit word behind
        got = uniform16(ours, *shape)
        want = numpys.integers(0, 65536, size=shape, dtype=np.uint16)
        assert got.dtype == np.uint16 and np.array_equal(got, want)
        assert ours.integers(0, 1 << 20) == numpys.integers(0, 1 << 20)
        assert ours.random() == numpys.random()


def test_estimate_interval_with_shared_counts_equals_independent_draws() -> None:
    inp = _random_input(n_episodes=120, seed=12)
    clear_shared_counts()
    for method in ("percentile", "bca"):
        for estimator in (PerDecisionIS(), WeightedPerDecisionIS(), WeightedDoublyRobust()):
            stats_ = estimator.episode_statistics(inp)
            shared = estimator.estimate_interval(inp, n_resamples=300, method=method, seed=3)
            # independent: counts drawn afresh for this estimator alone, full summary
            fresh = summarise([stats_], n_resamples=300, method=method, seed=3)[0]
            assert shared == (fresh.ci_low, fresh.ci_high)
    plan = shared_counts(120, 300, seed=3)
    assert plan is shared_counts(120, 300, seed=3)  # drawn once, then reused
    assert plan._stored is not None
    clear_shared_counts()


@pytest.mark.parametrize("scheme", ["poisson", "multinomial"])
@pytest.mark.parametrize("max_cells", [0, 10**9])  # redrawn, or kept (float32 or uint8)
def test_kept_counts_give_the_replicates_of_fresh_ones(scheme, max_cells, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    inp = _random_input(n_episodes=90, seed=13)
    stats_ = [
        WeightedPerDecisionIS().episode_statistics(inp),
        PerDecisionIS().episode_statistics(inp),
    ]
    fresh = bootstrap_values(stats_, n_resamples=250, seed=6, scheme=scheme)
    for keep_float32 in (10**9, 0):
        monkeypatch.setattr(intervals, "_KEEP_FLOAT32", keep_float32)
        plan = ResampleCounts(90, 250, seed=6, scheme=scheme, max_cells=max_cells)
        for _ in range(2):
            again = bootstrap_values(stats_, n_resamples=250, counts=plan)
            assert np.array_equal(fresh, again, equal_nan=True)


def test_jackknife_is_computed_only_for_bca(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    inp = _random_input(n_episodes=60, seed=14)
    calls: list[int] = []
    original = intervals.jackknife_values

    def counting(stats_, chunk_cells=5_000_000):  # type: ignore[no-untyped-def]
        calls.append(stats_.n_episodes)
        return original(stats_, chunk_cells)

    monkeypatch.setattr(intervals, "jackknife_values", counting)
    WeightedPerDecisionIS().estimate_interval(inp, n_resamples=200, method="percentile")
    assert calls == []
    WeightedPerDecisionIS().estimate_interval(inp, n_resamples=200, method="bca")
    assert calls == [60]


def test_exact_replicates_equal_brute_force_means_to_float64_rounding() -> None:
    inp = _random_input(n_episodes=70, seed=15)
    s = PerDecisionIS().episode_statistics(inp)
    x = s.contributions()
    counts = resample_counts(70, 40, np.random.default_rng(2))
    exact = bootstrap_from_counts([s], counts, exact=True)[:, 0]
    brute = [np.mean(np.repeat(x, c.astype(int))) for c in counts]
    assert np.allclose(exact, brute, rtol=1e-12, atol=0)
