#!/usr/bin/env python
"""Reproduce MnasNet-A1 and mnasnet-small as far as this machine can (issue 18): the figures for REPRODUCTION.md.

    python benchmarks/reproduction.py surrogate [--seeds 10] [--budget 2000] [--targets 75,23]
    python benchmarks/reproduction.py real RUN [RUN ...]        # run folders or their CSV exports
    python benchmarks/reproduction.py table1 [--epochs 1] [--seeds 2] [--found NAME=ARCH] [--out DIR]
    python benchmarks/reproduction.py report [--write]

The paper's search configuration throughout: the `mnasnet` space, Pixel 1 latency (the `pixel1` predictor at
224x224), the soft reward (alpha = beta = -0.07) and the hard one (alpha = 0, beta = -1), T = 75 ms (MnasNet-A1's
target) and T = 23 ms (mnasnet-small's measured latency, as a mnasnet-small-like target), and the shipped
controller settings (configs/default.yaml's `controller:` section, as `benchmarks/controller_bench.py` uses them).

* `surrogate` -- the searches on the surrogate of the proxy (`search.surrogate`, fitted on real children of
  MNAS-Bench; default benchmarks/results/mnas_bench_surrogate.json), scored as `controller_bench.py --surrogate`
  scores them: the surrogate's accuracy with its seeded proxy noise, the Pixel 1 predicted latency. Soft and hard at
  each target, --seeds searches of --budget children each (two in flight, `reward_shape.run`). Writes
  benchmarks/results/reproduction_surrogate.json and reproduction_fig6_surrogate.png. Parts 1, 2 (Fig. 6: latency
  of the last --last-share of each search's children, seeds pooled) and 4 (the top --top children of each search
  beside MnasNet-A1's block choices, and mnasnet-small's for T = 23). The soft reward's T is a constant factor
  (alpha = beta) and the controller standardizes its advantages, so the soft search is the same at every T: it
  runs once a seed and is summarized at each target. The defaults (3 distinct searches x 10 seeds x 2,000
  children) took 19 minutes on the ridge surrogate, beside a 2-worker search on the same 2 cores; `--seeds 2
  --budget 300` takes about a minute.
* `real RUN ...` -- parts 2, 4 and 5 on real searches: run folders (read-only: `ResultStore(path,
  readonly=True)`) or their exports (`mnas results RUN --status all --top 100000 --export FILE.csv`, with the
  run's config.json copied beside it as FILE.config.json: what is committed survives the machine), each labelled
  by its own config's reward preset and target: Fig. 6 of its last --last-share children, its top children
  against A1, and its cost (children, CPU-hours from the children's seconds columns) against the paper's.
  Writes benchmarks/results/reproduction_real.json and reproduction_fig6_real.png. Seconds.
* `table1` -- part 3: the best models found at T = 75 (soft and hard) and 23 ms beside MnasNet-A1, mnasnet-small and
  MobileNetV2 1.0 and 0.35, all trained by `launch.py train` with one recipe and budget, resumable (hours; see
  benchmarks/reproduction_table1.py, which holds it).
* `report` -- the Markdown sections of the saved JSONs (Table 1's too); --write puts them into
  REPRODUCTION.md between their markers (the prose around them is written by hand).

Fig. 6 statistics are `benchmarks/reward_shape.py`'s (`summarize`, `verdict`: quantiles, share at or below T,
share within T +- 10%, p90/p10 spread, histogram of LAT / T, and its two criteria fixed there in advance).

Architecture agreement (part 4): every decision of a found model (op, kernel, SE, skip, filters, layers of each
of the 7 blocks) is compared with the reference's choice in the same block. MnasNet-A1 is not a point of the
`mnasnet` space (its 112-filter block 5 is not 0.75/1.0/1.25 x 96; mnasnet-small's skeleton is smaller
throughout), so the reference's filters and layers are mapped to the nearest option of the block and the output
lists each such approximation. Uniform random sampling agrees with a choice with probability 1 / options; the
output gives that beside the observed share. Skip choices on a block whose layers cannot take a residual are
counted like any other decision (the space counts them too).

Cost (part 5): a child's CPU seconds are its `extra.cpu_seconds` (the worker's process CPU time) where the store
has them, else `train_seconds + eval_seconds` x the proxy's threads. Device-hours of a search of N children of
I images each at s seconds a training image: N x I x s / 3600 (wall: divide by the devices running in parallel).
The paper: 8,000 children x 5 epochs of its ImageNet proxy, 4.5 days on 64 TPUv2 = 6,912 TPUv2-hours, 0.86 a
child; the same proxy on this CPU takes BENCHMARKS.md's child-cost ms per image (`benchmarks/child_cost.py`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.child_cost import PAPER_IMAGES, PAPER_SAMPLES  # noqa: E402
from benchmarks import reproduction_table1 as table1  # noqa: E402
from benchmarks.common import BENCHMARKS_MD, jsonable, machine, shown, today, update_block  # noqa: E402
from benchmarks.controller_bench import CONTROLLERS  # noqa: E402
from benchmarks.reward_shape import RESOLUTION, SPACE, run, summarize, verdict  # noqa: E402
from mnas.search.fileio import write_json_atomic  # noqa: E402
from mnas.search.space import DECISIONS  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
REPRODUCTION_MD = os.path.join(ROOT, "REPRODUCTION.md")
DEFAULT_SURROGATE = os.path.join(RESULTS, "mnas_bench_surrogate.json")
SURROGATE_JSON = os.path.join(RESULTS, "reproduction_surrogate.json")
REAL_JSON = os.path.join(RESULTS, "reproduction_real.json")
FIG6_SURROGATE = os.path.join(RESULTS, "reproduction_fig6_surrogate.png")
FIG6_REAL = os.path.join(RESULTS, "reproduction_fig6_real.png")
PRESETS = ("soft", "hard")
REFERENCES = {75.0: ("mnasnet-a1",), 23.0: ("mnasnet-a1", "mnasnet-small")}   # what a target's finds are set beside
PAPER_TPU_HOURS = 4.5 * 24 * 64          # the paper: 4.5 days on 64 TPUv2
# (decision, option, blocks 1-based, label): the patterns the paper points out in MnasNet-A1 (Sec. 6, Fig. 7).
PATTERNS = (("kernel", 5, (4, 5, 6, 7), "5x5 kernels in blocks 4-7 (later stages)"),
            ("kernel", 5, (1, 2, 3), "5x5 kernels in blocks 1-3"),
            ("se", 0.25, (3, 4, 5, 6), "SE in blocks 3-6 (the middle)"),
            ("se", 0.25, (1, 2, 7), "SE in blocks 1, 2, 7"),
            ("op", "mbconv3", (1, 2, 3), "MBConv3 in blocks 1-3 (early)"),
            ("op", "mbconv3", (4, 5, 6, 7), "MBConv3 in blocks 4-7"))


def tail(items: list, share: float) -> list:
    """The last `share` of `items` (at least one)."""
    return items[-max(1, int(round(len(items) * share))):] if items else []


def fig6_summary(latencies, target: float, accuracies=None) -> dict:
    """`reward_shape.summarize` of latencies (ms) at `target`, plus the count; JSON-ready."""
    accuracies = accuracies if accuracies is not None else [0.0] * len(latencies)
    result = jsonable(summarize(list(zip(latencies, accuracies)), target))
    result["n"] = len(latencies)
    return result


def fig6_verdict(soft: dict, hard: dict) -> dict:
    pushes, spreads, why_push, why_spread = verdict(soft, hard)
    return {"pushes": bool(pushes), "spreads": bool(spreads), "why_push": why_push, "why_spread": why_spread}


def decision_values(space, genotype) -> dict[tuple[int, str], object]:
    """(block 0-based, decision name) -> the option chosen."""
    return {(d.block, d.name): d.options[i] for d, i in zip(space.decisions, genotype)}


def reference_genotype(space, arch) -> tuple[list[int], list[str]]:
    """The genotype of the space nearest to `arch`, block by block: op, kernel, SE and skip exactly (ValueError if
    the space lacks one), filters and layers the nearest option; and a note per approximated choice."""
    from mnas.search.arch import round_filters

    if len(arch.blocks) != len(space.blocks):
        raise ValueError(f"the reference has {len(arch.blocks)} blocks, the space {len(space.blocks)}")
    target = {}
    notes = []
    for number, (block, ref) in enumerate(zip(space.blocks, arch.blocks)):
        exact = {"op": ref.op, "kernel": ref.kernel, "se": ref.se_ratio, "skip": ref.skip}
        for name, value in exact.items():
            options = block.options(name)
            if value not in options:
                raise ValueError(f"block {number + 1}: {name} {value!r} is not among the options {list(options)}")
            target[number, name] = value
        built = {"filter_multiplier": {m: round_filters(block.filters, float(m))
                                       for m in block.options("filter_multiplier")},
                 "layer_offset": {d: max(1, block.layers + int(d)) for d in block.options("layer_offset")}}
        for name, value in (("filter_multiplier", ref.output_filters), ("layer_offset", ref.repeats)):
            sizes = built[name]
            best = min(sizes, key=lambda o: (abs(math.log(sizes[o] / value)), o))
            if sizes[best] != value:
                label = "filters" if name == "filter_multiplier" else "layers"
                notes.append(f"block {number + 1} {label} {value} -> {sizes[best]}")
            target[number, name] = best
    return [d.options.index(target[d.block, d.name]) for d in space.decisions], notes


def agreement(space, genotypes, reference) -> dict:
    """How often `genotypes` make the reference genotype's choice: per decision type (over models and blocks),
    per block and type, and overall; beside uniform random sampling's 1 / options."""
    decisions = space.decisions
    per_type = {name: [0, 0, 0.0] for name in DECISIONS}           # agree, total, chance sum
    per_block = {name: [[0, 0] for _ in space.blocks] for name in DECISIONS}
    for genotype in genotypes:
        for d, mine, ref in zip(decisions, genotype, reference):
            same = int(mine == ref)
            per_type[d.name][0] += same
            per_type[d.name][1] += 1
            per_type[d.name][2] += 1.0 / len(d.options)
            per_block[d.name][d.block][0] += same
            per_block[d.name][d.block][1] += 1
    types = {name: {"agree": a / n if n else None, "chance": c / n if n else None, "n": n}
             for name, (a, n, c) in per_type.items()}
    agree = sum(v[0] for v in per_type.values())
    total = sum(v[1] for v in per_type.values())
    return {"models": len(genotypes), "types": types,
            "blocks": {name: [a / n if n else None for a, n in cells] for name, cells in per_block.items()},
            "overall": {"agree": agree / total if total else None,
                        "chance": sum(1.0 / len(d.options) for d in decisions) / len(decisions)}}


def pattern_shares(space, genotypes) -> dict:
    """For each of PATTERNS: the share of (model, block in range) pairs with the option, and chance."""
    result = {}
    for name, option, blocks, label in PATTERNS:
        hits = total = 0
        for genotype in genotypes:
            values = decision_values(space, genotype)
            for block in blocks:
                hits += values[block - 1, name] == option
                total += 1
        chance = 1.0 / len(space.blocks[blocks[0] - 1].options(name))
        result[label] = {"share": hits / total if total else None, "chance": chance, "n": total}
    return result


def compare_architectures(space, found: dict[str, list], references) -> dict:
    """Part 4: {reference: {group: agreement}, notes, patterns} for groups of found genotypes."""
    from mnas.search.registry import load_architecture

    out = {"agreement": {}, "notes": {}, "patterns": {}, "reference_patterns": {}}
    for ref_name in references:
        genotype, notes = reference_genotype(space, load_architecture(ref_name))
        out["notes"][ref_name] = notes
        out["reference_patterns"][ref_name] = pattern_shares(space, [genotype])
        out["agreement"][ref_name] = {group: agreement(space, genotypes, genotype)
                                      for group, genotypes in found.items() if genotypes}
    out["patterns"] = {group: pattern_shares(space, genotypes) for group, genotypes in found.items() if genotypes}
    return out


# ---------------------------------------------------------------------------------------------- part 1, 2, 4
class SurrogateEvaluator:
    """Genotype -> (latency ms, accuracy, False) as `controller_bench.SurrogateObjective` scores a child (the
    surrogate's noisy accuracy, noise seeded by genotype and seed; Pixel 1 latency at 224), for `reward_shape.run`;
    it also keeps the genotypes in the order the children finished, and the noiseless accuracy of each."""

    def __init__(self, space, surrogate, latency_model, seed: int):
        self.space, self.surrogate, self.latency_model, self.seed = space, surrogate, latency_model, seed
        self.cache: dict[tuple, tuple[float, float, bool]] = {}
        self.clean: dict[tuple, float] = {}
        self.order: list[tuple] = []

    def __call__(self, indices):
        key = tuple(int(i) for i in indices)
        if key not in self.cache:
            arch = self.space.decode(list(key))
            self.clean[key] = float(self.surrogate.predict([arch])[0])
            accuracy = self.surrogate.evaluate(arch, list(key), seed=self.seed, noisy=True)
            self.cache[key] = (self.latency_model.latency_ms(arch, RESOLUTION), accuracy, False)
        self.order.append(key)
        return self.cache[key]


def fastest_child(space, latency_model, rounds: int = 3):
    """The space's fastest child by predicted latency, found by coordinate descent over the decisions from the
    first options (latency nearly adds up over blocks, so this finds the minimum or comes close)."""
    genotype = [0] * len(space.choice_counts)
    best = latency_model.latency_ms(space.decode(genotype), RESOLUTION)
    for _ in range(rounds):
        for position, options in enumerate(space.choice_counts):
            for option in range(options):
                trial = genotype[:position] + [option] + genotype[position + 1:]
                value = latency_model.latency_ms(space.decode(trial), RESOLUTION)
                if value < best:
                    best, genotype = value, trial
    return best, space.decode(genotype)


def top_children(genotypes, records, reward, k: int, clean: dict, space) -> list[dict]:
    """The k distinct children with the highest observed reward, best first."""
    scored = {}
    for genotype, (latency, accuracy, _) in zip(genotypes, records):
        value = reward(accuracy, {"pixel1": latency})
        if genotype not in scored or value > scored[genotype][0]:
            scored[genotype] = (value, accuracy, latency)
    ranked = sorted(scored.items(), key=lambda item: -item[1][0])[:k]
    return [{"reward": v, "accuracy": a, "accuracy_noiseless": clean.get(g), "latency_ms": lat,
             "clean_reward": reward(clean[g], {"pixel1": lat}) if g in clean else None,
             "indices": list(g), "arch": " ".join(space.decode(list(g)).block_strings)}
            for g, (v, a, lat) in ranked]


def cmd_surrogate(args) -> int:
    from mnas.measure import get_latency_model
    from mnas.search.registry import load_space
    from mnas.search.reward import PRESETS as REWARD_PRESETS, Reward
    from mnas.search.strategy import make_strategy
    from mnas.search.surrogate import Surrogate

    space = load_space(SPACE)
    surrogate = Surrogate.load(args.surrogate)
    surrogate.check_space(space)
    latency_model = get_latency_model("pixel1")
    settings = dict(CONTROLLERS["default"])
    targets = [float(t) for t in args.targets.split(",") if t.strip()]
    rng = np.random.default_rng(7)
    probe = [[int(rng.integers(n)) for n in space.choice_counts] for _ in range(args.random)]
    probe_archs = [space.decode(g) for g in probe]
    probe_ms = np.array(latency_model.predict(probe_archs, RESOLUTION))
    probe_acc = np.asarray(surrogate.predict(probe_archs), float)
    # The trade-off the soft reward assumes (the paper: about +5% accuracy per doubling of latency, which
    # w = -0.07 cancels), measured on the surrogate: least squares of ln accuracy on ln latency.
    per_doubling = 2 ** float(np.polyfit(np.log(probe_ms), np.log(probe_acc), 1)[0]) - 1
    # With alpha == beta the reward's T is a constant factor, and the shipped controller standardizes its
    # advantages: such a search is the same at every T (the same children), so it runs once and is re-read.
    invariant = {preset: REWARD_PRESETS[preset][0] == REWARD_PRESETS[preset][1]
                 and bool(settings.get("normalize_advantages")) for preset in PRESETS}
    started = time.perf_counter()
    searches, late_genotypes, raw = [], {}, {}
    for target in targets:
        for preset in PRESETS:
            reward = Reward.from_settings({"preset": preset, "target_ms": target}, ["pixel1"])
            for seed in range(args.seeds):
                reused = raw.get((preset, seed)) if invariant[preset] else None
                if reused is None:
                    evaluator = SurrogateEvaluator(space, surrogate, latency_model, seed)
                    strategy = make_strategy("mnas", space.choice_counts, seed=seed, settings=settings)
                    begun = time.perf_counter()
                    records = run(strategy, evaluator, reward, args.budget)
                    raw[preset, seed] = (target, evaluator, records, strategy.entropy(), time.perf_counter() - begun)
                first, evaluator, records, entropy, seconds = raw[preset, seed]
                late = tail(list(zip(evaluator.order, records)), args.last_share)
                late_ms = [r[0] for _, r in late]
                all_ms = [r[0] for r in records]
                late_genotypes.setdefault((target, preset), []).extend(g for g, _ in late)
                search = {"target": target, "preset": preset, "seed": seed, "seconds": seconds, "entropy": entropy,
                          "same_search_as_T": first if first != target else None,
                          "tail": fig6_summary(late_ms, target, [r[1] for _, r in late]),
                          "whole": fig6_summary(all_ms, target, [r[1] for r in records]),
                          "reached_target": float(np.mean(np.array(all_ms) <= target)),
                          "top": top_children(evaluator.order, records, reward, args.top, evaluator.clean, space),
                          "late_ms": [round(v, 2) for v in late_ms]}
                searches.append(search)
                how = f"the search at T={first:g}" if first != target else f"{seconds:.0f} s"
                print(f"T={target:g} {preset} seed {seed}: {how}, last {len(late_ms)}: median "
                      f"{search['tail']['p50']:.1f} ms, {search['tail']['below']:.0%} <= T; best "
                      f"{search['top'][0]['accuracy']:.3f} @ {search['top'][0]['latency_ms']:.1f} ms",
                      file=sys.stderr, flush=True)
    fastest_ms, fastest = fastest_child(space, latency_model)
    result = {"command": "python benchmarks/reproduction.py surrogate " + " ".join(args.argv), "date": today(),
              "machine": machine(), "minutes": (time.perf_counter() - started) / 60,
              "surrogate": shown(args.surrogate), "surrogate_noise": surrogate.noise,
              "surrogate_info": {k: v for k, v in surrogate.info.items() if not isinstance(v, (list, dict))},
              "settings": {"seeds": args.seeds, "budget": args.budget, "last_share": args.last_share,
                           "top": args.top, "controller": settings, "targets": targets},
              "fastest": {"latency_ms": fastest_ms, "arch": " ".join(fastest.block_strings)},
              "reward_invariant_to_T": [p for p in PRESETS if invariant[p]],
              "random": {"n": len(probe), "min_ms": float(probe_ms.min()), "per_doubling": per_doubling,
                         "mean_accuracy": float(probe_acc.mean()),
                         "by_target": {f"{t:g}": fig6_summary(list(probe_ms), t) for t in targets}},
              "searches": searches}
    result.update(analyse_surrogate(space, searches, targets, late_genotypes))
    write_json_atomic(args.json, jsonable(result), indent=1)
    if not args.no_plot:
        plot_fig6(surrogate_panels(result, probe_ms), args.plot)
        result["plot"] = shown(args.plot)
        write_json_atomic(args.json, jsonable(result), indent=1)
    print("\n".join(render_surrogate(result)))
    return 0


def analyse_surrogate(space, searches, targets, late_genotypes) -> dict:
    """Fig. 6 pooled over seeds and its verdict; the found models; the architecture comparison."""
    fig6, found, groups = {}, {}, {}
    for target in targets:
        key = f"{target:g}"
        pooled = {}
        for preset in PRESETS:
            runs = [s for s in searches if s["target"] == target and s["preset"] == preset]
            late = [v for s in runs for v in s["late_ms"]]
            pooled[preset] = fig6_summary(late, target)
            pooled[preset]["reached_target"] = statistics.mean(s["reached_target"] for s in runs)
            best = max((c for s in runs for c in s["top"][:1]), key=lambda c: c["clean_reward"])
            found.setdefault(key, {})[preset] = best
            groups[f"T={key} {preset}, top children"] = [tuple(c["indices"]) for s in runs for c in s["top"]]
            groups[f"T={key} {preset}, late children"] = late_genotypes[target, preset]
        per_seed = [fig6_verdict(s, h) for s, h in zip(
            [s["tail"] for s in searches if s["target"] == target and s["preset"] == "soft"],
            [s["tail"] for s in searches if s["target"] == target and s["preset"] == "hard"])]
        fig6[key] = {**pooled, "verdict": fig6_verdict(pooled["soft"], pooled["hard"]),
                     "seeds_push": sum(v["pushes"] for v in per_seed),
                     "seeds_spread": sum(v["spreads"] for v in per_seed), "seeds": len(per_seed)}
    references = sorted({r for t in targets for r in REFERENCES.get(t, ("mnasnet-a1",))})
    return {"fig6": fig6, "found": found, "architecture": compare_architectures(space, groups, references)}


# ---------------------------------------------------------------------------------------------- plots
def surrogate_panels(result, probe_ms) -> list[dict]:
    panels = []
    for key, data in result["fig6"].items():
        target = float(key)
        series = {preset: [v for s in result["searches"] if s["target"] == target and s["preset"] == preset
                           for v in s["late_ms"]] for preset in PRESETS}
        panels.append({"title": f"surrogate, T = {key} ms: last {result['settings']['last_share']:.0%} of each "
                                f"search, {plural(result['settings']['seeds'], 'seed')} pooled",
                       "target": target, "series": series, "reference": list(probe_ms)})
    return panels


def _hist(ax, series, bins, label: str, **style) -> None:
    """A histogram whose density is over the whole sample, so that a series reaching past the axis is not
    scaled up; the label says how much of it the axis shows."""
    series = np.asarray(series, float)
    shown = float(np.mean(series <= bins[-1]))
    ax.hist(series, bins=bins, weights=np.full(len(series), 1 / (len(series) * (bins[1] - bins[0]))),
            label=f"{label} ({len(series)}, {shown:.0%} within the axis)", **style)


def plot_fig6(panels: list[dict], path: str) -> None:
    """The paper's Fig. 6 analogue: latency histograms of late children, soft against hard, T marked."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("reproduction.py: the plot needs matplotlib: pip install -e '.[bench]' "
                         "(or pass --no-plot)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.4 * len(panels)), squeeze=False)
    colors = {"soft": "tab:blue", "hard": "tab:red"}
    for ax, panel in zip(axes[:, 0], panels):
        values = [v for s in panel["series"].values() for v in s]
        high = min(max(values + [2 * panel["target"]]), 3 * panel["target"]) * 1.05
        bins = np.linspace(0, high, 45)
        if panel.get("reference") is not None and len(panel["reference"]):
            _hist(ax, panel["reference"], bins, color="0.8", label="uniform random children")
        used, spare = set(), iter(["tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"])
        for label, series in panel["series"].items():
            if series:
                color = colors.get(label.split()[0])
                color = next(spare, None) if color in used or color is None else color   # one colour a run
                used.add(color)
                _hist(ax, series, bins, histtype="step", linewidth=1.8, color=color, label=label)
        ax.axvline(panel["target"], color="k", linestyle="--", linewidth=1, label=f"T = {panel['target']:g} ms")
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel("predicted Pixel 1 latency, ms (224x224)")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- part 2, 4, 5
def child_cpu_seconds(record: dict, threads: int) -> float:
    """A child's CPU seconds: the worker's measured process CPU time, else its train + eval seconds x threads."""
    extra = record.get("extra") or {}
    if extra.get("cpu_seconds") is not None:
        return float(extra["cpu_seconds"])
    return ((record.get("train_seconds") or 0.0) + (record.get("eval_seconds") or 0.0)) * threads


def device_hours(children: float, images_per_child: float, seconds_per_image: float, parallel: int = 1) -> dict:
    """The cost formula: device-hours = children x images a child x seconds an image / 3600; wall = / parallel."""
    hours = children * images_per_child * seconds_per_image / 3600.0
    return {"child_hours": images_per_child * seconds_per_image / 3600.0, "device_hours": hours,
            "wall_hours": hours / max(1, parallel)}


def paper_ms_per_image(path: str = BENCHMARKS_MD) -> float | None:
    """MnasNet-A1's ms per training image of configs/paper.yaml's proxy on this CPU, from BENCHMARKS.md's
    child-cost block (`benchmarks/child_cost.py`); None when the block is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    block = re.search(r"<!-- child-cost -->(.*?)<!-- /child-cost -->", text, re.S)
    match = re.search(r"\|\s*mnasnet-a1\s*\|\s*[\d.]+M\s*\|\s*([\d.]+)\s*\|", block.group(1)) if block else None
    return float(match.group(1)) if match else None


PAUSE_SECONDS = 600    # no child training for this long: the search was stopped (a session's end), not working


def busy_stretches(records: list[dict], pause: float = PAUSE_SECONDS) -> list[tuple[float, float]]:
    """The stretches of time in which the run was working, as (start, end) POSIX seconds: the children's
    start-to-end intervals merged, across gaps shorter than `pause` (the controller's and Ray's time between
    children); a longer gap is a stop and a resume, which a run's wall time should not count."""
    from datetime import datetime

    times = sorted((datetime.fromisoformat(r["started_at"]).timestamp(),
                    datetime.fromisoformat(r["finished_at"]).timestamp())
                   for r in records if r.get("started_at") and r.get("finished_at"))
    stretches: list[tuple[float, float]] = []
    for start, end in times:
        if stretches and start <= stretches[-1][1] + pause:
            stretches[-1] = (stretches[-1][0], max(stretches[-1][1], end))
        else:
            stretches.append((start, end))
    return stretches


def run_cost(records: list[dict], threads: int, workers: int, ms_per_image: float | None) -> dict:
    """Part 5 for one run: its children and CPU-hours, and the same figures scaled to the paper's search."""
    cpu = [child_cpu_seconds(r, threads) for r in records]
    train = [r.get("train_seconds") or 0.0 for r in records]
    stretches = busy_stretches(records)
    wall = sum(end - start for start, end in stretches) / 3600 if stretches else None
    per_child = sum(cpu) / len(cpu) / 3600 if cpu else 0.0
    out = {"children": len(records), "cpu_hours": sum(cpu) / 3600, "train_hours": sum(train) / 3600,
           "wall_hours": wall, "stretches": len(stretches), "cpu_hours_per_child": per_child, "workers": workers,
           "cpu_seconds_measured": sum(1 for r in records if (r.get("extra") or {}).get("cpu_seconds") is not None),
           "this_proxy_8000": {"cpu_hours": per_child * PAPER_SAMPLES,
                               "wall_hours": per_child * PAPER_SAMPLES / max(1, workers)},
           "paper": {"children": PAPER_SAMPLES, "tpu_hours": PAPER_TPU_HOURS,
                     "tpu_hours_per_child": PAPER_TPU_HOURS / PAPER_SAMPLES, "images_per_child": PAPER_IMAGES}}
    if ms_per_image:
        out["paper_proxy_here"] = {"ms_per_image": ms_per_image,
                                   **device_hours(PAPER_SAMPLES, PAPER_IMAGES, ms_per_image / 1000)}
    return out


def export_config_path(path: str) -> str:
    """Where the run config of a search's export lives: FILE.csv -> FILE.config.json (the run's config.json)."""
    return os.path.splitext(path)[0] + ".config.json"


def run_name(path: str) -> str:
    """A run's short name for a plot: its folder's or its export's name, without the extension."""
    name = os.path.basename(os.path.normpath(path))
    return os.path.splitext(name)[0] if os.path.isfile(path) else name


def read_run(path: str) -> tuple[dict, list[dict]]:
    """A real search's config and children, from its run folder (read-only) or from its export.

    An export (`mnas results RUN --status all --top 100000 --export FILE.csv`, or .parquet) carries the children
    but not the run's settings: the run's config.json must sit beside it as FILE.config.json. Exports are what
    survive a machine: a run folder lives on one machine's disk, the export and its config are committed."""
    if os.path.isdir(path):
        from mnas.results.store import ResultStore

        store = ResultStore(path, readonly=True)
        try:
            config, records = store.get_meta("config") or {}, store.records()
        finally:
            store.close()
        return (json.loads(config) if isinstance(config, str) else config), records
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such run folder or export")
    config_path = export_config_path(path)
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: an export needs its run's config beside it as {config_path} (copy the run "
                         "folder's config.json there)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: not JSON ({err})") from None
    from mnas.results.export import read_export

    frame = read_export(path)
    frame = frame.astype(object).where(frame.notna(), None)
    return config, frame.to_dict("records")


def cmd_real(args) -> int:
    from mnas.search.registry import load_space

    ms_per_image = args.ms_per_image or paper_ms_per_image()
    runs = []
    for path in args.runs:
        config, records = read_run(path)
        reward = config.get("reward") or {}
        preset, target = reward.get("preset", "custom"), float(reward.get("target_ms", 75))
        ok = sorted((r for r in records if r["status"] == "ok"), key=lambda r: (r.get("sample") is None,
                                                                                r.get("sample") or 0))
        late = tail(ok, args.last_share)
        entry = {"run": path, "preset": preset, "target": target, "space": config.get("space"),
                 "strategy": config.get("strategy"), "samples_planned": config.get("samples"),
                 "statuses": {s: sum(r["status"] == s for r in records) for s in ("ok", "failed", "pruned")},
                 "late_ms": [r["latency_ms"] for r in late],
                 "tail": fig6_summary([r["latency_ms"] for r in late], target, [r["accuracy"] for r in late])
                 if late else None,
                 "whole": fig6_summary([r["latency_ms"] for r in ok], target, [r["accuracy"] for r in ok])
                 if ok else None,
                 "top": [{k: r[k] for k in ("reward", "accuracy", "latency_ms", "params", "madds", "arch",
                                            "indices")}
                         for r in sorted(ok, key=lambda r: -r["reward"])[:args.top]],
                 "cost": run_cost(records, int((config.get("proxy") or {}).get("threads", 1)),
                                  int(config.get("workers", 1)), ms_per_image)}
        if entry["space"] == SPACE and entry["top"]:
            space = load_space(SPACE)
            entry["architecture"] = compare_architectures(
                space, {"top children": [tuple(c["indices"]) for c in entry["top"]],
                        "late children": [tuple(r["indices"]) for r in late]},
                REFERENCES.get(target, ("mnasnet-a1",)))
        runs.append(entry)
        print(f"{path}: {preset} at T={target:g}, {len(records)} children ({len(ok)} ok)", file=sys.stderr)
    result = {"command": "python benchmarks/reproduction.py real " + " ".join(args.argv), "date": today(),
              "machine": machine(), "last_share": args.last_share, "runs": runs}
    pairs, targets = {}, sorted({e["target"] for e in runs})
    for entry in runs:                    # Fig. 6's verdict compares the controller's soft and hard runs
        if entry["strategy"] == "mnas":
            pairs.setdefault(entry["target"], {})[entry["preset"]] = entry
    result["fig6"] = {f"{t:g}": fig6_verdict(p["soft"]["tail"], p["hard"]["tail"])
                      for t, p in pairs.items() if "soft" in p and "hard" in p and p["soft"]["tail"]
                      and p["hard"]["tail"]}
    if not args.no_plot:
        panels = [{"title": f"real runs, T = {t:g} ms: last {args.last_share:.0%} of each run's children",
                   "target": t, "reference": None,
                   "series": {f"{e['preset']} {run_name(e['run'])}"
                              + ("" if e["strategy"] == "mnas" else f" (strategy {e['strategy']})"): e["late_ms"]
                              for e in runs if e["target"] == t}} for t in targets]
        plot_fig6(panels, args.plot)
        result["plot"] = shown(args.plot)
    write_json_atomic(args.json, jsonable(result), indent=1)
    print("\n".join(render_real(result)))
    return 0


# ---------------------------------------------------------------------------------------------- Markdown
def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def fig6_rows(summaries: dict[str, dict], target: float) -> list[str]:
    lines = ["| children | n | p10 ms | p50 ms | p90 ms | p90/p10 | <= T | within T +- 10% |",
             "|---|---|---|---|---|---|---|---|"]
    for label, s in summaries.items():
        lines.append(f"| {label} | {s['n']} | {s['p10']:.1f} | {s['p50']:.1f} | {s['p90']:.1f} | "
                     f"{s['spread']:.2f} | {pct(s['below'])} | {pct(s['near'])} |")
    return lines


def architecture_rows(arch: dict) -> list[str]:
    lines = []
    for ref, groups in arch["agreement"].items():
        notes = arch["notes"].get(ref)
        lines += ["", f"Agreement with {ref}'s choice, per decision (share of the found models' blocks making "
                      f"{ref}'s choice; uniform random sampling: 1 / options)"
                  + (f"; {ref} mapped to the nearest option: {', '.join(notes)}" if notes else "") + ":", "",
                  "| found models | models | " + " | ".join(DECISIONS) + " | all |",
                  "|---|---|" + "---|" * (len(DECISIONS) + 1)]
        chance = None
        for group, a in groups.items():
            cells = [f"{a['types'][d]['agree']:.2f}" for d in DECISIONS]
            lines.append(f"| {group} | {a['models']} | " + " | ".join(cells) + f" | {a['overall']['agree']:.2f} |")
            chance = a
        if chance:
            lines.append("| uniform random | - | " + " | ".join(f"{chance['types'][d]['chance']:.2f}"
                                                            for d in DECISIONS)
                         + f" | {chance['overall']['chance']:.2f} |")
    labels = [label for _, _, _, label in PATTERNS]
    refs = arch.get("reference_patterns", {})
    lines += ["", "The patterns the paper points out (share of the blocks in range with the option):", "",
              "| models | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for ref, shares in refs.items():
        lines.append(f"| {ref} (reference) | " + " | ".join(f"{shares[l]['share']:.2f}" for l in labels) + " |")
    for group, shares in arch["patterns"].items():
        lines.append(f"| {group} | " + " | ".join(f"{shares[l]['share']:.2f}" for l in labels) + " |")
    any_group = next(iter(arch["patterns"].values()), None)
    if any_group:
        lines.append("| uniform random | " + " | ".join(f"{any_group[l]['chance']:.2f}" for l in labels) + " |")
    return lines


def render_surrogate(result: dict) -> list[str]:
    s = result["settings"]
    lines = ["## The search on the surrogate (parts 1, 2, 4)", "",
             f"`{result['command']}` -- {result['machine']}; {result['date']}; {result['minutes']:.1f} minutes.",
             "", f"Surrogate `{result['surrogate']}` (proxy noise sigma {result['surrogate_noise']:g}), `mnasnet` "
                 f"space, Pixel 1 predicted latency at 224x224, controller `configs/default.yaml` ("
             + ", ".join(f"{k} {v}" for k, v in s["controller"].items()) + f"); {plural(s['seeds'], 'seed')} x "
             f"{s['budget']} children a search, two in flight. Uniform random children ({result['random']['n']:,}):"
             f" fastest {result['random']['min_ms']:.1f} ms; "
             + "; ".join(f"{v['below']:.1%} at or below {k} ms" for k, v in result["random"]["by_target"].items())
             + (f". Over these children the surrogate's accuracy changes by {result['random']['per_doubling']:+.1%} "
                "(relative) per doubling of latency (least squares of ln accuracy on ln latency; the paper's rule "
                "of thumb, which w = -0.07 cancels, is +5%)" if "per_doubling" in result["random"] else "")
             + f". The space's fastest child (coordinate descent on the predictor): "
             f"{result['fastest']['latency_ms']:.1f} ms, `{result['fastest']['arch']}`."]
    if result.get("reward_invariant_to_T"):
        lines += ["", "With alpha = beta (" + ", ".join(result["reward_invariant_to_T"]) + ") T only scales the "
                  "reward, and the controller standardizes its advantages: the search is the same at every T (the "
                  "same children), so it ran once per seed and is summarized at each T."]
    for key, data in result["fig6"].items():
        target = float(key)
        last = f"last {s['last_share']:.0%} of each search ({plural(s['seeds'], 'seed')} pooled)"
        summaries = {f"soft, {last}": data["soft"], f"hard, {last}": data["hard"],
                     "uniform random": result["random"]["by_target"][key]}
        v = data["verdict"]
        lines += ["", f"### T = {key} ms: Fig. 6 analogue", ""] + fig6_rows(summaries, target) + [
            "", f"Share of all children of a search at or below T (mean over seeds): soft "
                f"{pct(data['soft']['reached_target'])}, hard {pct(data['hard']['reached_target'])}.",
            f"* hard pushes below T: {'yes' if v['pushes'] else 'NO'} -- {v['why_push']}; holds in "
            f"{data['seeds_push']} of {data['seeds']} seeds alone.",
            f"* soft spreads around T: {'yes' if v['spreads'] else 'NO'} -- {v['why_spread']}; holds in "
            f"{data['seeds_spread']} of {data['seeds']} seeds alone."]
        for preset, best in result["found"].get(key, {}).items():
            lines.append(f"* best {preset} child (by the noiseless surrogate's reward among the seeds' bests): "
                         f"accuracy {best['accuracy_noiseless']:.3f} (noiseless; {best['accuracy']:.3f} as "
                         f"observed) @ {best['latency_ms']:.1f} ms: `{best['arch']}`")
    lines += ["", "### Found architectures against the references (part 4)"]
    lines += architecture_rows(result["architecture"])
    if result.get("plot"):
        lines += ["", f"Plot: `{result['plot']}`."]
    return lines


def render_real(result: dict) -> list[str]:
    lines = ["## Real searches on the proxy (parts 2, 4, 5)", "",
             f"`{result['command']}` -- {result['machine']}; {result['date']}.", ""]
    for e in result["runs"]:
        st = e["statuses"]
        lines += [f"### `{e['run']}`: {e['preset']} reward at T = {e['target']:g} ms", "",
                  f"{st['ok'] + st['failed'] + st['pruned']} children of {e['samples_planned']} planned "
                  f"({st['ok']} ok, {st['failed']} failed, {st['pruned']} stopped early); strategy "
                  f"{e['strategy']}, space {e['space']}.", ""]
        if e["tail"]:
            lines += fig6_rows({f"last {result['last_share']:.0%}": e["tail"], "whole run": e["whole"]},
                               e["target"])
            lines += ["", "Top children: " + "; ".join(f"{c['reward']:.4f} ({c['accuracy']:.3f} @ "
                                                       f"{c['latency_ms']:.1f} ms)" for c in e["top"]) + "."]
        if e.get("architecture"):
            lines += architecture_rows(e["architecture"])
        lines += [""] + cost_lines(e["cost"]) + [""]
    for key, v in result.get("fig6", {}).items():
        lines += [f"Fig. 6 at T = {key} ms, real soft against real hard: hard pushes below T: "
                  f"{'yes' if v['pushes'] else 'NO'} ({v['why_push']}); soft spreads around T: "
                  f"{'yes' if v['spreads'] else 'NO'} ({v['why_spread']}).", ""]
    if result.get("plot"):
        lines.append(f"Plot: `{result['plot']}`.")
    return lines


def cost_lines(c: dict) -> list[str]:
    if c["wall_hours"] is None:
        wall = "wall time unknown"
    else:
        stretches = c.get("stretches", 1)
        wall = (f"{c['wall_hours']:.1f} h wall from the first child's start to the last one's end"
                + (f", less {stretches - 1} stop(s) of over {PAUSE_SECONDS // 60} minutes with no child training "
                   "(stopped and resumed)" if stretches > 1 else ""))
    p = c["paper"]
    measured = ("measured process CPU time" if c["cpu_seconds_measured"] == c["children"] else
                f"measured process CPU time for {c['cpu_seconds_measured']} of them, train + eval seconds x "
                "threads for the rest")
    lines = [f"Cost: {c['children']} children, {c['cpu_hours']:.1f} CPU-hours ({c['cpu_hours_per_child'] * 60:.1f} "
             f"CPU-minutes a child, {measured}); {c['train_hours']:.1f} h of proxy training (wall, summed over "
             f"children); {wall}, {c['workers']} workers.",
             f"* The same search at the paper's size ({p['children']:,} children) on this proxy: "
             f"{c['this_proxy_8000']['cpu_hours']:,.0f} CPU-hours, {c['this_proxy_8000']['wall_hours']:,.0f} h "
             f"with {c['workers']} workers on an otherwise idle machine (CPU time; a busy one takes longer).",
             f"* The paper: {p['children']:,} children x 5 epochs of its ImageNet proxy ({p['images_per_child']:,} "
             f"images a child), 4.5 days on 64 TPUv2 = {p['tpu_hours']:,.0f} TPUv2-hours, "
             f"{p['tpu_hours_per_child']:.2f} a child."]
    if c.get("paper_proxy_here"):
        h = c["paper_proxy_here"]
        lines.append(f"* The paper's proxy on this CPU (MnasNet-A1 at {h['ms_per_image']:g} ms a training image, "
                     f"BENCHMARKS.md's child cost): {h['child_hours']:,.0f} CPU-hours a child, "
                     f"{h['device_hours'] / 1e6:,.1f} million CPU-hours for {p['children']:,}.")
    lines.append("* On your device: device-hours = children x images a child x seconds a training image / 3600 "
                 "(seconds a training image: `python benchmarks/child_cost.py` there); wall = that / devices "
                 "in parallel.")
    return lines


def cmd_report(args) -> int:
    """Prints the Markdown of every saved result; with --write, also puts each into REPRODUCTION.md between its
    markers (`<!-- reproduction-real -->` ... `<!-- /reproduction-real -->`): the prose around them is written by
    hand, the figures only by this script. A result not saved yet leaves its block as it is."""
    sections = (("reproduction-surrogate", args.surrogate_json, render_surrogate),
                ("reproduction-real", args.real_json, render_real),
                ("reproduction-table1", os.path.join(args.table1, "table1.json") if args.table1 else args.table1_json,
                 table1.render_table1))
    lines = []
    for tag, path, render in sections:
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                text = render(json.load(f))
            lines += text + [""]
            if args.write:     # a section of its own there: its headings one level down
                update_block(tag, "\n".join("#" + line if line.startswith("#") else line for line in text),
                             args.markdown)
        elif path:
            lines += [f"({path}: not written yet)", ""]
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------------------------------- CLI
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("surrogate", help="parts 1, 2, 4 on the surrogate: soft and hard at each target, many "
                                         "seeds (defaults: ~20 min on a busy 2-core machine; --seeds 2 "
                                         "--budget 300: ~1 min)")
    s.add_argument("--surrogate", default=DEFAULT_SURROGATE, help="the surrogate file (default: %(default)s)")
    s.add_argument("--seeds", type=int, default=10, help="seeds of each search (default %(default)s)")
    s.add_argument("--budget", type=int, default=2000, help="children a search (default %(default)s)")
    s.add_argument("--targets", default="75,23", help="comma-separated T in ms (default %(default)s)")
    s.add_argument("--last-share", type=float, default=0.25, help="late children: the last this share of each "
                                                                  "search (default %(default)s)")
    s.add_argument("--top", type=int, default=5, help="found models: the top K distinct children of each search")
    s.add_argument("--random", type=int, default=2000, help="uniform random children for the reference")
    s.add_argument("--json", default=SURROGATE_JSON, help="default: %(default)s")
    s.add_argument("--plot", default=FIG6_SURROGATE, help="default: %(default)s")
    s.add_argument("--no-plot", action="store_true", help="skip the PNG (matplotlib is then not needed)")
    r = sub.add_parser("real", help="parts 2, 4, 5 on real search folders or their exports (read-only; "
                                    "seconds)")
    r.add_argument("runs", nargs="+", metavar="RUN", help="a run folder, or its export FILE.csv with the run's "
                                                          "config.json beside it as FILE.config.json")
    r.add_argument("--last-share", type=float, default=0.25, help="late children: the last this share of each "
                                                                  "run (default %(default)s)")
    r.add_argument("--top", type=int, default=5, help="found models: the K children of highest reward of each run "
                                                      "(default %(default)s)")
    r.add_argument("--ms-per-image", type=float, help="MnasNet-A1's ms per training image of the paper's proxy "
                                                      "here (default: BENCHMARKS.md's child-cost block)")
    r.add_argument("--json", default=REAL_JSON, help="default: %(default)s")
    r.add_argument("--plot", default=FIG6_REAL, help="default: %(default)s")
    r.add_argument("--no-plot", action="store_true", help="skip the PNG (matplotlib is then not needed)")
    table1.add_parser(sub, SURROGATE_JSON)
    o = sub.add_parser("report", help="print the Markdown sections of the saved JSONs, --write: into "
                                      "REPRODUCTION.md (instant)")
    o.add_argument("--surrogate-json", default=SURROGATE_JSON, help="default: %(default)s")
    o.add_argument("--real-json", default=REAL_JSON, help="default: %(default)s")
    o.add_argument("--table1-json", default=table1.TABLE1_JSON, help="default: %(default)s")
    o.add_argument("--table1", metavar="DIR", help="a table1 --out folder's table instead of --table1-json")
    o.add_argument("--write", action="store_true", help="also put each section into --markdown between its markers")
    o.add_argument("--markdown", default=REPRODUCTION_MD, help="default: %(default)s")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv[1:]
    for name in ("seeds", "budget", "top", "epochs"):
        if getattr(args, name, 1) is not None and getattr(args, name, 1) < 1:
            parser().error(f"--{name} must be at least 1")
    if not 0 < getattr(args, "last_share", 0.5) <= 1:
        parser().error("--last-share must be in (0, 1]")
    try:
        return {"surrogate": cmd_surrogate, "real": cmd_real, "table1": table1.cmd_table1,
                "report": cmd_report}[args.command](args)
    except ValueError as err:
        print(f"reproduction.py {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
