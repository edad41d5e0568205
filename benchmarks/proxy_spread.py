"""Does the default proxy task separate good children from bad, in about a minute each?

Trains random children of the paper's search space (`load_space('mnasnet')`, seeds 0..N-1) and two reference
architectures with one ProxyConfig, in one process -- as a reused Ray actor would -- then prints a Markdown table
(proxy accuracy, seconds, params), the spread of accuracies, and re-runs of a few children under another seed so
that seed noise can be set against the between-child spread.

    .venv/bin/python benchmarks/proxy_spread.py --random 10 --reruns 3 [--threads 1] [--json out.jsonl]

Wall seconds count contention from anything else on the machine; CPU seconds (process time) do not, and at
threads=1 they are what the child would take on an idle core. With the command above, about 15 minutes (a
minute a child).
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

from search.registry import ARCHITECTURES, load_space  # noqa: E402
from workers.proxy import ChildFailed, ProxyConfig, train_child  # noqa: E402

REFERENCES = ("mnasnet-a1", "mobilenetv2")


def _run(label: str, arch, config: ProxyConfig) -> dict:
    started = time.perf_counter()
    try:
        result = train_child(arch, config).to_dict()
        result["status"] = "ok"
    except ChildFailed as err:
        result = {"status": err.reason, "message": err.message}
    result.update(label=label, seed=config.seed, arch=str(arch), total_seconds=time.perf_counter() - started)
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def _row(r: dict) -> str:
    if r["status"] != "ok":
        return f"| {r['label']} | {r['seed']} | failed: {r['status']} | | | | `{r['arch']}` |"
    return (f"| {r['label']} | {r['seed']} | {r['accuracy']:.4f} | {r['total_seconds']:.0f} | {r['cpu_seconds']:.0f} "
            f"| {r['proxy_params'] / 1e6:.2f}M | `{r['arch']}` |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=10, help="random children of the mnasnet space")
    parser.add_argument("--reruns", type=int, default=3, help="children re-trained with --rerun-seed")
    parser.add_argument("--rerun-seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-references", action="store_true")
    parser.add_argument("--json", help="also write one JSON object a child to this file")
    args = parser.parse_args(argv)

    config = ProxyConfig(threads=args.threads)
    space = load_space("mnasnet")
    children = [(f"random-{i}", space.sample(i)) for i in range(args.random)]
    if not args.no_references:
        children += [(name, ARCHITECTURES[name]) for name in REFERENCES]
    print(f"proxy config: {json.dumps(config.to_dict())}", flush=True)
    started = time.perf_counter()
    results = [_run(label, arch, config) for label, arch in children]
    reruns = [_run(label, arch, config.replace(seed=args.rerun_seed)) for label, arch in children[:args.reruns]]
    elapsed = time.perf_counter() - started

    print("\n| child | seed | proxy accuracy | wall s | CPU s | proxy params | architecture (block strings) |")
    print("|---|---|---|---|---|---|---|")
    for r in results + reruns:
        print(_row(r))
    ok = [r["accuracy"] for r in results if r["status"] == "ok"]
    if len(ok) >= 2:
        print(f"\nspread over {len(ok)} children: min {min(ok):.4f}  median {statistics.median(ok):.4f}  "
              f"max {max(ok):.4f}  std {statistics.stdev(ok):.4f}")
    first = {r["label"]: r for r in results if r["status"] == "ok"}
    diffs = [abs(r["accuracy"] - first[r["label"]]["accuracy"]) for r in reruns
             if r["status"] == "ok" and r["label"] in first]
    if diffs:
        # |a - b| of two draws has mean 2*sigma/sqrt(pi) for normal noise; report sigma estimated from pairs.
        sigma = (sum(d * d for d in diffs) / (2 * len(diffs))) ** 0.5
        print(f"seed noise: |accuracy(seed {config.seed}) - accuracy(seed {args.rerun_seed})| = "
              + ", ".join(f"{d:.4f}" for d in diffs) + f"; per-run sigma estimate {sigma:.4f}")
    times = [r["total_seconds"] for r in results + reruns if r["status"] == "ok"]
    cpus = [r["cpu_seconds"] for r in results + reruns if r["status"] == "ok"]
    if times:
        print(f"seconds per child: wall median {statistics.median(times):.0f} (min {min(times):.0f}, "
              f"max {max(times):.0f}); CPU median {statistics.median(cpus):.0f} (min {min(cpus):.0f}, "
              f"max {max(cpus):.0f}); benchmark total {elapsed:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            for r in results + reruns:
                handle.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
