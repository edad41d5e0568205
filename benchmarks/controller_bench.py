#!/usr/bin/env python
"""Does the controller earn its place? LSTM + PPO against regularized evolution and random search, on objectives
whose decisions interact.

    python benchmarks/controller_bench.py [--seeds 10] [--budget 2000] [--objectives nk,additive]
                                          [--controllers default,nasnet,fast] [--plot FILE | --no-plot] [--write]
    python benchmarks/controller_bench.py --surrogate benchmarks/results/mnas_bench_surrogate.json [--seeds 2]

`benchmarks/sample_efficiency.py` scores a child by a sum of one term per decision. That flatters a controller
whose policy factorizes over decisions: every decision can be learned on its own. A proxy's accuracy does not add
up that way (a wide expansion pays off only with enough layers to use it), so the main objective here is
NK-landscape-like (Kauffman's NK model): decision d contributes a seeded U(0, 1) table entry indexed by its own
option and the options of K = 2 other decisions chosen at random (anywhere in the genotype, before or after d),

    f(g) = sum_d T_d[g_d, g_{a(d)}, g_{b(d)}] / sum_d max T_d,

so that no decision has a best option of its own. The scale divides by the sum of the tables' maxima, an upper
bound of f that the optimum does not reach (the maxima of linked tables disagree), so f lies in [0, 1] on every
seed; the bar each strategy races to is random search's best of 1,000 samples on that seed (its own RNG). The
additive objective (one U(0, 1) weight per option, same scale: the optimum is exactly 1.0) is there for
comparison. Objective seed s is 1000 + s; the strategies are seeded with s.

Every strategy (`search.strategy.make_strategy`: mnas, evolution, random) runs on the real `mnasnet` space's
choice counts (42 decisions), children finishing two at a time as with two workers: the strategy proposes a
child while the previous one is still out, and learns of it when it finishes. Controller settings (CONTROLLERS):
`default` is configs/default.yaml's `controller:` section, `nasnet` configs/mnasnet-a1.yaml's (the `nasnet`
preset, PPOConfig's defaults), `fast` what configs/default.yaml had before (NASNet's controller with Adam 0.003 on
batches of 5). Reported per objective: mean and sd over seeds of the best reward after each budget; samples to the
bar (median); the controller's mean per-decision entropy (nats, along its most probable sequence; uniform is about
1.01) at each budget; the distinct architectures among the last 500 children, against the 500 of a search that
never repeats itself; and each controller's best minus evolution's on the same seed.

`--surrogate FILE` scores children with a surrogate of the proxy instead (`search.surrogate`): the paper's soft
reward ACC * (LAT / 75 ms) ** -0.07 with the surrogate's noisy accuracy (noise seeded by genotype and seed) and
the Pixel 1 latency predictor at 224x224. Its `--write` fills a block of its own in BENCHMARKS.md, beside the
synthetic objectives' one.

Cost: the controller takes 5-17 ms a sample and 40-170 ms a PPO update, so a 2,000-sample search costs it about
half a minute; evolution and random search cost nothing: the defaults run for about half an hour on 2 busy cores.
The plot (`--plot`, default benchmarks/results/controller_bench.png: best reward against samples, median and
quartiles over seeds, and the controllers' entropy) needs matplotlib (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine, report, shown, today  # noqa: E402
from mnas.search.config import SearchConfig  # noqa: E402
from mnas.search.registry import load_space  # noqa: E402
from mnas.search.strategy import make_strategy  # noqa: E402

SPACE = "mnasnet"
BUDGETS = (250, 500, 1000, 2000)
LAST = 500                      # distinct architectures among the last LAST children
ENTROPY_EVERY = 50              # the controller's entropy is recorded every this many children (and at BUDGETS)
BAR_SAMPLES = 1000              # the bar: random search's best of this many
IN_FLIGHT = 2
DEFAULT_PLOT = os.path.join(ROOT, "benchmarks", "results", "controller_bench.png")
MISSING_MATPLOTLIB = ("controller_bench.py: the plot needs matplotlib, which is not installed: "
                      "pip install -e '.[bench]' (or pass --no-plot)")
CONTROLLERS = {
    "default": SearchConfig.load(os.path.join(ROOT, "configs", "default.yaml")).controller,
    "nasnet": SearchConfig.load(os.path.join(ROOT, "configs", "mnasnet-a1.yaml")).controller,
    "fast": {"learning_rate": 0.003, "batch_size": 5},     # configs/default.yaml's before this benchmark
}


class NKObjective:
    """f(g) = sum_d T_d[g_d, g_a(d), g_b(d)] / sum_d max T_d, a decision's term indexed by K others (docstring)."""

    name = "nk"

    def __init__(self, counts, seed: int, k: int = 2):
        rng = np.random.default_rng(seed)
        n = len(counts)
        if n <= k:
            raise ValueError(f"an NK objective with K={k} needs more than {k} decisions, got {n}")
        self.links = [[d] + [int(e) for e in rng.choice([e for e in range(n) if e != d], size=k, replace=False)]
                      for d in range(n)]
        self.tables = [rng.random([counts[e] for e in link]) for link in self.links]
        self.scale = float(sum(t.max() for t in self.tables))

    def __call__(self, indices) -> float:
        return sum(float(t[tuple(indices[e] for e in link)]) for t, link in zip(self.tables, self.links)) / self.scale


class AdditiveObjective:
    """f(g) = sum_d w_d[g_d] / sum_d max w_d: every decision has a best option of its own; the optimum is 1.0."""

    name = "additive"

    def __init__(self, counts, seed: int):
        rng = np.random.default_rng(seed)
        self.weights = [rng.random(n) for n in counts]
        self.scale = float(sum(w.max() for w in self.weights))

    def __call__(self, indices) -> float:
        return sum(float(w[i]) for w, i in zip(self.weights, indices)) / self.scale


class SurrogateObjective:
    """The soft reward of the surrogate's noisy accuracy and the Pixel 1 predicted latency, cached by genotype."""

    name = "surrogate"

    def __init__(self, path: str, space, seed: int, target_ms: float = 75.0):
        from mnas.measure import get_latency_model
        from mnas.search.reward import Reward
        from mnas.search.surrogate import Surrogate

        self.surrogate = Surrogate.load(path)
        self.surrogate.check_space(space)
        self.space, self.seed = space, seed
        self.latency = get_latency_model("pixel1")
        self.reward = Reward.from_settings({"preset": "soft", "target_ms": target_ms}, ["pixel1"])
        self.cache: dict[tuple, float] = {}

    def __call__(self, indices) -> float:
        key = tuple(indices)
        if key not in self.cache:
            arch = self.space.decode(list(key))
            accuracy = self.surrogate.evaluate(arch, list(key), seed=self.seed, noisy=True)
            self.cache[key] = self.reward(accuracy, {"pixel1": self.latency.latency_ms(arch, 224)})
        return self.cache[key]


def search(strategy, objective, budget: int, marks=None, in_flight: int = IN_FLIGHT) -> dict:
    """Runs `budget` children with `in_flight` outstanding; returns every reward and genotype in the order they
    finished, and the strategy's entropy after each mark (None for strategies without a policy; default marks:
    every ENTROPY_EVERY children and each of BUDGETS)."""
    if marks is None:
        marks = set(budgets_up_to(budget)) | {10, 20, 30, 40} | set(range(ENTROPY_EVERY, budget + 1, ENTROPY_EVERY))
    pending, rewards, genotypes, entropy = [], [], [], {}
    while len(rewards) < budget:
        while len(pending) < in_flight:
            pending.append(strategy.propose())
        done = pending.pop(0)
        value = objective(done.indices)
        strategy.observe(done, value)
        rewards.append(value)
        genotypes.append(tuple(done.indices))
        if len(rewards) in marks:
            entropy[len(rewards)] = strategy.entropy()
    return {"rewards": rewards, "genotypes": genotypes, "entropy": entropy}


def budgets_up_to(budget: int) -> list[int]:
    """The BUDGETS below `budget`, and `budget` itself: the columns of the table."""
    return [b for b in BUDGETS if b < budget] + [budget]


def best_curve(rewards) -> np.ndarray:
    return np.maximum.accumulate(np.asarray(rewards, float))


def samples_to(rewards, bar: float) -> int | None:
    hits = np.flatnonzero(np.asarray(rewards) >= bar)
    return int(hits[0]) + 1 if hits.size else None


def random_bar(objective, counts, seed: int, samples: int = BAR_SAMPLES) -> float:
    rng = random.Random(2000 + seed)
    return max(objective([rng.randrange(n) for n in counts]) for _ in range(samples))


def strategy_runs(controllers) -> dict[str, tuple[str, dict | None]]:
    """Label -> (strategy name, settings) for the strategies compared."""
    runs = {}
    for name in controllers:
        if name not in CONTROLLERS:
            raise ValueError(f"unknown controller setting {name!r} (known: {', '.join(CONTROLLERS)})")
        runs[f"mnas ({name})"] = ("mnas", dict(CONTROLLERS[name]))
    runs["evolution"] = ("evolution", None)
    runs["random"] = ("random", None)
    return runs


def run_objective(make_objective, counts, runs, seeds: int, budget: int, log=print) -> dict:
    """Every strategy on every seed of one objective: {label: [per-seed result]} plus the bars."""
    results = {label: [] for label in runs}
    bars = []
    for seed in range(seeds):
        objective = make_objective(seed)
        bars.append(random_bar(objective, counts, seed))
        for label, (kind, settings) in runs.items():
            strategy = make_strategy(kind, counts, seed=seed, settings=settings)
            start = time.perf_counter()
            result = search(strategy, objective, budget)
            result["seconds"] = time.perf_counter() - start
            result["to_bar"] = samples_to(result["rewards"], bars[-1])
            results[label].append(result)
            curve = best_curve(result["rewards"])
            log(f"{objective.name} seed {seed} {label}: best {curve[-1]:.4f}, bar {bars[-1]:.4f} reached at "
                f"{result['to_bar']}, distinct in last {LAST} {len(set(result['genotypes'][-LAST:]))}, "
                f"{result['seconds']:.0f} s")
    return {"results": results, "bars": bars}


def table(name: str, data: dict, budget: int) -> list[str]:
    """The Markdown table of one objective."""
    budgets = budgets_up_to(budget)
    results, bars = data["results"], data["bars"]
    lines = [f"| {name} | " + " | ".join(f"best after {b}" for b in budgets)
             + " | samples to the bar (median; per seed) | entropy at " + ", ".join(map(str, budgets))
             + f" | distinct in last {LAST} |",
             "|---|" + "---|" * (len(budgets) + 3)]
    for label, runs in results.items():
        cells = []
        for b in budgets:
            values = [best_curve(r["rewards"])[b - 1] for r in runs]
            cells.append(f"{statistics.mean(values):.4f} +- {statistics.stdev(values) if len(values) > 1 else 0:.4f}")
        reached = [r["to_bar"] for r in runs]
        shown = ", ".join(str(v) if v is not None else f">{budget}" for v in reached)
        ordered = sorted(v if v is not None else float("inf") for v in reached)
        median = statistics.median(ordered)
        median_text = f">{budget}" if median == float("inf") else f"{median:g}"
        entropies = [r["entropy"] for r in runs if r["entropy"].get(budgets[0]) is not None]
        entropy = (", ".join(f"{statistics.mean(e[b] for e in entropies):.2f}" for b in budgets)
                   if entropies else "-")
        distinct = [len(set(r["genotypes"][-LAST:])) for r in runs]
        cells += [f"{median_text} ({shown})", entropy,
                  f"{statistics.mean(distinct):.0f} ({min(distinct)}-{max(distinct)})"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Bar (random search's best of {BAR_SAMPLES:,}, own RNG): mean {statistics.mean(bars):.4f} "
                 f"(per seed {min(bars):.4f}-{max(bars):.4f}).")
    if "evolution" in results and len(bars) > 1:
        for label, runs in results.items():
            if not label.startswith("mnas"):
                continue
            cells = []
            for b in budgets:
                diff = [best_curve(r["rewards"])[b - 1] - best_curve(e["rewards"])[b - 1]
                        for r, e in zip(runs, results["evolution"])]
                wins = sum(d > 0 for d in diff)
                cells.append(f"{statistics.mean(diff):+.4f} +- {statistics.stdev(diff) / len(diff) ** 0.5:.4f} "
                             f"({wins} of {len(diff)} seeds ahead) at {b}")
            lines.append(f"{label} minus evolution, same seed (mean +- standard error): " + "; ".join(cells) + ".")
    return lines


def plot(objectives: dict, budget: int, path: str) -> None:
    """Best reward against samples, median and interquartile band over seeds, one line per strategy."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(MISSING_MATPLOTLIB) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(objectives), figsize=(6.5 * len(objectives), 8), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.3]}, sharex=True)
    x = np.arange(1, budget + 1)
    for column, (name, data) in enumerate(objectives.items()):
        ax, below = axes[0][column], axes[1][column]
        for label, runs in data["results"].items():
            curves = np.array([best_curve(r["rewards"]) for r in runs])
            low, mid, high = np.percentile(curves, [25, 50, 75], axis=0)
            (line,) = ax.plot(x, mid, label=label)
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.axhline(statistics.mean(data["bars"]), color="gray", linestyle="--", linewidth=1,
                   label=f"random's best of {BAR_SAMPLES:,} (mean)")
        ax.set_xscale("log")
        ax.set_xlim(10, budget)
        ax.set_ylabel("best reward so far")
        ax.set_title(f"{name}: median and quartiles over {len(data['bars'])} seeds")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        for label, runs in data["results"].items():
            if runs[0]["entropy"] and None not in runs[0]["entropy"].values():
                marks = sorted(runs[0]["entropy"])
                below.plot(marks, [statistics.mean(r["entropy"][m] for r in runs) for m in marks], label=label)
        below.set_xlabel("samples (children finished)")
        below.set_ylabel("entropy, nats/decision")
        below.set_ylim(bottom=0)
        below.grid(True, alpha=0.3)
        below.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="searches of each setting (default %(default)s)")
    parser.add_argument("--budget", type=int, default=max(BUDGETS), help="children per search")
    parser.add_argument("--objectives", default="nk,additive", help="comma-separated: nk, additive")
    parser.add_argument("--controllers", default="default,nasnet,fast",
                        help=f"comma-separated controller settings (known: {', '.join(CONTROLLERS)})")
    parser.add_argument("--surrogate", metavar="FILE", help="score children with this surrogate of the proxy instead")
    parser.add_argument("--plot", default=DEFAULT_PLOT, help="the PNG to write (default: %(default)s)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.budget < 1:
        parser.error("--seeds and --budget must be positive")
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401  (fail now, not after the runs)
        except ImportError:
            raise SystemExit(MISSING_MATPLOTLIB) from None
    space = load_space(SPACE)
    counts = space.choice_counts
    try:
        runs = strategy_runs([c for c in args.controllers.split(",") if c])
    except ValueError as err:
        parser.error(str(err))
    if args.surrogate:
        makers = {"surrogate": lambda seed: SurrogateObjective(args.surrogate, space, seed)}
    else:
        known = {"nk": lambda seed: NKObjective(counts, 1000 + seed),
                 "additive": lambda seed: AdditiveObjective(counts, 1000 + seed)}
        names = [o for o in args.objectives.split(",") if o]
        unknown = [o for o in names if o not in known]
        if unknown or not names:
            parser.error(f"unknown objective(s) {', '.join(unknown) or '(none)'} (known: {', '.join(known)})")
        makers = {name: known[name] for name in names}

    started = time.perf_counter()
    data = {name: run_objective(make, counts, runs, args.seeds, args.budget,
                                log=lambda text: print(text, file=sys.stderr, flush=True))
            for name, make in makers.items()}
    elapsed = time.perf_counter() - started
    if not args.no_plot:
        plot(data, args.budget, args.plot)

    command = f"python benchmarks/controller_bench.py --seeds {args.seeds} --budget {args.budget}"
    command += f" --surrogate {args.surrogate}" if args.surrogate else f" --objectives {','.join(makers)}"
    command += f" --controllers {args.controllers}"
    title = ("Controller against evolution on the surrogate of the proxy" if args.surrogate
             else "Controller against evolution on interacting decisions")
    lines = [f"### {title}", "",
             f"`{command}` -- {machine()}; {today()}; {elapsed / 60:.1f} minutes.", ""]
    for label, (kind, settings) in runs.items():
        if kind == "mnas":
            lines.append(f"* {label}: " + (", ".join(f"{k} {v}" for k, v in settings.items()) or "PPOConfig defaults"))
    lines.append("")
    for name, result in data.items():
        lines += table(name, result, args.budget) + [""]
    if not args.no_plot:
        lines.append(f"Plot: `{shown(args.plot)}`.")
    # The surrogate's figures get a block of their own: they do not replace the synthetic objectives' table.
    report("\n".join(lines), "strategies:controller-surrogate" if args.surrogate else "strategies:controller",
           args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
