#!/usr/bin/env python
"""The real check of issue 17 (part 4): a real `mnas` search on the proxy beside random search on the same proxy,
and beside what the surrogate predicted for the same budget.

    python benchmarks/real_check.py [--mnas benchmarks/results/part4_mnas_search.csv | RUN_DIR]
                                    [--random benchmarks/results/mnas_bench.csv] [--budget 300]
                                    [--seeds 10] [--plot FILE | --no-plot] [--write]

* mnas: the children of one real search with the default settings (`configs/default.yaml`: soft reward at
  T = 75 ms, the shipped controller), in the order they were proposed (`sample`): a run folder, or its export
  (`mnas results RUN --status all --top 100000 --export FILE.csv`).
* random: MNAS-Bench (`benchmarks/mnas_bench.py`), uniformly random children of the same space trained on the
  same proxy by the project's own search (`--strategy random`); its first --budget children in collection order
  (the runs in the order the table lists them, each by sample), scored with the same reward. As a steadier
  reference beside that one draw: best-of-n and top-10 of n children drawn from the whole collection without
  replacement (2,000 draws; median and 10-90% band).
* surrogate: the same two strategies for --budget children on the surrogate of the proxy (`controller_bench.py
  --surrogate`'s objective: the surrogate's accuracy with its seeded proxy noise, Pixel 1 latency), --seeds seeds:
  what the surrogate predicted the real search would do.
* what the search moved: latency, accuracy and layers without a shortcut, its first and last 50 children beside
  the random ones.
* the surrogate on the real search's own children (chosen by the controller, none in its fit): rank correlation
  of predicted and real proxy accuracy, and how far it over-rates them (all, and the 10 it rates highest).

Reported at 50, 100, ... and --budget children: best reward, mean of the top 10 (distinct architectures), and
the best-so-far curve (plot: benchmarks/results/real_check.png). A child that failed counts as reward 0. --write
puts the table into BENCHMARKS.md between the `<!-- real-check -->` markers. Seconds for the real tables; the
surrogate runs take about a minute a seed on a busy core (the controller's PPO).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # the controller's TensorFlow: no start-up lines

from benchmarks.common import machine, report, shown, today  # noqa: E402
from benchmarks.mnas_bench import DEFAULT_SURROGATE, read_bench  # noqa: E402
from benchmarks.mnas_bench import DEFAULT_TABLE as DEFAULT_RANDOM  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
DEFAULT_MNAS = os.path.join(RESULTS, "part4_mnas_search.csv")
DEFAULT_PLOT = os.path.join(RESULTS, "real_check.png")
TARGET_MS = 75.0
DRAWS = 2000
TOP = 10


def soft_reward():
    from mnas.search.reward import Reward

    return Reward.from_settings({"preset": "soft", "target_ms": TARGET_MS}, ["pixel1"])


def read_search(source: str):
    """A real search's children by sample, from its run folder or its CSV export."""
    import pandas as pd

    if os.path.isdir(source):
        from mnas.results.store import ResultStore

        with ResultStore(source, readonly=True) as store:
            frame = pd.DataFrame(store.records())
    else:
        frame = pd.read_csv(source)
    return frame.sort_values("sample")


def _indices(value) -> tuple:
    return tuple(json.loads(value) if isinstance(value, str) else value)


def mnas_children(frame) -> list[tuple[tuple, float]]:
    """(genotype, reward) of a real search's children (`read_search`); failed children score 0."""
    return [(_indices(i), float(r) if s == "ok" else 0.0)
            for i, r, s in zip(frame["indices"], frame["reward"], frame["status"])]


def random_children(frame) -> list[tuple[tuple, float]]:
    """(genotype, reward) of MNAS-Bench's children (`read_bench`), scored with the soft reward at 75 ms."""
    reward = soft_reward()
    return [(tuple(json.loads(i)), reward(a, {"pixel1": lat}) if s == "ok" else 0.0)
            for i, a, lat, s in zip(frame["indices"], frame["accuracy"], frame["latency_pixel1_ms"], frame["status"])]


def top_mean(children, k: int = TOP) -> float:
    """Mean reward of the k best distinct architectures (a repeated one counts once, at its mean)."""
    by_genotype: dict[tuple, list[float]] = {}
    for genotype, value in children:
        by_genotype.setdefault(genotype, []).append(value)
    best = sorted((float(np.mean(v)) for v in by_genotype.values()), reverse=True)[:k]
    return float(np.mean(best))


def stats_at(children, marks) -> dict[int, dict]:
    return {n: {"best": max(v for _, v in children[:n]), "top": top_mean(children[:n])}
            for n in marks if n <= len(children)}


def resampled(children, marks, draws: int = DRAWS, seed: int = 0) -> dict[int, dict]:
    """Best-of-n and top-10 of n children drawn without replacement from `children`: median and 10-90% band."""
    rng = np.random.default_rng(seed)
    values = np.array([v for _, v in children])
    out = {}
    for n in marks:
        if n > len(values):
            continue
        samples = np.sort(np.array([rng.choice(values, n, replace=False) for _ in range(draws)]), axis=1)
        best, top = samples[:, -1], samples[:, -TOP:].mean(axis=1)
        out[n] = {"best": float(np.median(best)), "best_band": (float(np.quantile(best, 0.1)),
                                                                float(np.quantile(best, 0.9))),
                  "top": float(np.median(top)), "top_band": (float(np.quantile(top, 0.1)),
                                                             float(np.quantile(top, 0.9)))}
    return out


def surrogate_runs(path: str, budget: int, seeds: int, log=print) -> dict[str, list[list[tuple[tuple, float]]]]:
    """The shipped controller and random search on the surrogate: {label: [children of each seed]}."""
    from benchmarks.controller_bench import CONTROLLERS, SurrogateObjective, search
    from mnas.search.registry import load_space
    from mnas.search.strategy import make_strategy

    space = load_space("mnasnet")
    runs: dict[str, list] = {"mnas": [], "random": []}
    for seed in range(seeds):
        objective = SurrogateObjective(path, space, seed)
        for label, settings in (("mnas", dict(CONTROLLERS["default"])), ("random", None)):
            strategy = make_strategy(label, space.choice_counts, seed=seed, settings=settings)
            result = search(strategy, objective, budget, marks=set())
            runs[label].append(list(zip(result["genotypes"], result["rewards"])))
        log(f"surrogate seed {seed}: mnas best {max(runs['mnas'][-1], key=lambda c: c[1])[1]:.4f}, random best "
            f"{max(runs['random'][-1], key=lambda c: c[1])[1]:.4f}")
    return runs


def surrogate_on_search(frame, path: str, top: int = TOP) -> dict:
    """The surrogate against the real search's own children (chosen by the controller, none of them in the data
    it was fitted on): rank correlation of predicted and real proxy accuracy, and the mean of predicted minus real
    over all of them and over the `top` the surrogate rates highest -- where a search led by it would go."""
    from mnas.search.registry import load_space
    from mnas.search.surrogate import Surrogate, kendall, spearman

    frame = frame[frame["status"] == "ok"]
    space = load_space("mnasnet")
    surrogate = Surrogate.load(path)
    surrogate.check_space(space)
    real = frame["accuracy"].to_numpy(float)
    predicted = surrogate.predict([space.decode(list(_indices(i))) for i in frame["indices"]])
    best = np.argsort(-predicted)[:top]
    return {"n": len(real), "spearman": spearman(predicted, real), "kendall": kendall(predicted, real),
            "bias": float(np.mean(predicted - real)), "bias_top": float(np.mean(predicted[best] - real[best])),
            "top": int(len(best))}


def drift(search, bench, share: int = 50) -> dict[str, dict]:
    """What the search moved: median predicted latency, mean proxy accuracy and mean layers without a shortcut in
    the proxy network (the surrogate's `proxy_plain_layers`, the feature that ranks random children best), for the
    search's first and last `share` trained children and for the random collection."""
    from mnas.search.registry import load_space
    from mnas.search.surrogate import features, feature_names

    space = load_space("mnasnet")
    plain = feature_names(len(space.blocks)).index("proxy_plain_layers")    # on MNAS-Bench's proxy adaptation

    def summary(frame, latency_column):
        frame = frame[frame["status"] == "ok"]
        layers = [features(space.decode(list(_indices(i))))[plain] for i in frame["indices"]]
        return {"n": len(frame), "latency_ms": float(frame[latency_column].median()),
                "accuracy": float(frame["accuracy"].mean()), "plain_layers": float(np.mean(layers))}

    search = search[search["status"] == "ok"]
    return {f"mnas, first {share}": summary(search.head(share), "latency_ms"),
            f"mnas, last {share}": summary(search.tail(share), "latency_ms"),
            "random (MNAS-Bench)": summary(bench, "latency_pixel1_ms")}


def surrogate_stats(runs, marks) -> dict[str, dict[int, dict]]:
    out = {}
    for label, seeds in runs.items():
        per = [stats_at(children, marks) for children in seeds]
        out[label] = {n: {key: (float(np.mean([p[n][key] for p in per])),
                                float(np.std([p[n][key] for p in per], ddof=1)) if len(per) > 1 else 0.0)
                          for key in ("best", "top")} for n in marks}
    return out


def render(result: dict) -> str:
    marks = result["marks"]
    real, rnd, res = result["mnas"], result["random"], result["resampled"]
    lines = ["### The real check (issue 17, part 4)", "",
             f"`{result['command']}` -- {result['machine']}; {result['date']}. A real `mnas` search with the "
             f"default settings ({result['mnas_children']} children"
             f"{' so far' if result['mnas_children'] < result['budget'] else ''}, {result['mnas_source']}) beside "
             f"the first "
             f"{result['budget']} children of the random collection (MNAS-Bench, same proxy, same reward: soft at "
             f"T = {TARGET_MS:g} ms) and beside the whole collection ({result['random_children']:,} children) drawn "
             f"{DRAWS:,} times (median, 10-90% in brackets). Top 10: mean reward of the 10 best distinct "
             "architectures.", "",
             "| children | mnas best | random best (first n) | random best-of-n (drawn) | mnas top 10 | "
             "random top 10 (first n) | random top 10 of n (drawn) |", "|---|---|---|---|---|---|---|"]
    for n in marks:
        if n not in real:
            continue
        r = res.get(n)
        drawn_best = f"{r['best']:.4f} ({r['best_band'][0]:.4f}-{r['best_band'][1]:.4f})" if r else "-"
        drawn_top = f"{r['top']:.4f} ({r['top_band'][0]:.4f}-{r['top_band'][1]:.4f})" if r else "-"
        first = rnd.get(n)
        first_best, first_top = (f"{first['best']:.4f}", f"{first['top']:.4f}") if first else ("-", "-")
        lines.append(f"| {n} | {real[n]['best']:.4f} | {first_best} | {drawn_best} | {real[n]['top']:.4f} | "
                     f"{first_top} | {drawn_top} |")
    sur = result.get("surrogate")
    if sur:
        lines += ["", f"What the surrogate predicted for the same budget ({result['seeds']} seeds, mean +- sd; "
                      "`controller_bench.py --surrogate`'s objective):", "",
                  "| children | mnas best | random best | mnas top 10 | random top 10 |", "|---|---|---|---|---|"]
        for n in marks:
            m, q = sur["mnas"][n], sur["random"][n]
            lines.append(f"| {n} | {m['best'][0]:.4f} +- {m['best'][1]:.4f} | {q['best'][0]:.4f} +- "
                         f"{q['best'][1]:.4f} | {m['top'][0]:.4f} +- {m['top'][1]:.4f} | {q['top'][0]:.4f} +- "
                         f"{q['top'][1]:.4f} |")
    if result.get("drift"):
        lines += ["", "What the search moved (trained children; plain layers: layers without a shortcut in the proxy "
                      "network):", "", "| children | n | median Pixel 1 ms | mean accuracy | mean plain layers |",
                  "|---|---|---|---|---|"]
        lines += [f"| {label} | {d['n']:,} | {d['latency_ms']:.1f} | {d['accuracy']:.4f} | {d['plain_layers']:.2f} |"
                  for label, d in result["drift"].items()]
    fit = result.get("surrogate_on_search")
    if fit:
        lines += ["", f"The surrogate on the real search's own {fit['n']} children (none in its fit): predicted "
                      f"against real proxy accuracy, Spearman {fit['spearman']:.2f}, Kendall {fit['kendall']:.2f}; "
                      f"predicted minus real {fit['bias']:+.4f} on average, {fit['bias_top']:+.4f} on the "
                      f"{fit['top']} it rates highest."]
    if result.get("plot"):
        lines += ["", f"Plot: `{result['plot']}` (best reward so far against children)."]
    return "\n".join(lines)


def plot(result: dict, mnas, rnd, surrogate, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    from benchmarks.controller_bench import best_curve

    def best(children):
        return best_curve([v for _, v in children])

    ax.plot(np.arange(1, len(mnas) + 1), best(mnas), color="C0", lw=2, label="mnas, real proxy")
    first = rnd[:result["budget"]]
    ax.plot(np.arange(1, len(first) + 1), best(first), color="C1", lw=2, label="random, real proxy (first n)")
    drawn = resampled(rnd, range(10, result["budget"] + 1, 10), draws=500)
    xs = sorted(drawn)
    ax.fill_between(xs, [drawn[n]["best_band"][0] for n in xs], [drawn[n]["best_band"][1] for n in xs],
                    color="C1", alpha=0.15, label="random best-of-n, drawn (10-90%)")
    if surrogate:
        for label, color in (("mnas", "C0"), ("random", "C1")):
            curves = np.array([best(children) for children in surrogate[label]])
            ax.plot(np.arange(1, curves.shape[1] + 1), np.median(curves, axis=0), color=color, ls="--", lw=1,
                    label=f"{label}, surrogate (median of {len(curves)} seeds)")
    ax.set_xlabel("children")
    ax.set_ylabel(f"best reward so far (soft, T = {TARGET_MS:g} ms)")
    ax.set_ylim(bottom=max(0.75, ax.get_ylim()[0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnas", default=DEFAULT_MNAS, help="a run folder or its CSV export (default: %(default)s)")
    p.add_argument("--random", default=DEFAULT_RANDOM, help="MNAS-Bench's table (default: %(default)s)")
    p.add_argument("--surrogate", default=DEFAULT_SURROGATE, help="default: %(default)s")
    p.add_argument("--budget", type=int, default=300, help="children compared (default %(default)s)")
    p.add_argument("--seeds", type=int, default=10, help="surrogate seeds (0: skip the surrogate)")
    p.add_argument("--plot", default=DEFAULT_PLOT, help="default: %(default)s")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--write", action="store_true", help="put the table into BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.budget < 1 or args.seeds < 0:
        p.error("--budget must be at least 1 and --seeds at least 0")
    for path in (args.mnas, args.random) + ((args.surrogate,) if args.seeds else ()):
        if not os.path.exists(path):
            p.error(f"{path}: no such file or folder")
    search_frame, bench_frame = read_search(args.mnas), read_bench(args.random)     # each file read once
    mnas, rnd = mnas_children(search_frame), random_children(bench_frame)
    marks = sorted({n for n in range(50, args.budget + 1, 50)} | {args.budget})
    real_marks = [n for n in marks if n <= len(mnas)] or [len(mnas)]
    if len(mnas) not in real_marks and len(mnas) < args.budget:
        real_marks.append(len(mnas))
    surrogate = surrogate_runs(args.surrogate, args.budget, args.seeds,
                               log=lambda t: print(t, file=sys.stderr)) if args.seeds else None
    result = {"command": "python benchmarks/real_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine(), "date": today(), "budget": args.budget, "seeds": args.seeds,
              "marks": real_marks, "mnas_children": len(mnas), "random_children": len(rnd),
              "mnas_source": shown(args.mnas),
              "mnas": stats_at(mnas, real_marks), "random": stats_at(rnd, real_marks),
              "resampled": resampled(rnd, real_marks),
              "surrogate": surrogate_stats(surrogate, real_marks) if surrogate else None,
              "surrogate_on_search": surrogate_on_search(search_frame, args.surrogate) if args.seeds else None,
              "drift": drift(search_frame, bench_frame)}
    if not args.no_plot:
        try:
            plot(result, mnas, rnd, surrogate, args.plot)
            result["plot"] = shown(args.plot)
        except ImportError:
            print("real_check.py: the plot needs matplotlib (pip install -e '.[bench]'); table only",
                  file=sys.stderr)
    report(render(result), "real-check", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
