"""Marginalised importance sampling: state-distribution ratios instead of products of ratios.

The per-decision estimators weight the reward at step t by ``w_{i,t} = prod_{t'<=t} rho_{i,t'}``,
whose variance can grow exponentially with t ("the curse of horizon"). In a Markov decision
process the reward at step t only needs the ratio of the two policies' distributions of the
state at step t, ``w_t(s) = d_t^pi(s) / d_t^b(s)``, which is estimated step by step from all
episodes together:

* MIS (Xie, Ma & Wang 2019, "Towards optimal off-policy evaluation for reinforcement learning
  with marginalized importance sampling", NeurIPS; Liu, Li, Tang & Zhou 2018, "Breaking the
  curse of horizon: infinite-horizon off-policy estimation", NeurIPS):
  ``V = 1/N sum_i sum_t gamma^t w_t(s_{i,t}) rho_{i,t} r_{i,t}``
* MDR (Kallus & Uehara 2020, "Double reinforcement learning for efficient off-policy evaluation
  in Markov decision processes", JMLR; the finite-horizon DR of Xie et al. 2019):
  ``V = 1/N sum_i sum_t gamma^t [mu_{i,t} (r_{i,t} - q(s_{i,t}, a_{i,t})) + mu_{i,t-1} v(s_{i,t})]``
  with the marginal weight of a decision ``mu_{i,t} = w_t(s_{i,t}) rho_{i,t}`` and
  ``mu_{i,-1} = 1``: the per-decision DR (``doubly_robust.py``) with the cumulative weights
  ``w_{i,t}``, ``w_{i,t-1}`` replaced by the marginal ones of the same decisions. Unbiased for
  any fixed ``q`` when the ratios are exact, AND for any ratios when ``q`` is exact (the ``q``
  terms telescope to ``v(s_0)``): doubly robust. Writing ``w_t(s_{i,t}) v(s_{i,t})`` for the
  second term instead (its projection on the features of ``s_t``) gives the same total whenever
  ``v`` is linear in the features (always with one-hot states and ``ridge_alpha = 0``: the
  fitted ratios of the rows in s sum to the sum of their targets ``mu_{t-1}``) but loses the
  robustness to wrong ratios.

**The ratio recursion, with episodes that end at different steps.** Write ``alive_t`` for "the
episode still has a decision at step t" and ``d_t^pi(s) = P_pi(alive_t, s_t = s)`` (a
sub-probability: its mass is the chance of still running). After the decision at step t the
episode ends with a probability ``e_t(s, a)`` that may depend on the state AND the action (and
the step), the same under both policies because the environment is. Then

    d_{t+1}^pi(s') = sum_{s,a} d_t^pi(s) pi_e(a|s) (1 - e_t(s,a)) P(s'|s,a)
                   = sum_{s,a} d_t^b(s) w_t(s) pi_b(a|s) rho(s,a) (1 - e_t(s,a)) P(s'|s,a)
                   = E_b[ w_t(s_t) rho_t ; alive_{t+1}, s_{t+1} = s' ]

and ``d_{t+1}^b(s') = P_b(alive_{t+1}, s_{t+1} = s')``, so

    w_0 = 1,   w_{t+1}(s') = E_b[ w_t(s_t) rho_t | alive_{t+1}, s_{t+1} = s' ].

The survival factor ``1 - e_t(s, a)`` sits inside the expectation, reweighted by ``rho``: the
regression at step t+1 is fitted on exactly the transitions whose episode is still running (the
rows at step t+1, their targets from the previous row of the same episode), and the fitted
ratios are NOT renormalised among the survivors: their mean there is
``P_pi(alive_{t+1}) / P_b(alive_{t+1})``, not 1. Renormalising would drop the candidate's effect
on how long episodes last (the same mistake as normalising WPDIS among the running episodes
only, see evaluation/README.md). The value then follows from
``V = sum_t gamma^t sum_s d_t^pi(s) E_pi[r | s] = E_b[ sum_{t<H} gamma^t w_t(s_t) rho_t r_t ]``.
Because every step has its own ratio, no stationarity is needed (up to ``max_horizon``).

**The fit.** The conditional expectation is a ridge least-squares projection of the targets
``w_t(s_t) rho_t`` onto ``[phi(s_{t+1}), 1]`` (``phi`` = the observation, optionally
standardised at each step; intercept unpenalised), predictions clipped at 0. With one-hot
observations (a tabular MDP) and ``ridge_alpha = 0`` the projection is the per-state mean:
Xie et al.'s tabular MIS. Steps beyond ``max_horizon`` reuse the ratio function fitted at step
``max_horizon``.

**Assumptions and where it is biased.**

* The observation is a Markov state. Otherwise ``E_b[. | observation]`` is not the state ratio
  and the estimate is biased (the trajectory-wise products of ``pdis`` need no such assumption).
* The ratio ``w_t`` is linear in the features. Otherwise the projection is the best linear
  approximation and the estimate is biased (MDR stays unbiased if the model ``q`` is exact).
* ``ridge_alpha > 0`` shrinks the fitted ratios (bias ``O(alpha / n_t)``); clipping at 0 only
  acts when a misspecified fit goes negative; steps past ``max_horizon`` assume the ratio stops
  changing (biased when it does not, e.g. when the candidate changes the survival rate).
* Finite samples: in the tabular case with ``ridge_alpha = 0`` the estimator is exactly
  unbiased (the ratios of the rows in state s at step t+1 sum to the sum of their targets, and
  induction over t gives ``E[sum_i w_t(s_{i,t}) 1{s_{i,t} = s}] = N d_t^pi(s)``); with general
  features it is at best consistent (when the ratio is linear in them), hence
  ``unbiased = False``.

**Intervals.** The estimate is returned as a plain mean of per-episode contributions
(:meth:`EpisodeStatistics.mean_of`), so the bootstrap and jackknife resample episodes with the
fitted ratios held fixed: the intervals do not include the ratio fit's own uncertainty and are
too narrow when the ratios are noisy (few episodes per step or per state); measured coverage of
nominal 95 % intervals on a small tabular MDP: 74-83 % for MIS, 86-90 % for MDR (README).

**The refit bootstrap** (:func:`marginal_bootstrap`) resamples the fit too. Resampling episodes
with counts ``c_i`` is the same as weighting every row of episode i by ``c_i``, so each resample
refits every step's ratio regression as a weighted ridge (weighted centring, scaling, normal
equations and intercept: exactly the fit on the resampled episodes laid out as data) and returns
``sum_i c_i X_i / sum_i c_i`` with the contributions ``X_i`` under the refitted ratios (or the
paired ``sum_i c_i (X_i - G_i) / sum_i c_i``). The model predictions ``q``/``v`` stay fixed (a
separately fitted model; MDR is unbiased for any fixed model when the ratios are right). All
resamples are fitted at once per step: the weighted second moments are one matrix product
``counts (B x n_t) @ [x_j x_k]_{j <= k} (n_t x p(p+1)/2)``, the B ridge systems are solved by a
batched eigendecomposition (the same minimum-norm cut-off as :func:`fit_ratio`). Cost: about
``B * n * p^2 / 2`` multiply-adds for ``n`` decisions with ``p`` features, plus ``B * n * p`` for
the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.config import MarginalConfig
from evaluation.data import EpisodeData, FloatArray, IntArray
from evaluation.errors import EvaluationError
from evaluation.estimators.base import (
    EpisodeStatistics,
    OffPolicyEstimator,
    OPEInput,
    per_episode_column,
    weight_diagnostics,
)

# Relative singular-value cut-off of the (standardised) Gram matrix: exactly collinear features
# (one-hot states plus the intercept) get the minimum-norm least-squares solution.
_RCOND = 1e-10


@dataclass(frozen=True)
class LinearRatio:
    """A fitted ratio function ``max(0, ((x - mean) / scale) @ coef + intercept)``."""

    mean: FloatArray
    scale: FloatArray
    coef: FloatArray
    intercept: float

    def predict(self, x: FloatArray) -> FloatArray:
        z = (x - self.mean) / self.scale
        return np.asarray(np.maximum(z @ self.coef + self.intercept, 0.0))


def fit_ratio(x: FloatArray, y: FloatArray, *, alpha: float, standardize: bool) -> LinearRatio:
    """Ridge regression of ``y`` on ``[x, 1]`` with the intercept unpenalised.

    The features are centred (so the intercept is the mean of ``y``) and, with ``standardize``,
    scaled to unit variance (constant columns keep scale 1 and get coefficient 0).
    """
    mean = x.mean(axis=0)
    xc = x - mean
    scale = np.ones(x.shape[1])
    if standardize:
        sd = xc.std(axis=0)
        scale = np.where(sd > 0, sd, 1.0)
        xc = xc / scale
    y_mean = float(y.mean())
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    coef = np.linalg.lstsq(gram, xc.T @ (y - y_mean), rcond=_RCOND)[0]
    return LinearRatio(mean=mean, scale=scale, coef=coef, intercept=y_mean)


def observations(data: EpisodeData, estimator: str) -> FloatArray:
    """The observation features as float64, or an error saying why the estimator cannot run."""
    if data.observation is None:
        raise EvaluationError(
            f"{estimator} needs the observation of every decision to estimate state-distribution "
            "ratios, and these transitions have none (use pdis / dr instead)"
        )
    obs = np.asarray(data.observation, dtype=np.float64)
    if not np.all(np.isfinite(obs)):
        raise EvaluationError(f"{estimator}: the observations contain NaN or infinite values")
    return obs.reshape(len(obs), -1)


def rows_by_step(data: EpisodeData) -> list[IntArray]:
    """Row indices of the decisions at each step 0..horizon-1 (possibly empty)."""
    order = np.argsort(data.step, kind="stable")
    bounds = np.searchsorted(data.step[order], np.arange(data.horizon + 1))
    return [order[bounds[t] : bounds[t + 1]] for t in range(data.horizon)]


def state_ratios(inp: OPEInput, config: MarginalConfig, estimator: str = "mis") -> FloatArray:
    """``w_t(s_t)`` for every decision, by the recursion in the module docstring.

    The rows at step t+1 are regressed on their own observation with the targets
    ``w_t(s_t) rho_t`` of the previous row of the same episode (every row at a step > 0 has one:
    episodes start at step 0 and are sorted by step). Computed once per input and config (kept
    in ``inp.notes``: the estimate and the overlap diagnostics use the same ratios).
    """
    key = f"state_ratios:{estimator}:{inp.max_weight}:{config.model_dump_json()}"
    cached = inp.notes.get(key)
    if cached is None:
        cached = inp.notes[key] = _fit_state_ratios(inp, config, estimator)
    return np.asarray(cached)


def _fit_state_ratios(inp: OPEInput, config: MarginalConfig, estimator: str) -> FloatArray:
    d = inp.data
    x = observations(d, estimator)
    rho = inp.rho
    w = np.ones(d.n_decisions)
    last = d.horizon if config.max_horizon is None else config.max_horizon
    ratio: LinearRatio | None = None
    for t, rows in enumerate(rows_by_step(d)):
        if t == 0 or rows.size == 0:
            continue
        if t <= last:
            prev = rows - 1
            ratio = fit_ratio(
                x[rows],
                w[prev] * rho[prev],
                alpha=config.ridge_alpha,
                standardize=config.standardize,
            )
        if ratio is not None:
            w[rows] = ratio.predict(x[rows])
    return w


class _Marginal(OffPolicyEstimator):
    """Shared construction (the config) and diagnostics of the marginal estimators."""

    family = "marginal"

    def __init__(self, config: MarginalConfig | None = None) -> None:
        self.config = config or MarginalConfig()

    def ratios(self, inp: OPEInput) -> FloatArray:
        return state_ratios(inp, self.config, self.name)

    def diagnostics(self, inp: OPEInput) -> dict[str, float]:
        """The trajectory-weight diagnostics plus the size of the fitted state ratios."""
        w = self.ratios(inp)
        out = weight_diagnostics(inp)
        out["state_ratio_p99"] = float(np.quantile(w, 0.99))
        out["state_ratio_max"] = float(w.max())
        out["state_ratio_zero_fraction"] = float(np.mean(w == 0))
        return out


class MarginalizedIS(_Marginal):
    """Marginalised importance sampling (MIS), Xie, Ma & Wang 2019; Liu et al. 2018.

    ``V = 1/N sum_i sum_t gamma^t w_t(s_{i,t}) rho_{i,t} r_{i,t}`` with the state ratios
    ``w_t(s) = d_t^pi(s) / d_t^b(s)`` fitted step by step (module docstring: recursion, why it
    is fitted on the episodes still running, assumptions, bias). Intervals resample episodes
    with the fitted ratios held fixed; they do not include the ratio fit's uncertainty
    (:func:`marginal_bootstrap` refits the ratios on every resample).
    """

    name = "mis"
    unbiased = False

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        d = inp.data
        per_row = d.discount * self.ratios(inp) * inp.rho * d.reward
        return EpisodeStatistics.mean_of(per_episode_column(d, per_row))


class MarginalizedDR(_Marginal):
    """Doubly robust with marginal weights (Kallus & Uehara 2020; Xie et al. 2019).

    ``V = 1/N sum_i sum_t gamma^t [mu_t (r_t - q(s_t, a_t)) + mu_{t-1} v(s_t)]`` with
    ``mu_t = w_t(s_t) rho_t`` and ``mu_{-1} = 1``: the per-decision DR with the cumulative
    weights replaced by marginal ones. Unbiased when either the ratios or ``q`` are exact (module
    docstring). Same ratio fit, assumptions and intervals as :class:`MarginalizedIS`.
    """

    name = "mdr"
    needs_model = True
    unbiased = False

    def episode_statistics(self, inp: OPEInput) -> EpisodeStatistics:
        q, v = inp.require_model(self.name)
        d = inp.data
        mu = self.ratios(inp) * inp.rho
        mu_prev = np.r_[1.0, mu[:-1]]
        mu_prev[d.is_first] = 1.0
        per_row = d.discount * (mu * (d.reward - q) + mu_prev * v)
        return EpisodeStatistics.mean_of(per_episode_column(d, per_row))


# Refit bootstrap: cells (resamples x rows of one step) of the per-resample arrays processed at
# once, and cells (rows x feature pairs) of the per-row feature products.
_BOOT_CELLS = 1 << 22
_PAIR_CELLS = 1 << 21
# A feature whose weighted variance in a resample is below this share of its variance over all
# the step's rows is constant on the resample's episodes up to rounding: it gets coefficient 0
# (as a constant column does in :func:`fit_ratio`) instead of being scaled up from rounding noise.
_DEGENERATE_VARIANCE = 1e-12


@dataclass(frozen=True)
class BatchRatio:
    """B fitted ratio functions ``max(0, ((x - shift) / prescale) @ coef[b] + const[b])``."""

    shift: FloatArray
    prescale: FloatArray
    coef: FloatArray
    const: FloatArray

    def predict(self, x: FloatArray) -> FloatArray:
        """(B, n) predictions for the rows ``x`` (n, p)."""
        z = (x - self.shift) / self.prescale
        return np.asarray(np.maximum(self.coef @ z.T + self.const[:, None], 0.0))


def _weighted_second_moments(z: FloatArray, c: FloatArray) -> FloatArray:
    """``sum_i c[b, i] z_i z_i^T`` for every resample b, (B, p, p): one matrix product per chunk
    of rows, over the upper triangle of the feature pairs."""
    n, p = z.shape
    upper_j, upper_k = np.triu_indices(p)
    tri = np.zeros((c.shape[0], len(upper_j)))
    rows = max(1, _PAIR_CELLS // max(1, len(upper_j)))
    for start in range(0, n, rows):
        block = z[start : start + rows]
        tri += c[:, start : start + rows] @ (block[:, upper_j] * block[:, upper_k])
    out = np.empty((c.shape[0], p, p))
    out[:, upper_j, upper_k] = tri
    out[:, upper_k, upper_j] = tri
    return out


def _solve_min_norm(gram: FloatArray, rhs: FloatArray) -> FloatArray:
    """Minimum-norm solutions of the symmetric PSD systems ``gram[b] @ x = rhs[b]``, (B, p):
    eigenvalues up to ``_RCOND`` times the largest are dropped (``lstsq``'s cut-off)."""
    vals, vecs = np.linalg.eigh(gram)
    cutoff = _RCOND * np.max(np.abs(vals), axis=1, keepdims=True)
    inv = np.zeros_like(vals)
    np.divide(1.0, vals, out=inv, where=np.abs(vals) > cutoff)
    proj = np.einsum("bji,bj->bi", vecs, rhs) * inv
    return np.asarray(np.einsum("bij,bj->bi", vecs, proj))


def fit_ratios_weighted(
    x: FloatArray, y: FloatArray, c: FloatArray, *, alpha: float, standardize: bool
) -> BatchRatio:
    """:func:`fit_ratio` for B row weightings at once: rows ``x`` (n, p), targets ``y`` (B, n),
    weights ``c`` (B, n) >= 0.

    Fit b equals :func:`fit_ratio` on the rows repeated ``c[b, i]`` times: weighted mean,
    weighted (population) standard deviation, weighted normal equations, intercept the weighted
    mean of ``y``. The features are first centred (and with ``standardize`` scaled) on all n
    rows, which changes nothing in exact arithmetic (each fit centres and scales again with its
    own weights) but keeps the moments well conditioned. A fit without any weight predicts 0
    (it has no rows that count).
    """
    p = x.shape[1]
    shift = x.mean(axis=0)
    z = x - shift
    prescale = np.ones(p)
    if standardize:
        sd = z.std(axis=0)
        prescale = np.where(sd > 0, sd, 1.0)
        z = z / prescale
    base_var = z.var(axis=0)
    total = c.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    cy = c * y
    y_mean = cy.sum(axis=1) / safe
    m = (c @ z) / safe[:, None]
    gram = _weighted_second_moments(z, c) - total[:, None, None] * (m[:, :, None] * m[:, None, :])
    var = np.maximum(np.diagonal(gram, axis1=1, axis2=2), 0.0) / safe[:, None]
    live = var > _DEGENERATE_VARIANCE * base_var
    scale = np.where(live, np.sqrt(var), 1.0) if standardize else np.ones_like(var)
    keep = live / scale  # z -> the fit's own z-score (0 for a constant feature)
    gram = gram * keep[:, :, None] * keep[:, None, :] + alpha * np.eye(p)
    rhs = (cy @ z - (total * y_mean)[:, None] * m) * keep
    beta = _solve_min_norm(gram, rhs) * keep  # per unit of z
    return BatchRatio(
        shift=shift, prescale=prescale, coef=beta, const=y_mean - np.sum(m * beta, axis=1)
    )


def _resampled_sums(
    inp: OPEInput,
    x: FloatArray,
    steps: list[IntArray],
    counts: FloatArray,
    config: MarginalConfig,
    doubly_robust: bool,
) -> FloatArray:
    """``sum_i c[b, i] X_{b,i}`` for every resample b: the recursion of :func:`state_ratios`
    with every fit weighted by the resample's counts, summed step by step."""
    d = inp.data
    rho = inp.rho
    q, v = inp.require_model("mdr") if doubly_robust else (None, None)
    last = d.horizon if config.max_horizon is None else config.max_horizon
    position = np.empty(d.n_decisions, dtype=np.int64)  # each row's index among its step's rows
    for rows in steps:
        position[rows] = np.arange(len(rows))
    b = counts.shape[0]
    sums = np.zeros(b)
    mu_before = np.ones((b, 0))  # the previous step's marginal weights mu, (B, n_{t-1})
    ratio: BatchRatio | None = None
    for t, rows in enumerate(steps):
        if rows.size == 0:
            continue
        c = counts[:, d.episode[rows]]
        if t == 0:
            mu_prev = np.ones((b, len(rows)))
            w = mu_prev
        else:
            mu_prev = mu_before[:, position[rows - 1]]
            if t <= last:
                ratio = fit_ratios_weighted(
                    x[rows], mu_prev, c, alpha=config.ridge_alpha, standardize=config.standardize
                )
            w = ratio.predict(x[rows]) if ratio is not None else np.ones((b, len(rows)))
        mu = w * rho[rows]
        disc = d.discount[rows]
        if q is not None and v is not None:
            contrib = disc * (mu * (d.reward[rows] - q[rows]) + mu_prev * v[rows])
        else:
            contrib = mu * (disc * d.reward[rows])
        sums += np.einsum("bi,bi->b", c, contrib)
        mu_before = mu
    return sums


def marginal_bootstrap(
    inp: OPEInput,
    *,
    doubly_robust: bool,
    config: MarginalConfig | None = None,
    counts: np.ndarray,
    returns: FloatArray | None = None,
) -> np.ndarray:
    """Refit-bootstrap replicates of ``mis`` (``doubly_robust=False``) or ``mdr`` (True).

    Args:
        inp: the candidate on the logged episodes (``mdr``: with ``q_logged`` and ``v_hat``,
            held fixed).
        doubly_robust: ``mdr`` instead of ``mis``.
        config: the ratio fit, as for the point estimate (default ``MarginalConfig()``).
        counts: (B, N) non-negative resample counts of the episodes in their own order, e.g.
            Poisson(1) or multinomial (``evaluation.intervals.poisson_counts`` /
            ``resample_counts``, or the blocks of a shared ``ResampleCounts``).
        returns: the episodes' discounted logged returns ``G_i`` (``data.returns``); given, the
            replicates are of the paired difference ``V(candidate) - V(behaviour)``.

    Returns:
        (B,) values ``sum_i c_i X_i / sum_i c_i`` (with ``returns``:
        ``sum_i c_i (X_i - G_i) / sum_i c_i``) with the state ratios refitted on each resample
        (module docstring). Counts all 1 give the point estimate of :class:`MarginalizedIS` /
        :class:`MarginalizedDR` (to rounding); a resample without any episode gives NaN.
    """
    config = config or MarginalConfig()
    name = "mdr" if doubly_robust else "mis"
    d = inp.data
    c_all = np.asarray(counts, dtype=np.float64)
    if c_all.ndim != 2 or c_all.shape[1] != d.n_episodes:
        raise EvaluationError(
            f"{name} bootstrap: counts must have shape (resamples, {d.n_episodes}), "
            f"got {c_all.shape}"
        )
    if not np.all(np.isfinite(c_all)) or np.any(c_all < 0):
        raise EvaluationError(f"{name} bootstrap: counts must be finite and >= 0")
    g: FloatArray | None = None
    if returns is not None:
        g = np.asarray(returns, dtype=np.float64)
        if g.shape != (d.n_episodes,):
            raise EvaluationError(f"{name} bootstrap: returns must have one value per episode")
    x = observations(d, name)
    if doubly_robust:
        inp.require_model(name)
    steps = rows_by_step(d)
    chunk = max(1, _BOOT_CELLS // max(1, max(len(r) for r in steps)))
    sums = np.empty(c_all.shape[0])
    for start in range(0, c_all.shape[0], chunk):
        block = c_all[start : start + chunk]
        sums[start : start + chunk] = _resampled_sums(inp, x, steps, block, config, doubly_robust)
    if g is not None:
        sums -= c_all @ g
    total = c_all.sum(axis=1)
    out = np.full(c_all.shape[0], np.nan)
    np.divide(sums, total, out=out, where=total > 0)
    return out
