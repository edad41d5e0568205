"""Does the default proxy task separate children by more than its own seed noise, in about a minute each?

Trains random children of the paper's search space (`load_space('mnasnet')`, seeds 0..N-1) and the reference
architectures (MnasNet-A1, MobileNetV2, mnasnet-small) under each of several training seeds, with one
ProxyConfig, in one process -- as a reused Ray actor would -- and reports, per child, the accuracy at each seed;
the seed-to-seed sigma (pooled within children); the spread between children (the standard deviation of their
seed means); and the ratio of the two, the proxy's signal-to-noise.

    .venv/bin/python benchmarks/proxy_spread.py --random 4 --seeds 0,1,2 [--jsonl runs.jsonl] [--write]

Wall seconds count contention from anything else on the machine; CPU seconds (process time) do not, and at
threads=1 they are what the child takes on an idle core. With the command above, 21 trainings: about 15 minutes
on an idle core. `--jsonl` keeps one line a training and skips the trainings already in the file when re-run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine, report, today  # noqa: E402
from mnas.search.registry import ARCHITECTURES, load_space  # noqa: E402
from mnas.search.failures import ChildFailed  # noqa: E402
from mnas.search.proxy import ProxyConfig  # noqa: E402
from mnas.workers.proxy import train_child  # noqa: E402

REFERENCES = ("mnasnet-a1", "mobilenetv2", "mnasnet-small")


def _run(label: str, arch, config: ProxyConfig) -> dict:
    started = time.perf_counter()
    try:
        result = train_child(arch, config).to_dict()
        result["status"] = "ok"
    except ChildFailed as err:
        result = {"status": err.code.value, "message": err.message}
    result.update(label=label, seed=config.seed, arch=str(arch), total_seconds=time.perf_counter() - started)
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def summarize(runs: list[dict], labels: list[str], seeds: list[int]) -> dict:
    """Per-child accuracies, the pooled seed sigma, the between-child spread and their ratio."""
    by_child = {label: {r["seed"]: r["accuracy"] for r in runs if r["label"] == label and r["status"] == "ok"}
                for label in labels}
    complete = {label: accs for label, accs in by_child.items() if len(accs) == len(seeds)}
    variances = [statistics.variance(accs.values()) for accs in complete.values()]
    means = {label: statistics.mean(accs.values()) for label, accs in complete.items()}
    sigma = statistics.mean(variances) ** 0.5 if variances else float("nan")
    spread = statistics.stdev(means.values()) if len(means) >= 2 else float("nan")
    # The spread of seed means still holds sigma^2 / n of noise; the children's own spread is what is left.
    true_spread = max(spread ** 2 - sigma ** 2 / len(seeds), 0.0) ** 0.5 if means else float("nan")
    return {"by_child": by_child, "means": means, "sigma": sigma, "spread": spread, "true_spread": true_spread,
            "ratio": true_spread / sigma if sigma else float("nan")}


def render(runs: list[dict], labels: list[str], archs: dict, seeds: list[int], config: ProxyConfig,
           command: str) -> str:
    stats = summarize(runs, labels, seeds)
    ok = [r for r in runs if r["status"] == "ok"]
    lines = [f"`{command}`", "",
             f"{machine()}; {today()}. Proxy: `{json.dumps(config.to_dict())}` (seed varied). One process trains "
             "every child in turn, as a reused Ray actor does.", "",
             "| child | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | sd | CPU s (median) | proxy params |"
             " architecture |", "|---" * (len(seeds) + 6) + "|"]
    for label in labels:
        accs = stats["by_child"][label]
        mine = [r for r in ok if r["label"] == label]
        cells = [f"{accs[s]:.4f}" if s in accs else "failed" for s in seeds]
        mean = f"{statistics.mean(accs.values()):.4f}" if accs else "-"
        sd = f"{statistics.stdev(accs.values()):.4f}" if len(accs) >= 2 else "-"
        cpu = f"{statistics.median(r['cpu_seconds'] for r in mine):.0f}" if mine else "-"
        params = f"{mine[0]['proxy_params'] / 1e6:.2f}M" if mine else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean} | {sd} | {cpu} | {params} | `{archs[label]}` |")
    cpus = [r["cpu_seconds"] for r in ok]
    walls = [r["total_seconds"] for r in ok]
    lines += ["", f"* **Seconds a child** (one thread): CPU median {statistics.median(cpus):.0f} s "
              f"({min(cpus):.0f}-{max(cpus):.0f}), wall median {statistics.median(walls):.0f} s, over {len(ok)} "
              "trainings." if ok else "* no training succeeded.",
              f"* **Seed noise**: pooled within-child sigma {stats['sigma']:.4f} ({len(stats['means'])} children x "
              f"{len(seeds)} seeds).",
              f"* **Spread between children**: sd of the seed means {stats['spread']:.4f}; with the noise that a "
              f"{len(seeds)}-seed mean still carries taken out, {stats['true_spread']:.4f}.",
              f"* **Signal to noise**: between-child spread / seed sigma = {stats['ratio']:.1f}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--random", type=int, default=4, help="random children of the mnasnet space (seeds 0..N-1)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads a training "
                                                               "(default %(default)s, a search worker's)")
    parser.add_argument("--no-references", action="store_true", help=f"leave out {', '.join(REFERENCES)}")
    parser.add_argument("--jsonl", help="one JSON line a training; re-running skips what the file holds")
    parser.add_argument("--write", action="store_true", help="put the table into BENCHMARKS.md")
    args = parser.parse_args(argv)

    seeds = [int(s) for s in args.seeds.split(",")]
    config = ProxyConfig(threads=args.threads)
    space = load_space("mnasnet")
    children = [(f"random-{i}", space.sample(i)) for i in range(args.random)]
    if not args.no_references:
        children += [(name, ARCHITECTURES[name]) for name in REFERENCES]
    runs = []
    if args.jsonl and os.path.exists(args.jsonl):
        with open(args.jsonl, encoding="utf-8") as handle:
            runs = [json.loads(line) for line in handle if line.strip()]
    done = {(r["label"], r["seed"]) for r in runs}
    for seed in seeds:   # seed by seed, so that an interrupted run has whole seeds for all children first
        for label, arch in children:
            if (label, seed) in done:
                continue
            run = _run(label, arch, config.replace(seed=seed))
            runs.append(run)
            if args.jsonl:
                with open(args.jsonl, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(run) + "\n")
    command = "python benchmarks/proxy_spread.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report(render(runs, [label for label, _ in children], {label: str(arch) for label, arch in children}, seeds,
                  config, command.strip()), "proxy:noise", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
