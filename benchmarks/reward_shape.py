#!/usr/bin/env python
"""Soft and hard rewards at the same target: where the controller's samples land around T (the paper's Fig. 6).

    python benchmarks/reward_shape.py [--samples 1000] [--last 300] [--seeds 3] [--target 75]
                                      [--controllers default,nasnet] [--clip-high 0.80] [--quick] [--write]

The MnasNet paper (Sec. 3.1, Fig. 6) contrasts two settings of ACC * (LAT / T) ** w at T = 75 ms: the hard
constraint (alpha = 0, beta = -1) pushes the controller's samples below T; the soft one (alpha = beta = -0.07)
lets them spread across latencies around T. This script runs the MNAS controller (LSTM + PPO) once per preset
and seed on the real `mnasnet` space with the real `pixel1` latency predictor (224x224), children finishing two
at a time, beside uniform random search (the distribution the space itself gives). Two controller settings:
`default` is what `configs/default.yaml` uses (read from the file: Adam 3e-3 on batches of 5, standardized
advantages, per-decision ratios, a KL stop and an entropy floor), `nasnet` the PPOConfig defaults (NASNet's 3.5e-4,
batches of 10), which move the policy about 4x more slowly. For the last
K children of each run it reports latency quantiles, the share at or below T and within T +- 10%, mean accuracy
and a histogram of LAT / T; the same figures over whole runs; and per run the best children found.

No child is trained: accuracy is synthetic, seeded per seed (seed s uses table seed 1000 + s), and shaped like
ImageNet top-1 (fractions):

    acc(g) = clip(0.752 + b * ln(madds(g) / madds(MnasNet-A1)) + sum_d t[d][g_d], 0.60, clip_high = 0.80)

* capacity term: b is the least-squares slope of top-1 on ln(multiply-adds) over the published MobileNetV2 width
  ladder at 224 px (widths 0.5, 0.75, 1.0, 1.3, 1.4: 97M 65.4%, 209M 69.8%, 300M 71.8%, 509M 74.4%, 582M 75.0%;
  TF-slim's checkpoint table), about 0.054 per e-fold, anchored so that MnasNet-A1 (312M multiply-adds, not in
  this space) gets its published 75.2%. Multiply-adds are `search.counts.count(arch, resolution=224).madds`.
* architecture terms t[d][o]: one per option of each of the 42 decisions, drawn U(0, 1), centred per decision
  (mean 0 over its options) and scaled so that the best choice everywhere adds +0.03 -- about what MnasNet-A1
  gains over MobileNetV2 at the same multiply-adds (75.2% against 72.0% at ~300M).
* the clip keeps the largest children in a realistic range; the output says how many samples it touched.

Verdict (criteria fixed before the first run, on the pooled last K children of all seeds, per controller setting):
* "hard pushes below T": the hard runs have >= 75% of samples at or below T, and at least 15 points more than soft.
* "soft spreads around T": the soft runs' p90/p10 latency ratio is >= 1.2x the hard runs', and soft has >= 20% of
  samples on each side of T.
Fig. 6 counts as reproduced when both hold; the output says which failed otherwise, and in how many seeds alone.

About 10 minutes for the defaults on one busy core (the controller costs 5-15 ms a sample and 50-300 ms a PPO
update, depending on load); `--quick` (1 seed, 400 samples, last 150, default controller only) about a minute.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import random
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine, report  # noqa: E402
from mnas.search.config import SearchConfig  # noqa: E402
from mnas.search.counts import count  # noqa: E402
from mnas.measure import get_latency_model  # noqa: E402
from mnas.search.registry import load_architecture, load_space  # noqa: E402
from mnas.search.reward import Reward  # noqa: E402
from mnas.search.strategy import make_strategy  # noqa: E402

# MobileNetV2 at 224 px, width 0.5 ... 1.4: (multiply-adds, ImageNet top-1), TF-slim's published checkpoints.
MOBILENETV2_LADDER = ((97e6, 0.654), (209e6, 0.698), (300e6, 0.718), (509e6, 0.744), (582e6, 0.750))
ANCHOR = ("mnasnet-a1", 0.752)          # MnasNet-A1: 75.2% top-1 (paper Table 1)
ARCH_GAIN = 0.03                        # the best architecture term of every decision, summed: +3 points
CLIP = (0.60, 0.80)
RESOLUTION = 224
SPACE = "mnasnet"
BIN_EDGES = (0.6, 0.8, 0.9, 1.0, 1.1, 1.25)     # LAT / T; a bin holds (lower, upper]
CONTROLLERS = {
    "default": SearchConfig.load(os.path.join(ROOT, "configs", "default.yaml")).strategy_settings(),
    "nasnet": {},                               # PPOConfig's defaults: NASNet's lr 3.5e-4, batches of 10
}


def capacity_slope() -> float:
    """Least-squares slope of top-1 on ln(multiply-adds) over the MobileNetV2 ladder."""
    x = np.log([m for m, _ in MOBILENETV2_LADDER])
    y = np.array([a for _, a in MOBILENETV2_LADDER])
    return float(np.polyfit(x, y, 1)[0])


class SyntheticAccuracy:
    """acc(g) = clip(anchor + b * ln(madds / anchor_madds) + sum_d t[d][g_d]); see the module docstring."""

    def __init__(self, space, seed: int, arch_gain: float = ARCH_GAIN, clip: tuple[float, float] = CLIP):
        self.slope = capacity_slope()
        name, self.anchor_acc = ANCHOR
        self.anchor_madds = count(load_architecture(name), resolution=RESOLUTION).madds
        self.clip = clip
        rng = random.Random(seed)
        table = []
        for n in space.choice_counts:
            raw = [rng.random() for _ in range(n)]
            mean = sum(raw) / n
            table.append([r - mean for r in raw])
        scale = arch_gain / sum(max(t) for t in table)
        self.table = [[scale * v for v in t] for t in table]

    def capacity(self, madds: float) -> float:
        """The capacity term alone (no architecture terms, no clip)."""
        return self.anchor_acc + self.slope * math.log(madds / self.anchor_madds)

    def architecture_term(self, indices) -> float:
        return sum(t[i] for t, i in zip(self.table, indices))

    def __call__(self, indices, madds: float) -> tuple[float, bool]:
        """(accuracy, whether the clip changed it) of genotype `indices` with `madds` multiply-adds."""
        raw = self.capacity(madds) + self.architecture_term(indices)
        value = min(max(raw, self.clip[0]), self.clip[1])
        return value, value != raw


class Evaluator:
    """Genotype -> (latency ms, accuracy, clipped), cached: a converging controller repeats itself."""

    def __init__(self, space, accuracy: SyntheticAccuracy, latency_model):
        self.space, self.accuracy, self.latency_model = space, accuracy, latency_model
        self.cache: dict[tuple[int, ...], tuple[float, float, bool]] = {}

    def __call__(self, indices) -> tuple[float, float, bool]:
        key = tuple(indices)
        if key not in self.cache:
            arch = self.space.decode(key)
            acc, clipped = self.accuracy(key, count(arch, resolution=RESOLUTION).madds)
            self.cache[key] = (self.latency_model.latency_ms(arch, RESOLUTION), acc, clipped)
        return self.cache[key]


def run(strategy, evaluate: Evaluator, reward: Reward | None, samples: int, in_flight: int = 2):
    """`samples` children with `in_flight` outstanding at a time; their (latency, accuracy, clipped) in the order
    they finished. With `reward` None nothing is observed (random search)."""
    records, pending = [], []
    while len(records) < samples:
        if len(pending) < in_flight and len(records) + len(pending) < samples:
            pending.append(strategy.propose())
            continue
        done = pending.pop(0)
        latency, acc, clipped = evaluate(done.indices)
        if reward is not None:
            strategy.observe(done, reward(acc, {"pixel1": latency}))
        records.append((latency, acc, clipped))
    return records


def summarize(records, target: float) -> dict:
    lat = np.array([r[0] for r in records])
    acc = np.array([r[1] for r in records])
    p10, p50, p90 = np.percentile(lat, [10, 50, 90])
    ratio = lat / target
    hist = np.bincount(np.digitize(ratio, BIN_EDGES, right=True), minlength=len(BIN_EDGES) + 1) / len(lat)
    return {"p10": p10, "p50": p50, "p90": p90, "spread": p90 / p10, "below": float(np.mean(lat <= target)),
            "near": float(np.mean(np.abs(ratio - 1) <= 0.1)), "acc": float(acc.mean()), "hist": hist}


def best(records, reward: Reward) -> tuple[float, float]:
    """(accuracy, latency) of the record with the highest `reward`."""
    latency, acc, _ = max(records, key=lambda r: reward(r[1], {"pixel1": r[0]}))
    return acc, latency


def verdict(soft: dict, hard: dict) -> tuple[bool, bool, str, str]:
    """The two Fig. 6 criteria of the module docstring on summaries of the soft and hard runs, with the numbers."""
    pushes = hard["below"] >= 0.75 and hard["below"] - soft["below"] >= 0.15
    spreads = soft["spread"] >= 1.2 * hard["spread"] and soft["below"] >= 0.2 and 1 - soft["below"] >= 0.2
    why_push = (f"hard {hard['below']:.0%} at or below T (needs >= 75%), soft {soft['below']:.0%} "
                "(needs hard - soft >= 15 points)")
    why_spread = (f"p90/p10 soft {soft['spread']:.2f} vs hard {hard['spread']:.2f} (needs >= 1.2x); soft "
                  f"{soft['below']:.0%} at or below T, {1 - soft['below']:.0%} above (needs >= 20% each)")
    return pushes, spreads, why_push, why_spread


def bar(share: float, width: int = 20) -> str:
    return "#" * int(round(share * width))


def describe_world(worlds, space, latency_model, clip_high: float) -> tuple[str, float]:
    """The synthetic accuracy's formula and calibration points, and its accuracy gain per doubling of latency."""
    world = worlds[0]
    named = {}
    for name in ("mnasnet-a1", "mobilenetv2", "mnasnet-small"):
        arch = load_architecture(name)
        named[name] = (count(arch, resolution=RESOLUTION).madds, latency_model.latency_ms(arch, RESOLUTION))
    mbv2_genotype = space.encode(load_architecture("mobilenetv2"))
    mbv2 = ", ".join(f"{w(mbv2_genotype, named['mobilenetv2'][0])[0]:.3f}" for w in worlds)
    mbv2_capacity = world.capacity(named["mobilenetv2"][0])
    rng = random.Random(7)
    probe = [space.sample_indices(rng) for _ in range(2000)]
    archs = [space.decode(g) for g in probe]
    probe_ms = np.array(latency_model.predict(archs, RESOLUTION))
    probe_acc = np.array([world(g, count(a, resolution=RESOLUTION).madds)[0] for g, a in zip(probe, archs)])
    per_doubling = 2 ** float(np.polyfit(np.log(probe_ms), np.log(probe_acc), 1)[0]) - 1
    text = (
        f"Accuracy is synthetic (no child is trained): acc = clip(0.752 + {world.slope:.4f} * ln(madds / "
        f"{world.anchor_madds / 1e6:.0f}M) + sum_d t[d][g_d], {CLIP[0]:.2f}, {clip_high:.2f}), the slope fitted "
        "on the MobileNetV2 width ladder at 224 px, the intercept putting MnasNet-A1 at 75.2%, t a seeded table of "
        f"zero-mean per-decision terms whose best choices add +{ARCH_GAIN:.2f}. MnasNet-A1 (not in the space: "
        f"capacity term only): {world.capacity(named['mnasnet-a1'][0]):.3f} at {named['mnasnet-a1'][1]:.1f} ms; "
        f"MobileNetV2 1.0 (in the space): capacity term {mbv2_capacity:.3f}, with each seed's table {mbv2} "
        f"(published 0.720) at {named['mobilenetv2'][1]:.1f} ms; mnasnet-small "
        f"(capacity term only): {world.capacity(named['mnasnet-small'][0]):.3f} (published 0.660) at "
        f"{named['mnasnet-small'][1]:.1f} ms. Over 2,000 random children a doubling of latency goes with "
        f"{per_doubling:+.1%} accuracy (relative; least squares of ln acc on ln latency), where the paper's rule "
        "of thumb, which w = -0.07 cancels, is +5%: along capacity alone the soft reward is nearly flat here.")
    return text, per_doubling


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000, help="children per run")
    parser.add_argument("--last", type=int, default=300, help="summarize the last K children of each run")
    parser.add_argument("--seeds", type=int, default=3, help="runs of each controller setting (default %(default)s)")
    parser.add_argument("--target", type=float, default=75.0, help="T in ms (the paper: 75)")
    parser.add_argument("--controllers", default="default,nasnet",
                        help=f"comma-separated controller settings among {', '.join(CONTROLLERS)}")
    parser.add_argument("--clip-high", type=float, default=CLIP[1], help="upper clip of the synthetic accuracy")
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 400 samples, last 150, default controller only: about a minute")
    parser.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.samples, args.last, args.controllers = 1, 400, 150, "default"
    controllers = [c.strip() for c in args.controllers.split(",") if c.strip()]
    unknown = [c for c in controllers if c not in CONTROLLERS]
    if unknown or not controllers:
        parser.error(f"--controllers: unknown {', '.join(unknown) or 'empty list'} (known: {', '.join(CONTROLLERS)})")
    if not 0 < args.last <= args.samples or args.seeds < 1 or args.target <= 0:
        parser.error("need 0 < --last <= --samples, --seeds >= 1 and --target > 0")
    if not CLIP[0] < args.clip_high <= 1:
        parser.error(f"--clip-high must be in ({CLIP[0]}, 1]")
    target = args.target
    space = load_space(SPACE)
    latency_model = get_latency_model("pixel1")
    rewards = {name: Reward.from_settings({"preset": name, "target_ms": target}, ["pixel1"])
               for name in ("soft", "hard")}

    # run key -> (strategy, reward preset or None, controller setting or None)
    runs = {"random": ("random", None, None)}
    for controller in controllers:
        for preset in ("soft", "hard"):
            runs[f"{preset}/{controller}"] = ("mnas", preset, controller)
    labels = {key: "random search" if kind == "random" else f"controller ({controller}), {preset}"
              for key, (kind, preset, controller) in runs.items()}

    started = time.perf_counter()
    tails = {key: [] for key in runs}     # the last K records of every seed
    wholes = {key: [] for key in runs}    # all records of every seed
    per_seed, worlds, clipped = [], [], 0
    for seed in range(args.seeds):
        accuracy = SyntheticAccuracy(space, seed=1000 + seed, clip=(CLIP[0], args.clip_high))
        worlds.append(accuracy)
        evaluate = Evaluator(space, accuracy, latency_model)
        for key, (kind, preset, controller) in runs.items():
            settings = dict(CONTROLLERS[controller]) if controller else None
            strategy = make_strategy(kind, space.choice_counts, seed=seed, settings=settings)
            start = time.perf_counter()
            records = run(strategy, evaluate, rewards.get(preset), args.samples)
            tails[key] += records[-args.last:]
            wholes[key] += records
            clipped += sum(r[2] for r in records)
            tail = summarize(records[-args.last:], target)
            per_seed.append((key, seed, tail, best(records, rewards["soft"]), best(records, rewards["hard"]),
                             strategy.entropy()))
            print(f"seed {seed} {labels[key]}: {time.perf_counter() - start:.0f} s, last {args.last}: median "
                  f"{tail['p50']:.1f} ms, {tail['below']:.0%} <= T", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    pooled = {key: summarize(records, target) for key, records in tails.items()}
    pooled_all = {key: summarize(records, target) for key, records in wholes.items()}
    world_text, _ = describe_world(worlds, space, latency_model, args.clip_high)

    if args.quick:
        command = "python benchmarks/reward_shape.py --quick"
    else:
        command = (f"python benchmarks/reward_shape.py --samples {args.samples} --last {args.last} "
                   f"--seeds {args.seeds} --target {target:g} --controllers {','.join(controllers)}")
    if args.clip_high != CLIP[1]:
        command += f" --clip-high {args.clip_high:g}"
    settings_text = "; ".join(
        f"`{c}`: " + (", ".join(f"{k} {v:g}" for k, v in CONTROLLERS[c].items()) or "PPOConfig defaults, "
                      "learning_rate 0.00035, batch_size 10")
        for c in controllers)
    lines = [
        "### Soft and hard rewards at the same target", "",
        f"`{command}` -- {machine()}; {dt.date.today().isoformat()}; {elapsed / 60:.1f} minutes.", "",
        f"Space `{SPACE}` (42 decisions), Pixel 1 latency predicted at {RESOLUTION}x{RESOLUTION} (`pixel1`), "
        f"T = {target:g} ms. Per seed ({args.seeds}): random search, and the controller with the soft preset "
        "(alpha = beta = -0.07) and with the hard one (alpha = 0, beta = -1) under each controller setting "
        f"({settings_text}), {args.samples} children a run, two in flight.", "",
        world_text + f" The clip touched {clipped:,} of {args.seeds * len(runs) * args.samples:,} samples.", "",
    ]

    def quantile_table(summaries: dict, heading: str) -> list[str]:
        rows = [f"| {heading} | p10 ms | p50 ms | p90 ms | p90/p10 | <= T | within T +- 10% | mean accuracy |",
                "|---|---|---|---|---|---|---|---|"]
        for key, s in summaries.items():
            rows.append(f"| {labels[key]} | {s['p10']:.1f} | {s['p50']:.1f} | {s['p90']:.1f} | {s['spread']:.2f} | "
                        f"{s['below']:.0%} | {s['near']:.0%} | {s['acc']:.3f} |")
        return rows

    seeds = f"{args.seeds} seed{'s' if args.seeds > 1 else ''}"
    lines += quantile_table(pooled, f"last {args.last} children of each run, {seeds} pooled")
    lines += [""] + quantile_table(pooled_all, f"whole runs ({args.samples} children), {seeds} pooled")

    bins = ([f"<= {BIN_EDGES[0]:g} T"] + [f"{lo:g}-{hi:g} T" for lo, hi in zip(BIN_EDGES, BIN_EDGES[1:])]
            + [f"> {BIN_EDGES[-1]:g} T"])
    ms_edges = [e * target for e in BIN_EDGES]
    spans = ([f"<= {ms_edges[0]:.0f}"] + [f"{lo:.0f}-{hi:.0f}" for lo, hi in zip(ms_edges, ms_edges[1:])]
             + [f"> {ms_edges[-1]:.0f}"])
    lines += ["", f"Latency histogram of the last {args.last} children (seeds pooled; a bin holds (lower, upper] "
                  "x T):", "",
              "| LAT / T | ms | " + " | ".join(labels[k] for k in runs) + " |", "|---|---|" + "---|" * len(runs)]
    for i, (label, span) in enumerate(zip(bins, spans)):
        cells = " | ".join(f"{pooled[k]['hist'][i]:.0%} `{bar(pooled[k]['hist'][i]):<20}`" for k in runs)
        lines.append(f"| {label} | {span} | {cells} |")

    lines += ["", f"Per run: the last {args.last} children; the best child of the whole run under each reward "
                  "(accuracy @ latency); the policy's mean entropy per decision at the end (uniform: 1.01 nats).",
              "", "| run | seed | p50 ms | <= T | within T +- 10% | mean accuracy | best by soft reward | "
                  "best by hard reward | entropy |", "|---|---|---|---|---|---|---|---|---|"]
    for key, seed, s, soft_best, hard_best, entropy in per_seed:
        lines.append(f"| {labels[key]} | {seed} | {s['p50']:.1f} | {s['below']:.0%} | {s['near']:.0%} | "
                     f"{s['acc']:.3f} | {soft_best[0]:.3f} @ {soft_best[1]:.1f} ms | "
                     f"{hard_best[0]:.3f} @ {hard_best[1]:.1f} ms | {'-' if entropy is None else f'{entropy:.2f}'} |")

    lines += ["", f"Fig. 6 behaviour (criteria fixed in the script's docstring before the first run, on the last "
                  f"{args.last} children; the whole-run figures are shown for reading, not judged):"]
    tail_of = {(key, seed): s for key, seed, s, *_ in per_seed}
    for controller in controllers:
        soft, hard = f"soft/{controller}", f"hard/{controller}"
        pushes, spreads, why_push, why_spread = verdict(pooled[soft], pooled[hard])
        by_seed = [verdict(tail_of[soft, seed], tail_of[hard, seed])[:2] for seed in range(args.seeds)]
        lines += [f"* controller `{controller}`: **{'reproduced' if pushes and spreads else 'NOT reproduced'}**.",
                  f"  * hard pushes below T: {'yes' if pushes else 'NO'} -- {why_push}; holds in "
                  f"{sum(v[0] for v in by_seed)} of {args.seeds} seeds alone.",
                  f"  * soft spreads around T: {'yes' if spreads else 'NO'} -- {why_spread}; holds in "
                  f"{sum(v[1] for v in by_seed)} of {args.seeds} seeds alone."]
    text = "\n".join(lines) + "\n"
    report(text, "strategies:reward-shape", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
