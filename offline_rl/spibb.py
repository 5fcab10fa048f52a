"""Policy improvement between the logging policy and a trained agent that stays certifiable.

Pure, vectorised numpy operators over a batch of decisions (one row per state, ``K`` actions):

* :func:`mixture_policy`: ``(1 - epsilon) * pi_b + epsilon * pi``.
* :func:`spibb_policy`: Pi_b-SPIBB's greedy projection (Laroche, Trichelair & Tachet des
  Combes, ICML 2019): copy the behaviour where the data is scarce, be greedy elsewhere.
* :func:`soft_spibb_policy`: Approx-Soft-SPIBB (Nadjahi, Laroche & Tachet des Combes,
  ECML-PKDD 2019): move behaviour mass towards high-value actions within an error budget.

and, for tabular checks against exact dynamic programming, the maximum-likelihood MDP of logged
episodes (:func:`estimate_tabular_mdp`) and SPIBB / Soft-SPIBB policy iteration in it
(:func:`spibb_tabular`, :func:`soft_spibb_tabular`). Library code: imports no ``evaluation``;
any object with the attributes of :class:`TabularModelLike`
(``evaluation.testing.synthetic.TabularMDP`` or :class:`TabularModel`) can be planned in.

Conventions of the tabular part (episodic MDP, stationary policies):

* An episode ends after a decision with probability ``end[s, a]`` or after ``horizon``
  decisions; ``Q_t`` comes from backward induction, ``t = 0..horizon-1``.
* A stationary policy needs one ``Q(s, .)`` per state: policy iteration projects the
  occupancy-weighted ``Qbar(s, a) = sum_t d_t(s) Q_t(s, a) / sum_t d_t(s)`` with
  ``d_t(s) = gamma^t P(s_t = s)`` under the current policy (``Q_0`` where ``s`` is never
  reached). Maximising ``sum_a pi'(a|s) Qbar(s, a)`` state by state maximises the first-order
  term of the performance difference ``sum_t gamma^t E_{d_t}[sum_a (pi' - pi)(a|s) Q_t(s, a)]``;
  with ``horizon = inf`` it is the papers' ``Q``.
* Unseen state-action pairs in the MLE MDP end the episode with reward 0 (the papers' code,
  ``zero_unseen=True``: "unknown state-action couples considered terminal (no reward
  afterwards)").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from offline_rl.errors import TrainingError

FloatArray = np.ndarray
IntArray = np.ndarray
BoolArray = np.ndarray

_ROW_TOL = 1e-6


# ----------------------------------------------------------------------------- validation
def _check_policy(name: str, policy: FloatArray) -> FloatArray:
    p = np.asarray(policy, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] == 0:
        raise TrainingError(f"{name} must be an (n, K) array of probabilities, got {p.shape}")
    if np.any(~np.isfinite(p)) or np.any(p < -1e-12):
        raise TrainingError(f"{name} has negative or non-finite probabilities")
    worst = float(np.max(np.abs(p.sum(axis=1) - 1.0))) if len(p) else 0.0
    if worst > _ROW_TOL:
        raise TrainingError(f"{name}'s rows must sum to 1 (off by {worst:.3g})")
    return p


def _check_like(name: str, values: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != shape:
        raise TrainingError(f"{name} has shape {v.shape}, expected {shape}")
    return v


def _check_counts(counts: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    n = _check_like("counts", counts, shape)
    if np.any(np.isnan(n)) or np.any(n < 0):
        raise TrainingError("counts must be non-negative")
    return n


def _check_q(q: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    v = _check_like("q", q, shape)
    if not np.all(np.isfinite(v)):
        raise TrainingError("q must be finite")
    return v


# ----------------------------------------------------------------------------- operators
def mixture_policy(behaviour: FloatArray, target: FloatArray, epsilon: float) -> FloatArray:
    """Mixture of the logging policy and a target: ``(1 - epsilon) pi_b + epsilon pi``.

    ``pi_eps(a|s) = (1 - epsilon) pi_b(a|s) + epsilon pi(a|s)``, ``0 <= epsilon <= 1``: the
    conservative policy iteration step (Kakade & Langford, ICML 2002). Its probabilities are
    linear in ``epsilon``; its value in an MDP in general is not (the state distribution moves
    too), although the one-step advantage is: ``sum_a (pi_eps - pi_b) Q = epsilon sum_a
    (pi - pi_b) Q``.

    Args:
        behaviour: ``(n, K)`` rows of logging probabilities.
        target: ``(n, K)`` rows of target probabilities (e.g. an agent's greedy one-hot).
        epsilon: the target's share, in [0, 1].

    Returns:
        ``(n, K)`` rows of probabilities.
    """
    pi_b = _check_policy("behaviour", behaviour)
    pi = _check_policy("target", target)
    if pi.shape != pi_b.shape:
        raise TrainingError(f"target has shape {pi.shape}, behaviour {pi_b.shape}")
    if not 0.0 <= epsilon <= 1.0:
        raise TrainingError(f"epsilon must lie in [0, 1], got {epsilon}")
    return np.asarray((1.0 - epsilon) * pi_b + epsilon * pi)


def spibb_policy(
    q: FloatArray, behaviour: FloatArray, counts: FloatArray, n_wedge: float
) -> FloatArray:
    """Pi_b-SPIBB's greedy projection of ``q`` onto the policies that bootstrap ``pi_b``.

    Laroche, Trichelair & Tachet des Combes, "Safe policy improvement with baseline
    bootstrapping", ICML 2019, Algorithm 2. The bootstrapped set is
    ``B = {(s, a): N(s, a) < N_wedge}``; per row::

        pi(a|s) = pi_b(a|s)                          for (s, a) in B
        pi(a*|s) = sum_{a: (s, a) not in B} pi_b(a|s), a* = argmax_{a: (s, a) not in B} q(s, a)
        pi(a|s) = 0                                  for the other actions

    Ties go to the lowest index; a row whose actions are all bootstrapped is ``pi_b``. So
    ``N_wedge = inf`` returns ``pi_b`` and ``N_wedge = 0`` the greedy policy of ``q``. The
    paper's Theorem 2 bounds the loss of SPIBB policy iteration against ``pi_b`` by
    ``4 V_max / (1 - gamma) sqrt(2 / N_wedge log(2 |S| |A| 2^|S| / delta))`` minus the
    model's estimated gain, with probability ``1 - delta``.

    Args:
        q: ``(n, K)`` action values (finite).
        behaviour: ``(n, K)`` logging probabilities.
        counts: ``(n, K)`` number of logged decisions of each state-action pair.
        n_wedge: the count below which a pair is bootstrapped.

    Returns:
        ``(n, K)`` rows of probabilities.
    """
    pi_b = _check_policy("behaviour", behaviour)
    q = _check_q(q, pi_b.shape)
    boot = _check_counts(counts, pi_b.shape) < n_wedge
    pi = np.where(boot, pi_b, 0.0)
    free = ~boot.all(axis=1)
    best = np.argmax(np.where(boot, -np.inf, q), axis=1)
    rows = np.flatnonzero(free)
    pi[rows, best[rows]] = 1.0 - pi[rows].sum(axis=1)
    return np.asarray(pi)


def soft_spibb_errors(counts: FloatArray, kappa: float = 1.0) -> FloatArray:
    """The Soft-SPIBB error of each state-action pair: ``e(s, a) = kappa / sqrt(N(s, a))``.

    Infinite where ``N(s, a) = 0``. Nadjahi et al. (2019) use the Hoeffding constant
    ``kappa = sqrt(2 log(2 |S| |A| 2^|S| / delta))``.
    """
    if not kappa > 0:
        raise TrainingError(f"kappa must be positive, got {kappa}")
    n = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.asarray(np.where(n > 0, kappa / np.sqrt(n), np.inf))


def soft_spibb_distance(
    policy: FloatArray, behaviour: FloatArray, counts: FloatArray, kappa: float = 1.0
) -> FloatArray:
    """Per row ``sum_a e(s, a) |pi(a|s) - pi_b(a|s)|``, the Soft-SPIBB constraint's left side.

    ``e`` as in :func:`soft_spibb_errors`; an unseen pair contributes 0 when ``pi = pi_b`` there
    and ``inf`` otherwise.
    """
    err = soft_spibb_errors(counts, kappa)
    gap = np.abs(np.asarray(policy, dtype=np.float64) - np.asarray(behaviour, dtype=np.float64))
    with np.errstate(invalid="ignore"):  # inf * 0 where an unseen pair keeps pi_b
        terms = np.where(gap > 0, err * gap, 0.0)
    return np.asarray(terms.sum(axis=1))


def soft_spibb_policy(
    q: FloatArray,
    behaviour: FloatArray,
    counts: FloatArray,
    epsilon: float,
    kappa: float = 1.0,
) -> FloatArray:
    """Approx-Soft-SPIBB: greedy mass transfer within ``sum_a e(s,a)|pi - pi_b| <= epsilon``.

    Nadjahi, Laroche & Tachet des Combes, "Safe policy improvement with soft baseline
    bootstrapping", ECML-PKDD 2019, Algorithm 1 (the approximate solver; the authors' code
    ``Soft_SPIBB_sort_Q``), with ``e(s, a) = kappa / sqrt(N(s, a))`` (``inf`` if unseen).
    Per row, starting from ``pi = pi_b`` and budget ``eps' = epsilon``::

        for a- in actions by increasing q:
            m- = min(pi(a-), eps' / (2 e(a-)))
            for a+ in actions by decreasing (q(a) - q(a-)) / e(a), until a+ = a-:
                m+ = min(m-, eps' / (2 e(a+)), eps' / (e(a-) + e(a+)))
                pi(a-) -= m+;  pi(a+) += m+;  m- -= m+
                eps' -= m+ (e(a-) + e(a+))

    The third cap ``eps' / (e(a-) + e(a+))`` is ours: in the authors' code one ``a-`` that
    feeds several ``a+`` can overspend the budget (``m-`` is fixed before the inner loop), e.g.
    ``e = (1, 10, 0.1)`` on (a-, a+1, a+2) with ``pi_b(a-) = 0.5`` and ``epsilon = 1`` ends at
    ``sum_a e |pi - pi_b| = 1.045``; on random rows (K = 4, counts 0-39) it breaks the
    constraint on about 3 % of them. The cap never binds on a transfer the authors' budget
    covers (the result is then theirs) and makes every transfer cost at most what is left, so
    the constraint holds. Unseen actions keep ``pi_b``. Sorts are stable: ties go to the
    lowest index.

    Args:
        q: ``(n, K)`` action values (finite).
        behaviour: ``(n, K)`` logging probabilities.
        counts: ``(n, K)`` number of logged decisions of each state-action pair.
        epsilon: the per-row budget, ``>= 0``; 0 returns ``pi_b``.
        kappa: the error's constant (see :func:`soft_spibb_errors`).

    Returns:
        ``(n, K)`` rows of probabilities.
    """
    pi_b = _check_policy("behaviour", behaviour)
    q = _check_q(q, pi_b.shape)
    err = soft_spibb_errors(_check_counts(counts, pi_b.shape), kappa)
    if not epsilon >= 0:
        raise TrainingError(f"epsilon must be non-negative, got {epsilon}")
    pi = pi_b.copy()
    budget = np.full(len(pi), float(epsilon))
    rows = np.arange(len(pi))
    for a_bot in np.argsort(q, axis=1, kind="stable").T:
        _transfer_from(pi, budget, q, err, rows, a_bot)
    return np.asarray(pi)


def _transfer_from(
    pi: FloatArray,
    budget: FloatArray,
    q: FloatArray,
    err: FloatArray,
    rows: IntArray,
    a_bot: IntArray,
) -> None:
    """One pass of Algorithm 1's outer loop (in place): move mass out of ``a_bot`` per row."""
    e_bot = err[rows, a_bot]
    fin = np.where(np.isfinite(err), err, 0.0)  # costs: moved mass is 0 where e is infinite
    m_bot = np.minimum(pi[rows, a_bot], budget / (2.0 * e_bot))
    ratio = (q - q[rows, a_bot][:, None]) / err
    active = np.ones(len(rows), dtype=bool)
    for a_top in np.argsort(-ratio, axis=1, kind="stable").T:
        active &= a_top != a_bot
        e_top = err[rows, a_top]
        cost_unit = fin[rows, a_bot] + fin[rows, a_top]
        with np.errstate(divide="ignore", invalid="ignore"):
            cap = np.where(cost_unit > 0, budget / cost_unit, 0.0)
        m = np.minimum(np.minimum(m_bot, budget / (2.0 * e_top)), cap)
        m = np.where(active & (m > 0), m, 0.0)
        pi[rows, a_bot] -= m
        pi[rows, a_top] += m
        m_bot = m_bot - m
        budget -= m * cost_unit
        active &= m_bot > 0
    np.maximum(budget, 0.0, out=budget)


# ----------------------------------------------------------------------------- tabular MDPs
class TabularModelLike(Protocol):
    """What planning needs: ``initial[s]``, ``transition[s, a, s']``, ``end[s, a]``,
    ``reward_mean[s, a]`` (``evaluation.testing.synthetic.TabularMDP`` and
    :class:`TabularModel`)."""

    @property
    def initial(self) -> FloatArray: ...

    @property
    def transition(self) -> FloatArray: ...

    @property
    def end(self) -> FloatArray: ...

    @property
    def reward_mean(self) -> FloatArray: ...


@dataclass(frozen=True)
class TabularModel:
    """A maximum-likelihood tabular MDP, in ``evaluation.testing.synthetic.TabularMDP``'s layout.

    ``initial[s]``, ``transition[s, a, s']`` (given no end), ``end[s, a]`` (probability that the
    episode ends after the decision), ``reward_mean[s, a]``, and the ``counts[s, a]`` of logged
    decisions they come from. ``TabularMDP(**vars(model) minus counts, reward_sd=0)`` is the
    same MDP.
    """

    initial: FloatArray
    transition: FloatArray
    end: FloatArray
    reward_mean: FloatArray
    counts: FloatArray
    horizon: int
    gamma: float

    def q_values(self, policy: FloatArray) -> FloatArray:
        """``Q_t(s, a)`` of a stationary policy, shape (horizon, S, K)."""
        return finite_horizon_q(self, policy, self.gamma, self.horizon)

    def value(self, policy: FloatArray) -> float:
        """Expected discounted return of ``policy`` from ``initial``."""
        q0 = self.q_values(policy)[0]
        return float(self.initial @ np.sum(policy * q0, axis=1))


class EpisodesLike(Protocol):
    """Logged episodes as ``evaluation.data.EpisodeData`` holds them (one-hot observations)."""

    @property
    def episode(self) -> IntArray: ...

    @property
    def step(self) -> IntArray: ...

    @property
    def action(self) -> IntArray: ...

    @property
    def reward(self) -> FloatArray: ...

    @property
    def terminal(self) -> BoolArray: ...

    @property
    def timeout(self) -> BoolArray: ...

    @property
    def observation(self) -> FloatArray | None: ...

    @property
    def gamma(self) -> float: ...


def estimate_tabular_mdp(
    state: IntArray,
    action: IntArray,
    reward: FloatArray,
    episode: IntArray,
    terminal: BoolArray,
    timeout: BoolArray,
    *,
    n_states: int,
    n_actions: int,
    gamma: float,
    horizon: int,
) -> TabularModel:
    """Maximum-likelihood MDP of logged episodes (rows sorted by episode, then step).

    With ``N(s, a)`` the decisions, ``N(s, a, s')`` those followed by ``s'`` in their episode
    ``N_end(s, a)`` those that ended their episode (``terminal``) and ``N_cut(s, a)`` those cut
    by a ``timeout`` (the episode did not end there; the next state is unknown)::

        reward_mean(s, a) = mean of the rewards of (s, a)
        end(s, a) = N_end / (N_end + N_cut + sum_s' N(s, a, s'))
        transition(s, a, s') = N(s, a, s') / sum_s' N(s, a, s')
        initial(s) = share of episodes that start in s

    Unseen pairs end the episode with reward 0, the papers' ``zero_unseen`` model ("unknown
    state-action couples considered terminal (no reward afterwards)"); so does, after its
    observed mean reward, a pair never followed by a next state (seen only at timeouts or
    ends): ``end = 1`` and a self-loop transition, unused.
    """
    s = np.asarray(state, dtype=np.int64)
    a = np.asarray(action, dtype=np.int64)
    ep = np.asarray(episode)
    shape = (n_states, n_actions)
    counts = np.zeros(shape)
    np.add.at(counts, (s, a), 1.0)
    rewards = np.zeros(shape)
    np.add.at(rewards, (s, a), np.asarray(reward, dtype=np.float64))
    first = np.r_[True, ep[1:] != ep[:-1]]
    cont = np.r_[~first[1:], False]  # the next row belongs to the same episode
    nxt = np.zeros((*shape, n_states))
    np.add.at(nxt, (s[cont], a[cont], np.r_[s[1:], 0][cont]), 1.0)
    n_cont = nxt.sum(axis=2)
    ended, cut = np.zeros(shape), np.zeros(shape)
    np.add.at(ended, (s, a), (np.asarray(terminal, dtype=bool) & ~cont).astype(float))
    np.add.at(cut, (s, a), (np.asarray(timeout, dtype=bool) & ~cont).astype(float))
    known = ended + n_cont + cut  # a timeout did not end the episode; its next state is unknown
    with np.errstate(divide="ignore", invalid="ignore"):
        end = np.where(n_cont > 0, ended / known, 1.0)
        trans = np.where(n_cont[..., None] > 0, nxt / n_cont[..., None], 0.0)
        reward_mean = np.where(counts > 0, rewards / counts, 0.0)
    loop = n_cont == 0
    trans[loop] = np.eye(n_states)[np.nonzero(loop)[0]]
    initial = np.bincount(s[first], minlength=n_states).astype(float)
    initial /= max(initial.sum(), 1.0)
    return TabularModel(initial, trans, end, reward_mean, counts, int(horizon), float(gamma))


def estimate_from_episodes(data: EpisodesLike, n_actions: int, horizon: int) -> TabularModel:
    """:func:`estimate_tabular_mdp` of ``EpisodeData`` whose observations are one-hot states."""
    if data.observation is None:
        raise TrainingError("the episodes carry no observations (one-hot states needed)")
    obs = np.asarray(data.observation)
    return estimate_tabular_mdp(
        np.argmax(obs, axis=1),
        data.action,
        data.reward,
        data.episode,
        data.terminal,
        data.timeout,
        n_states=obs.shape[1],
        n_actions=n_actions,
        gamma=data.gamma,
        horizon=horizon,
    )


def finite_horizon_q(
    model: TabularModelLike, policy: FloatArray, gamma: float, horizon: int
) -> FloatArray:
    """Backward induction: ``Q_t = r + gamma (1 - end) P V_{t+1}``, ``V_H = 0``; (H, S, K)."""
    s, k = model.reward_mean.shape
    q = np.zeros((horizon, s, k))
    v_next = np.zeros(s)
    for t in range(horizon - 1, -1, -1):
        q[t] = model.reward_mean + gamma * (1.0 - model.end) * (model.transition @ v_next)
        v_next = np.sum(policy * q[t], axis=1)
    return q


def discounted_occupancy(
    model: TabularModelLike, policy: FloatArray, gamma: float, horizon: int
) -> FloatArray:
    """``d_t(s) = gamma^t P(s_t = s, episode running)`` from ``model.initial``; (H, S).

    ``d_{t+1}(s') = gamma sum_{s, a} d_t(s) pi(a|s) (1 - end(s, a)) transition(s, a, s')``;
    ``sum_{t, s} d_t(s) r_pi(s)`` is the policy's value.
    """
    flow = np.einsum("sa,sab->sb", policy * (1.0 - model.end), model.transition)
    d = np.zeros((horizon, len(flow)))
    d[0] = model.initial
    for t in range(1, horizon):
        d[t] = gamma * (d[t - 1] @ flow)
    return d


def occupancy_weighted_q(
    model: TabularModelLike, policy: FloatArray, gamma: float, horizon: int
) -> FloatArray:
    """``Qbar(s, a) = sum_t d_t(s) Q_t(s, a) / sum_t d_t(s)``, ``d`` the discounted occupancy.

    ``Q_0`` in states the policy never reaches; shape (S, K). By the performance difference
    lemma, ``d/de V(pi + e (pi' - pi))`` at ``e = 0`` is
    ``sum_s D(s) sum_a (pi' - pi)(a|s) Qbar(s, a)`` with ``D(s) = sum_t d_t(s)``.
    """
    q = finite_horizon_q(model, policy, gamma, horizon)
    d = discounted_occupancy(model, policy, gamma, horizon)
    weight = d.sum(axis=0)
    mixed = np.einsum("ts,tsa->sa", d, q)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(weight[:, None] > 0, mixed / weight[:, None], q[0]))


Projection = Callable[[FloatArray], FloatArray]


def _policy_iteration(
    model: TabularModelLike,
    behaviour: FloatArray,
    project: Projection,
    gamma: float,
    horizon: int,
    max_iter: int,
) -> FloatArray:
    """Evaluate, project, repeat from ``pi_b`` until the policy stops changing.

    A row is replaced only if it does not lower ``sum_a pi(a|s) Qbar(s, a)`` (the papers' local
    improvement check, needed for Approx-Soft-SPIBB to converge).
    """
    pi = behaviour.copy()
    for _ in range(max_iter):
        q = occupancy_weighted_q(model, pi, gamma, horizon)
        new = project(q)
        better = np.sum(new * q, axis=1) >= np.sum(pi * q, axis=1) - 1e-12
        new = np.where(better[:, None], new, pi)
        if np.allclose(new, pi, atol=1e-12, rtol=0.0):
            return np.asarray(new)
        pi = new
    return np.asarray(pi)


def spibb_tabular(
    mdp_estimate: TabularModelLike,
    behaviour: FloatArray,
    counts: FloatArray,
    n_wedge: float,
    gamma: float,
    horizon: int,
    *,
    max_iter: int = 100,
) -> FloatArray:
    """Pi_b-SPIBB policy iteration in an (estimated) tabular MDP; (S, K) policy.

    Laroche et al. (2019), Algorithm 1 with the projection of :func:`spibb_policy`: from
    ``pi_0 = pi_b``, ``pi_{i+1} = proj(Qbar^{pi_i})`` in ``mdp_estimate`` (usually the MLE MDP
    of :func:`estimate_tabular_mdp`), until it stops changing. ``n_wedge = 0`` is plain policy
    iteration (the unconstrained greedy policy of the model), ``n_wedge = inf`` returns
    ``pi_b``.
    """
    pi_b = _check_policy("behaviour", behaviour)
    n = _check_counts(counts, pi_b.shape)
    return _policy_iteration(
        mdp_estimate,
        pi_b,
        lambda q: spibb_policy(q, pi_b, n, n_wedge),
        gamma,
        horizon,
        max_iter,
    )


def soft_spibb_tabular(
    mdp_estimate: TabularModelLike,
    behaviour: FloatArray,
    counts: FloatArray,
    epsilon: float,
    gamma: float,
    horizon: int,
    *,
    kappa: float = 1.0,
    max_iter: int = 100,
) -> FloatArray:
    """Approx-Soft-SPIBB policy iteration in an (estimated) tabular MDP; (S, K) policy.

    Nadjahi et al. (2019): as :func:`spibb_tabular` with the projection of
    :func:`soft_spibb_policy` (budget ``epsilon``, errors ``kappa / sqrt(N)``) and the local
    improvement check. Every iterate satisfies the constraint, so the result does.
    """
    pi_b = _check_policy("behaviour", behaviour)
    n = _check_counts(counts, pi_b.shape)
    return _policy_iteration(
        mdp_estimate,
        pi_b,
        lambda q: soft_spibb_policy(q, pi_b, n, epsilon, kappa),
        gamma,
        horizon,
        max_iter,
    )
