#!/usr/bin/env python
"""Search overhead, scaling and controller cost, measured side by side in one run.

    python benchmarks/search_scaling.py [--samples 8] [--train-subset 10000] [--heldout 5000] [--write]
    python benchmarks/search_scaling.py --quick       # 4 tiny children a run: a check that it works, ~3 min

Runs, one after another (start it with nothing else running). Every search is `configs/default.yaml` (Pixel 1
predicted latency, one CPU thread a child, the default proxy task unless --train-subset/--heldout say otherwise):

  1. `launch.py search`, 1 worker, strategy `random` with a fixed seed, so that every run below trains exactly
     the same children;
  2. a plain loop: a fresh Python process trains run 1's children one after another with `workers.proxy.
     train_child` and predicts their latency: no Ray, no Tune, no store, no strategy, no state file;
     runs 1 and 2 alternate `--pairs` times (default 2), because this machine's speed drifts by 5-10% between
     runs a few minutes apart, as much as the overhead being measured;
  3. `launch.py search`, 2 workers, local Ray (`ray.init()`), the same children;
  4. `launch.py search`, 2 workers, on a three-node Ray cluster started here (`ray.cluster_utils.Cluster`: a head
     with no CPUs and two worker nodes of one CPU each), joined with `--address`, the same children;
  5. `launch.py search`, 2 workers, strategy `mnas` (the LSTM controller): what the controller costs.

Figures: overhead = sum of run 1's walls / sum of run 2's loop times - 1, with the loop timed from its first child to its last
(imports excluded: the strictest reference), and where the difference goes; children per hour of runs 1, 3, 4;
the controller's cost per sample, per PPO update and as a share of run 5's wall time (the driver times its
strategy's propose and observe calls: `driver_seconds` in the run's store). A search's wall is its `launch.py`
process's, start to exit: Python, TensorFlow and Ray start-up included. The busy fraction is the children's own
train + evaluate seconds over workers x wall.

Expected duration with the defaults: ~20 minutes on 2 cores (8 children of about 20 s, seven times).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine, today, update_block  # noqa: E402


def bench_config(args, workers: int, strategy: str = "random") -> dict:
    """configs/default.yaml with the benchmark's budget, proxy size and strategy."""
    from mnas.search.config import SearchConfig

    config = SearchConfig.load(os.path.join(ROOT, "configs", "default.yaml")).to_dict()
    config.update(name="bench-scaling", samples=args.samples, workers=workers, seed=args.seed, strategy=strategy)
    config["proxy"] = {**config["proxy"], "train_subset": args.train_subset, "heldout": args.heldout}
    return config


def run_search(config: dict, out: str, address: str | None = None) -> dict:
    """Runs `launch.py search` on `config` in a subprocess; returns its wall time and the run's store figures."""
    from mnas.results.store import ResultStore

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "config.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)            # JSON is YAML
    ray_tmp = tempfile.mkdtemp(prefix="mb", dir="/tmp")
    command = [sys.executable, os.path.join(ROOT, "launch.py"), "search", "--config", path, "--out",
               os.path.join(out, "run"), "--quiet"] + (["--address", address] if address else [])
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, MNAS_RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0"))
    wall = time.perf_counter() - started
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"search failed ({done.returncode}):\n{done.stderr[-3000:]}")
    store = ResultStore(os.path.join(out, "run"), readonly=True)
    children = store.children(status="all")
    driver = store.get_meta("driver_seconds", [])[-1]
    busy = float((children["train_seconds"].fillna(0) + children["eval_seconds"].fillna(0)).sum())
    return {"wall": wall, "children": len(children), "ok": int((children["status"] == "ok").sum()),
            "busy": busy, "trials": float(children["total_seconds"].fillna(0).sum()), "workers": config["workers"],
            "driver": driver, "updates": len(store.controller_stats()),
            "cpu": float(sum((extra or {}).get("cpu_seconds") or 0.0 for extra in children["extra"])),
            "best_reward": float(children["reward"].max()), "run_dir": os.path.join(out, "run"),
            "archs": sorted(children["arch"].tolist())}


def plain_loop(run_dir: str) -> dict:
    """Trains a finished run's children one after another in this process; the loop's time, imports excluded."""
    from mnas.results.store import ResultStore
    from mnas.measure import get_latency_model
    from mnas.search.registry import load_space
    from mnas.search.proxy import ProxyConfig
    from mnas.workers.proxy import train_child

    store = ResultStore(run_dir, readonly=True)
    config = store.get_meta("config")
    space = load_space(config["space"])
    proxy = ProxyConfig.from_dict(config["proxy"])
    latency = get_latency_model(config["latency"][0])
    resolution = config["deploy"]["resolution"]
    children = store.children(status="all").sort_values("sample")
    archs = [space.decode(indices).replace(resolution=resolution) for indices in children["indices"]]
    accuracies = []
    started, cpu = time.perf_counter(), time.process_time()
    for arch in archs:
        latency.latency_ms(arch, resolution)
        accuracies.append(train_child(arch, proxy).accuracy)
    loop = time.perf_counter() - started
    return {"loop": loop, "cpu": time.process_time() - cpu, "children": len(archs), "accuracies": accuracies,
            "search_accuracies": children["accuracy"].tolist()}


def run_plain_loop(run_dir: str) -> dict:
    """`plain_loop` in a fresh process, in a worker's situation: its own TensorFlow, nothing else loaded, and the
    environment Ray gives a one-CPU worker (OMP_NUM_THREADS=1), so that neither side gets more of the machine."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--plain-loop", run_dir], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if done.returncode != 0:
        raise SystemExit(f"plain loop failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall"] = time.perf_counter() - started
    return result


def run_on_cluster(config: dict, out: str) -> dict:
    """The search on a head node without CPUs and two one-CPU worker nodes, all on this machine."""
    from ray.cluster_utils import Cluster

    ray_tmp = tempfile.mkdtemp(prefix="mc", dir="/tmp")       # Ray's socket paths must stay short
    os.makedirs(os.path.join(ray_tmp, "ray"))
    os.environ["RAY_TMPDIR"] = ray_tmp                          # where Cluster() writes its address file
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": ray_tmp})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        return run_search(config, out, address=cluster.address)
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _walls(values) -> str:
    return ", ".join(f"{v:.0f}" for v in values) + (f" (mean {sum(values) / len(values):.0f})" if len(values) > 1
                                                     else "")


def _mean(runs: list[dict], *keys) -> float:
    def get(run):
        for key in keys:
            run = run[key]
        return run
    return sum(get(run) for run in runs) / len(runs)


def report(args, runs: dict, ones: list[dict], loops: list[dict]) -> str:
    """The section: a table of the runs, then overhead, scaling and controller figures. `ones` and `loops` are the
    1-worker searches and the plain loops, run alternately (pair i = ones[i], loops[i])."""
    lines = [f"`python benchmarks/search_scaling.py {' '.join(args.argv)}`".replace(" `", "`"), "",
             f"{machine()}; {today()}. Each run: {args.samples} children of `configs/default.yaml` (Pixel 1 "
             f"predicted latency, soft reward at 75 ms, one CPU thread a child) with a proxy of "
             f"{args.train_subset:,} training and {args.heldout:,} held-out images; the random-strategy runs train "
             "the same children (one seed)"
             + (f"; the 1-worker search and the plain loop ran alternately, {len(loops)} times each" if len(loops) > 1
                else "") + ".", "",
             "| run | wall s | children | children / hour | busy fraction | controller s (share of wall) | "
             "best reward |", "|---|---|---|---|---|---|---|"]
    if loops:
        lines.append(f"| plain loop of run 1's children (no Ray, no store, no strategy) | "
                     f"{_walls([loop['loop'] for loop in loops])} (CPU {_mean(loops, 'cpu'):.0f}) | "
                     f"{loops[0]['children']} | {3600 * loops[0]['children'] / _mean(loops, 'loop'):.0f} | - | - | - |")
    for name, r in runs.items():
        group = ones if name == "1 worker" else [r]
        controller = r["driver"]["propose"] + r["driver"]["observe"]
        wall = _mean(group, "wall")
        lines.append(f"| search, {name} | {_walls([g['wall'] for g in group])} | {r['children']} ({r['ok']} ok) | "
                     f"{3600 * r['children'] / wall:.0f} | {_mean(group, 'busy') / (r['workers'] * wall):.2f} | "
                     f"{controller:.2f} ({controller / r['wall']:.2%}) | {r['best_reward']:.4f} |")
    lines.append("")
    if ones and loops:
        pairs = list(zip(ones, loops))
        each = [one["wall"] / loop["loop"] - 1 for one, loop in pairs]
        overhead = sum(one["wall"] for one, _ in pairs) / sum(loop["loop"] for _, loop in pairs) - 1
        verdict = "meets" if overhead <= 0.10 else "misses"
        wall, loop_s = _mean(ones, "wall"), _mean(loops, "loop")
        start = wall - _mean(ones, "driver", "wall")
        between = _mean(ones, "driver", "wall") - _mean(ones, "trials")
        inside = _mean(ones, "trials") - loop_s
        children = loops[0]["children"]
        lines.append(f"* **Overhead** (the 1-worker search against the plain loop of the same {children} children, "
                     f"{loop_s / children:.0f} s a child): {overhead:+.1%}"
                     + (f" over {len(pairs)} alternating pairs ({', '.join(f'{e:+.1%}' for e in each)})"
                        if len(pairs) > 1 else "")
                     + f", which {verdict} the 10% goal. Where the {wall - loop_s:.0f} s go (means): {start:.0f} s "
                     f"before the search's clock starts (Python, TensorFlow and Ray imports); {between:.0f} s between "
                     f"and around trials (starting Ray and the worker, Tune's bookkeeping; the state file "
                     f"{_mean(ones, 'driver', 'state'):.1f} s and the store {_mean(ones, 'driver', 'store'):.2f} s "
                     "of it); "
                     + (f"{inside:.0f} s inside the trials beyond the loop's time ({inside / children:.2f} s a child, "
                        "the worker's first TensorFlow graph among them)" if inside >= 0.5 else
                        f"and nothing inside the trials: they took {-inside:.0f} s less than the loop's children")
                     + ". The first two are paid once a search, so more or longer children dilute them.")
        waited = _mean(ones, "trials") - _mean(ones, "cpu")
        lines.append(f"  In CPU seconds the trials' children took {_mean(ones, 'cpu'):.0f} s against the loop's "
                     f"{_mean(loops, 'cpu'):.0f} s; the trials' wall time exceeded their CPU time by {waited:.0f} s "
                     f"({waited / max(_mean(ones, 'trials'), 1e-9):.0%}), time a child spent descheduled or blocked.")
        if len(loops) > 1:
            spread = max(loop["loop"] for loop in loops) / min(loop["loop"] for loop in loops) - 1
            lines.append(f"  The same plain loop took {spread:.0%} longer in its slowest run than in its fastest: "
                         "the machine's own speed drifts by that much between runs minutes apart.")
        same = sum(abs(a - b) < 1e-9 for a, b in zip(loops[0]["accuracies"], loops[0]["search_accuracies"]))
        lines.append(f"  The loop reproduced {same} of {children} children's proxy accuracies exactly "
                     "(same seeds, same thread count).")
    if ones and "2 workers" in runs:
        same = [name for name in ("2 workers", "2 workers, 3-node cluster") if name in runs
                and runs[name]["archs"] == ones[0]["archs"]]
        lines.append(f"* The scaling runs trained the same children as run 1: {', '.join(same) or 'none'}.")
        one_rate = ones[0]["children"] / _mean(ones, "wall")
        two = runs["2 workers"]
        lines.append(f"* **Scaling**: 2 workers give {two['children'] / two['wall'] / one_rate:.2f}x "
                     f"the children/hour of 1 on this 2-core machine")
        if "2 workers, 3-node cluster" in runs:
            cl = runs["2 workers, 3-node cluster"]
            lines[-1] += f"; on the local three-node cluster {cl['children'] / cl['wall'] / one_rate:.2f}x."
        else:
            lines[-1] += "."
    for name, r in reversed(list(runs.items())):
        if r["updates"]:
            per_sample = r["driver"]["propose"] / max(1, r["children"]) * 1e3
            per_update = r["driver"]["observe"] / r["updates"] * 1e3
            lines.append(f"* **Controller** ({name}): {per_sample:.1f} ms a sample, {per_update:.0f} ms a PPO update "
                         f"({r['updates']} update{'s' if r['updates'] != 1 else ''}), "
                         f"{(r['driver']['propose'] + r['driver']['observe']) / r['wall']:.2%} "
                         "of the search's wall time (goal: under 1%).")
            break
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8, help="children a run (default 8)")
    parser.add_argument("--train-subset", type=int, default=10000,
                        help="proxy training images (default 10,000, the default proxy's)")
    parser.add_argument("--heldout", type=int, default=5000, help="proxy held-out images (default 5,000)")
    parser.add_argument("--seed", type=int, default=0, help="the search seed of every run (the random runs then "
                                                            "train the same children; default %(default)s)")
    parser.add_argument("--runs", default="1,loop,2,cluster,mnas",
                        help="which runs, comma-separated among 1, loop, 2, cluster, mnas (loop needs 1)")
    parser.add_argument("--pairs", type=int, default=2,
                        help="times the 1-worker search and the plain loop run, alternately (default 2): this "
                             "machine's speed drifts by several percent between runs minutes apart")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="4 children of 640 images a run: ~4 minutes")
    parser.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    parser.add_argument("--plain-loop", metavar="RUN_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.plain_loop:
        print(json.dumps(plain_loop(args.plain_loop)))
        return 0
    if args.quick:
        args.samples, args.train_subset, args.heldout, args.pairs = 4, 640, 500, 1
    wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(wanted) - {"1", "loop", "2", "cluster", "mnas"})
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if unknown or ("loop" in wanted and "1" not in wanted):
        parser.error(f"--runs: unknown {', '.join(unknown)}" if unknown else "--runs: loop needs run 1")
    out = args.out or tempfile.mkdtemp(prefix="mnas-bench-scaling-")
    runs = {}
    steps = {"2": ("2 workers", lambda: run_search(bench_config(args, 2), os.path.join(out, "w2"))),
             "cluster": ("2 workers, 3-node cluster",
                         lambda: run_on_cluster(bench_config(args, 2), os.path.join(out, "cluster"))),
             "mnas": ("2 workers, mnas controller",
                      lambda: run_search(bench_config(args, 2, "mnas"), os.path.join(out, "mnas")))}
    ones, loops = [], []
    for i in range(args.pairs if "1" in wanted else 0):        # the pair the overhead compares, alternately
        print(f"[{time.strftime('%H:%M:%S')}] 1 worker ({i + 1}/{args.pairs}) ...", file=sys.stderr, flush=True)
        ones.append(run_search(bench_config(args, 1), os.path.join(out, f"w1-{i}")))
        print(f"  1 worker: {ones[-1]['wall']:.0f} s", file=sys.stderr, flush=True)
        if "loop" in wanted:
            print(f"[{time.strftime('%H:%M:%S')}] loop ({i + 1}/{args.pairs}) ...", file=sys.stderr, flush=True)
            loops.append(run_plain_loop(ones[0]["run_dir"]))
            print(f"  loop {loops[-1]['loop']:.0f} s", file=sys.stderr, flush=True)
    if ones:
        runs["1 worker"] = ones[0]
    for key in ("2", "cluster", "mnas"):
        if key not in wanted:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {key} ...", file=sys.stderr, flush=True)
        name, step = steps[key]
        runs[name] = step()
        print(f"  {name}: {runs[name]['wall']:.0f} s", file=sys.stderr, flush=True)
    text = report(args, runs, ones, loops)
    print(text)
    if args.write:
        update_block("search:scaling", "### Overhead, scaling and controller cost\n\n" + text)
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
