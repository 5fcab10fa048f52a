"""How much better than "never discount" can a promotion policy be? A search with ground truth.

    .venv/bin/python -m benchmarks.promotion_headroom [--users 20000] [--sweeps 1]

The does-it-learn check (``benchmarks.train_learns``) asks a trained agent to beat the logging
policy and behaviour cloning. How large a margin is there to find? This benchmark answers with
the simulator's ground truth instead of an estimate: it searches the class of **cell rules** (one
tier per cell of the observable context: device x channel x first visit x has ordered before,
48 cells, on the simulator's default observation) by coordinate ascent, each candidate rolled
out online and compared with the incumbent on the same users (paired), then reports the rule it
found on **held-out users** (a different rollout seed), beside "always none", the logging policy
and the hand-made targeting rule. The search sees far more than any offline learner does
(hundreds of online rollouts), so its held-out gain is a generous estimate of what a policy on
these features can gain in this world; a learner from logs should not be expected to exceed it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._world import ARRIVAL_DAYS, world
from simulator import TIERS, RolloutResult, SimulatorConfig, TargetingRule, logging_policy, rollout

N_CELLS = 48
MIN_GAIN = 0.02  # per-episode value a move must add (paired, same users) to be taken


def cell_of(observations: np.ndarray) -> np.ndarray:
    """Cell index (device, channel, first visit, has ordered) of default observations."""
    o = observations
    device = o[:, 0:3].argmax(axis=1)
    channel = o[:, 3:7].argmax(axis=1)
    first = (o[:, 7] > 0).astype(np.int64)
    ordered = (o[:, 8] > 0).astype(np.int64)
    return np.asarray(((device * 4 + channel) * 2 + first) * 2 + ordered)


def cell_label(cell: int) -> str:
    devices, channels = ("mobile", "desktop", "app"), ("direct", "search", "email", "social")
    ordered, rest = cell % 2, cell // 2
    first, rest = rest % 2, rest // 2
    channel, device = rest % 4, rest // 4
    return (
        f"{devices[device]}/{channels[channel]}/{'first visit' if first else 'returning'}"
        f"/{'has ordered' if ordered else 'no order yet'}"
    )


class CellRule:
    """A deterministic policy: the tier of the observation's cell."""

    name = "cell-rule"
    uses_default_observation = True

    def __init__(self, table: np.ndarray) -> None:
        self.table = table.copy()

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.table[cell_of(observations)])


def search(sim: SimulatorConfig, seed: int, sweeps: int) -> tuple[np.ndarray, int]:
    """Coordinate ascent over the cells from "always none"; returns the table and rollouts run."""
    table = np.zeros(N_CELLS, np.int64)
    incumbent = rollout(CellRule(table), sim, seed=seed)
    runs = 1
    for sweep in range(sweeps):
        moved = False
        for cell in range(N_CELLS):
            best: tuple[float, int, RolloutResult] | None = None
            for tier in range(len(TIERS)):
                if tier == table[cell]:
                    continue
                trial = table.copy()
                trial[cell] = tier
                res = rollout(CellRule(trial), sim, seed=seed)
                runs += 1
                gain, _ = res.paired_difference(incumbent)
                if gain > MIN_GAIN and (best is None or gain > best[0]):
                    best = (gain, tier, res)
            if best is not None:
                table[cell] = best[1]
                incumbent = best[2]
                moved = True
                print(f"  sweep {sweep}: {cell_label(cell):<42} -> {TIERS[best[1]]:<13} "
                      f"(+{best[0]:.3f}, value {incumbent.value:.3f})", flush=True)
        if not moved:
            break
    return table, runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000, help="users per rollout")
    parser.add_argument("--sweeps", type=int, default=1, help="coordinate-ascent sweeps")
    parser.add_argument("--seed", type=int, default=0, help="world (simulator) seed")
    parser.add_argument("--expectation-rise", type=float, default=None,
                        help="another world: [simulator.promotion_response] expectation_rise "
                        "(default 0.4)")
    args = parser.parse_args(argv)
    sim = SimulatorConfig(n_users=args.users, seed=args.seed, action_space="discrete",
                          promotion_response=world(args.expectation_rise),
                          arrival_days=ARRIVAL_DAYS)
    t0 = time.perf_counter()
    print(f"promotion_headroom: {args.users} users per rollout, world "
          f"{sim.promotion_response.model_dump()}, search on rollout seed "
          f"{10_000 + args.seed}, held out on {20_000 + args.seed}")
    table, runs = search(sim, 10_000 + args.seed, args.sweeps)
    print(f"search: {runs} online rollouts in {time.perf_counter() - t0:.0f} s")
    held = 20_000 + args.seed
    base = rollout(logging_policy(sim), sim, seed=held)
    none = rollout(CellRule(np.zeros(N_CELLS, np.int64)), sim, seed=held)
    print(f"\nheld-out users (rollout seed {held}): true value per episode (gamma 0.9)")
    print(f"{'policy':<18}{'value':>9}{'vs logging':>20}{'vs always none':>20}")
    print(f"{'logging':<18}{base.value:>9.3f}")
    for name, pol in (
        ("always none", CellRule(np.zeros(N_CELLS, np.int64))),
        ("targeting rule", TargetingRule()),
        ("searched rule", CellRule(table)),
    ):
        res = none if name == "always none" else rollout(pol, sim, seed=held)
        m1, h1 = res.paired_difference(base)
        m2, h2 = res.paired_difference(none)
        print(f"{name:<18}{res.value:>9.3f}{f'{m1:+.3f} +- {h1:.3f}':>20}"
              f"{f'{m2:+.3f} +- {h2:.3f}':>20}")
    print("\nsearched rule (cells not listed: none):")
    for cell in np.flatnonzero(table):
        print(f"  {cell_label(int(cell)):<42} {TIERS[int(table[cell])]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
