#!/usr/bin/env python
"""Real small searches on the proxy task: the strategies at the same budget, and early stopping (ASHA) on/off.

    python benchmarks/search_strategies.py strategies [--seeds 3] [--samples 24] [--write]
    python benchmarks/search_strategies.py asha [--seeds 3] [--samples 16] [--write]
    python benchmarks/search_strategies.py strategies --quick     # 1 seed, 6 tiny children: ~5 minutes

Every search is `configs/default.yaml` (Pixel 1 predicted latency, soft reward at 75 ms, 2 workers, one CPU thread
a child) with a smaller proxy task (--train-subset, --heldout) so that a search takes minutes; each seed seeds the
strategy (the proxy's own training seed stays fixed, so two strategies that sample the same child score it
alike).

* `strategies`: mnas (LSTM + PPO, the default config's settings), regularized evolution and random search, the
  same budget each. Evolution's first `--population` children are random (with the same seed, exactly random
  search's), so the budget must be a few populations for it to act: the defaults are 24 children and a population
  of 8 (tournaments of 3). Reported per strategy over seeds: the best reward, the mean of the top 3, the mean reward of
  the second half of the search against the first (a strategy that learns improves), and the wall time.
* `asha`: the mnas strategy without and with `scheduler: {name: asha}` (4 rungs, reduction factor 2): children per
  hour, children stopped early, and the best reward among fully trained children -- whether stopping weak
  children early buys more children for the same hour without losing the best ones.

With a budget this small (the paper's search sampled 8,000 children) differences between strategies are within
the proxy's noise unless they are large; the tables give per-seed values so the reader can judge.

Expected duration with the defaults: strategies ~35 minutes, asha ~15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine, today, update_block  # noqa: E402
from benchmarks.search_scaling import run_search  # noqa: E402


def config_for(args, seed: int, strategy: str = "mnas", scheduler: str = "none") -> dict:
    from mnas.search.config import SearchConfig

    config = SearchConfig.load(os.path.join(ROOT, "configs", "default.yaml")).to_dict()
    config.update(name=f"bench-{strategy}-{scheduler}-{seed}", samples=args.samples, seed=seed, strategy=strategy,
                  scheduler={"name": scheduler},
                  evolution={"population": args.population, "sample_size": args.tournament})
    config["proxy"] = {**config["proxy"], "train_subset": args.train_subset, "heldout": args.heldout}
    return config


def figures(run: dict) -> dict:
    """Per-run figures read from its store."""
    from mnas.results.store import ResultStore

    children = ResultStore(run["run_dir"], readonly=True).children(status="all").sort_values("sample")
    ok = children[children["status"] == "ok"]
    half = len(children) // 2
    first, second = children.iloc[:half], children.iloc[half:]
    top = ok["reward"].nlargest(3)
    return {"best": float(ok["reward"].max()) if len(ok) else float("nan"), "top3": float(top.mean()),
            "first_half": float(first.loc[first["status"] == "ok", "reward"].mean()),
            "second_half": float(second.loc[second["status"] == "ok", "reward"].mean()),
            "pruned": int((children["status"] == "pruned").sum()),
            "failed": int((children["status"] == "failed").sum()),
            "children": len(children), "wall": run["wall"],
            "best_latency": float(ok.loc[ok["reward"].idxmax(), "latency_ms"]) if len(ok) else float("nan"),
            "best_accuracy": float(ok.loc[ok["reward"].idxmax(), "accuracy"]) if len(ok) else float("nan")}


def _mean(values) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} +- {statistics.stdev(values):.4f}"


def _per_seed(values, fmt="{:.4f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def compare_strategies(args, out: str) -> str:
    results = {}
    for strategy in ("mnas", "evolution", "random"):
        for seed in range(args.seeds):
            print(f"[{time.strftime('%H:%M:%S')}] {strategy} seed {seed} ...", file=sys.stderr, flush=True)
            run = run_search(config_for(args, seed, strategy), os.path.join(out, f"{strategy}-{seed}"))
            results.setdefault(strategy, []).append(figures(run))
            print(f"  best {results[strategy][-1]['best']:.4f} in {run['wall']:.0f} s", file=sys.stderr, flush=True)
    lines = [header(args, "strategies"), "",
             "| strategy | best reward, per seed | best (mean +- sd) | top-3 mean | mean reward, 1st half -> 2nd half | "
             "wall s per search |", "|---|---|---|---|---|---|"]
    for strategy, rows in results.items():
        lines.append(f"| {strategy} | {_per_seed([r['best'] for r in rows])} | {_mean([r['best'] for r in rows])} | "
                     f"{_mean([r['top3'] for r in rows])} | {_mean([r['first_half'] for r in rows])} -> "
                     f"{_mean([r['second_half'] for r in rows])} | {statistics.fmean(r['wall'] for r in rows):.0f} |")
    lines += ["", "Best child of each search (accuracy @ predicted Pixel 1 latency): " + "; ".join(
        f"{strategy} " + ", ".join(f"{r['best_accuracy']:.3f} @ {r['best_latency']:.0f} ms" for r in rows)
        for strategy, rows in results.items()) + "."]
    return "\n".join(lines) + "\n"


def compare_asha(args, out: str) -> str:
    results = {}
    for scheduler in ("none", "asha"):
        for seed in range(args.seeds):
            print(f"[{time.strftime('%H:%M:%S')}] scheduler {scheduler} seed {seed} ...", file=sys.stderr, flush=True)
            run = run_search(config_for(args, seed, "mnas", scheduler), os.path.join(out, f"{scheduler}-{seed}"))
            results.setdefault(scheduler, []).append(figures(run))
            print(f"  best {results[scheduler][-1]['best']:.4f}, {results[scheduler][-1]['pruned']} pruned, "
                  f"{run['wall']:.0f} s", file=sys.stderr, flush=True)
    lines = [header(args, "asha"), "",
             "| scheduler | wall s per search, per seed | children / hour | stopped early | best reward (fully "
             "trained), per seed | best (mean +- sd) | top-3 mean |", "|---|---|---|---|---|---|---|"]
    for scheduler, rows in results.items():
        per_hour = [3600 * r["children"] / r["wall"] for r in rows]
        lines.append(f"| {scheduler} | {_per_seed([r['wall'] for r in rows], '{:.0f}')} | "
                     f"{statistics.fmean(per_hour):.0f} | {sum(r['pruned'] for r in rows)} of "
                     f"{sum(r['children'] for r in rows)} | {_per_seed([r['best'] for r in rows])} | "
                     f"{_mean([r['best'] for r in rows])} | {_mean([r['top3'] for r in rows])} |")
    none, asha = results["none"], results["asha"]
    speed = statistics.fmean(r["wall"] for r in none) / statistics.fmean(r["wall"] for r in asha)
    lines += ["", f"ASHA gives {speed:.2f}x the children per hour here; its best fully trained reward is "
                  f"{statistics.fmean(r['best'] for r in asha) - statistics.fmean(r['best'] for r in none):+.4f} "
                  "against no early stopping (mean over seeds)."]
    return "\n".join(lines) + "\n"


def header(args, what: str) -> str:
    command = f"python benchmarks/search_strategies.py {what} --seeds {args.seeds} --samples {args.samples} " \
              f"--train-subset {args.train_subset} --heldout {args.heldout}"
    if what == "strategies":
        command += f" --population {args.population} --tournament {args.tournament}"
    return (f"`{command}` -- {machine()}; {today()}. Each search: {args.samples} children of `configs/default.yaml` "
            f"(Pixel 1 predicted latency, soft reward at 75 ms, 2 workers) with a proxy of {args.train_subset:,} "
            f"training and {args.heldout:,} held-out images; seeds 0-{args.seeds - 1} seed the strategy.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("compare", choices=("strategies", "asha"),
                        help="strategies: mnas, random and evolution at one budget; asha: early stopping on/off")
    parser.add_argument("--seeds", type=int, default=3, help="strategy seeds (default %(default)s)")
    parser.add_argument("--samples", type=int, default=None,
                        help="children a search (default 24 for strategies, 16 for asha)")
    parser.add_argument("--population", type=int, default=8, help="evolution's population (default 8)")
    parser.add_argument("--tournament", type=int, default=3, help="evolution's tournament size (default 3)")
    parser.add_argument("--train-subset", type=int, default=5000, help="proxy training images (default 5,000)")
    parser.add_argument("--heldout", type=int, default=2000, help="proxy held-out images (default 2,000)")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 6 children of 640 images")
    parser.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = 24 if args.compare == "strategies" else 16
    if args.quick:
        args.seeds, args.samples, args.train_subset, args.heldout, args.population = 1, 6, 640, 500, 3
    if args.seeds < 1 or args.samples < 2:
        parser.error("need --seeds >= 1 and --samples >= 2")
    out = args.out or tempfile.mkdtemp(prefix=f"mnas-bench-{args.compare}-")
    text = (compare_strategies if args.compare == "strategies" else compare_asha)(args, out)
    print(text)
    if args.write:
        title = ("### Strategies on the proxy task, same budget" if args.compare == "strategies"
                 else "### Early stopping (ASHA) on the proxy task")
        update_block(f"strategies:{args.compare}", f"{title}\n\n{text}")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
