#!/usr/bin/env python
"""Sample efficiency of the strategies on a seeded synthetic objective over the real search space.

    python benchmarks/sample_efficiency.py [--seeds 3] [--cap 2000] [--space mnasnet] [--spread 1.0] [--write]

The objective is additive over the space's decisions, f(g) = sum_d w[d][g_d] / sum_d max_o w[d][o], with weights
drawn from a seeded U(0, 1): its optimum (1.0) is known, every decision matters, and no model is trained, so
the run measures the strategies alone. The bar is random search's best of 1,000 samples (on its own seed);
the table gives how many samples each strategy needs to reach it (goal for the controller: 300 or fewer),
children finishing two at a time as with two workers. About 2-5 minutes on 2 cores. It also times the
controller: one sample and one PPO update.

The controller runs with the settings `configs/default.yaml` ships (read from the file), with NASNet's (PPOConfig's
defaults, the `nasnet` preset), and with the plain fast ones the default used before its PPO was reworked (Adam
3e-3, batches of 5, nothing else). An objective whose decisions interact, where a factorized policy has a harder
time, is benchmarks/controller_bench.py's. `--write` puts the table into BENCHMARKS.md, one block per `--spread`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import report  # noqa: E402
from mnas.search.config import SearchConfig  # noqa: E402
from mnas.search.registry import load_space  # noqa: E402
from mnas.search.strategy import make_strategy  # noqa: E402


class Objective:
    def __init__(self, counts, seed, spread=1.0):
        rng = random.Random(seed)
        self.weights = [[rng.random() for _ in range(n)] for n in counts]
        self.best = sum(max(w) for w in self.weights)
        self.spread = spread

    def __call__(self, indices):
        value = sum(w[i] for w, i in zip(self.weights, indices)) / self.best
        return 1.0 - self.spread + self.spread * value


def samples_to_reach(strategy, objective, bar, cap, in_flight=2):
    pending = []
    for n in range(1, cap + 1):
        pending.append(strategy.propose())
        if len(pending) >= in_flight or n == cap:
            done = pending.pop(0)
            value = objective(done.indices)
            if value >= bar:
                return n
            strategy.observe(done, value)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="runs of each strategy (default %(default)s)")
    parser.add_argument("--cap", type=int, default=2000, help="give up after this many samples")
    parser.add_argument("--space", default="mnasnet", help="the search space (default %(default)s)")
    parser.add_argument("--spread", type=float, default=1.0,
                        help="rescale the objective to 1 - spread + spread * f: 0.15 mimics a proxy search's rewards "
                             "(0.75-0.87), where raw advantages are small")
    parser.add_argument("--write", action="store_true", help="put the table into BENCHMARKS.md")
    args = parser.parse_args()
    counts = load_space(args.space).choice_counts
    shipped = SearchConfig.load(os.path.join(ROOT, "configs", "default.yaml")).strategy_settings()
    settings = {
        "mnas (configs/default.yaml)": ("mnas", shipped),
        "mnas (nasnet: lr 3.5e-4, batch 10)": ("mnas", {"preset": "nasnet"}),
        "mnas (plain: lr 3e-3, batch 5)": ("mnas", {"learning_rate": 3e-3, "batch_size": 5}),
        "evolution (P 20, S 5)": ("evolution", {}),
        "random": ("random", {}),
    }
    rows = {name: [] for name in settings}
    bars = []
    for seed in range(args.seeds):
        objective = Objective(counts, seed=1000 + seed, spread=args.spread)
        rng = random.Random(2000 + seed)
        bar = max(objective([rng.randrange(n) for n in counts]) for _ in range(1000))
        bars.append(bar)
        for name, (kind, extra) in settings.items():
            strategy = make_strategy(kind, counts, seed=seed, settings=dict(extra) or None)
            start = time.perf_counter()
            needed = samples_to_reach(strategy, objective, bar, args.cap)
            rows[name].append((needed, time.perf_counter() - start))
            print(f"seed {seed} {name}: {needed} samples ({rows[name][-1][1]:.1f} s)", file=sys.stderr)

    # controller cost
    controller = make_strategy("mnas", counts, seed=0).controller
    controller.sample()
    start = time.perf_counter()
    for _ in range(200):
        controller.sample()
    per_sample = (time.perf_counter() - start) / 200
    for _ in range(10):
        s = controller.sample()
        controller.observe(s.indices, s.log_prob, random.random())   # the first update traces the graph
    start = time.perf_counter()
    updates = 0
    for _ in range(50):
        s = controller.sample()
        if controller.observe(s.indices, s.log_prob, random.random()):
            updates += 1
    per_update = (time.perf_counter() - start - 50 * per_sample) / max(updates, 1)

    title = ("Sample efficiency on a synthetic objective" if args.spread == 1.0
             else f"The same with rewards compressed to a proxy search's range (spread {args.spread:g})")
    lines = [f"### {title} ({dt.date.today().isoformat()})", "",
             f"`python benchmarks/sample_efficiency.py --seeds {args.seeds} --cap {args.cap} --space {args.space} "
             f"--spread {args.spread}` "
             f"-- {platform.machine()}, {os.cpu_count()} cores, shared with other running work. Space "
             f"`{args.space}` ({len(counts)} decisions); bar = random search's best of 1,000 "
             f"(mean {statistics.mean(bars):.3f} of the optimum 1.0; the worst child scores {1 - args.spread:.2f}); "
             "children finish two at a time.", "",
             "| strategy | samples to reach the bar, per seed | median |", "|---|---|---|"]
    for name, results in rows.items():
        values = [r[0] for r in results]
        shown = ", ".join(str(v) if v is not None else f">{args.cap}" for v in values)
        reached = [v for v in values if v is not None]
        median = (statistics.median(values) if len(reached) == len(values)
                  else f"> {args.cap} ({len(reached)} of {len(values)} seeds reached it)")
        lines.append(f"| {name} | {shown} | {median} |")
    lines += ["", f"Controller cost ({len(counts)} decisions): {per_sample * 1000:.1f} ms per sample, "
                  f"{per_update * 1000:.0f} ms per PPO update (batch 10, 4 epochs)."]
    tag = "strategies:sample-efficiency" + ("" if args.spread == 1.0 else f"-spread-{args.spread:g}")
    report("\n".join(lines), tag, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
