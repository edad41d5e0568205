#!/usr/bin/env python
"""A child's proxy training throughput against a plain `model.fit` of the same model, at 1 and 2 threads.

    python benchmarks/child_throughput.py [--steps 60] [--warmup 10] [--write]

For each child (MnasNet-A1, MobileNetV2 and two random children of the `mnasnet` space, as the proxy trains them:
`search.proxy.proxy_architecture`, 28x28 Fashion-MNIST), in a fresh process per thread count (TensorFlow's
thread pools are set once a process):

* the worker's way: `workers.proxy.ProxyTraining` (a hand-written `tf.function` step, one host sync a step for
  the NaN check), images per second over `--steps` steps after `--warmup` steps (tracing excluded);
* `model.fit` of the same Keras model, optimizer, loss, batches and schedule, timed by a callback over the same
  steps.

Also: each whole run, tracing included (what a child pays once); both ways at 2 threads, and two 1-thread
children at once (what a search with 2 workers runs), which is what decides the default of one thread a child.
Expected duration: ~6 minutes on 2 cores; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine, timed_fit, today, update_block  # noqa: E402

CHILDREN = ("mnasnet-a1", "mobilenetv2", "random:0", "random:1")


def child(name: str):
    from mnas.search.registry import load_architecture, load_space

    if name.startswith("random:"):
        return load_space("mnasnet").sample(int(name.split(":")[1]))
    return load_architecture(name)


def measure(name: str, threads: int, steps: int, warmup: int) -> dict:
    """Images/s of the proxy's own step and of model.fit for one child, in this process."""
    from mnas.search.proxy import ProxyConfig
    from mnas.workers.proxy import ProxyTraining, _optimizer

    proxy = ProxyConfig(threads=threads, steps=warmup + steps, train_subset=64 * (warmup + steps), heldout=500)
    arch = child(name)
    with ProxyTraining(arch, proxy) as training:
        began = time.perf_counter()
        training.train_to(warmup)
        started = time.perf_counter()
        training.train_to(warmup + steps)
        ours = steps * proxy.batch_size / (time.perf_counter() - started)
        ours_whole = time.perf_counter() - began

    import keras

    from mnas.trainer.data import make_pipeline

    with ProxyTraining(arch, proxy) as training:   # the same built model, fresh weights, its data
        model = training.model
        model.compile(optimizer=_optimizer(proxy, training.total_steps), jit_compile=False,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        batches = make_pipeline(*training.train_data, proxy.batch_size, proxy.image_size, shuffle=True,
                                seed=proxy.seed, drop_remainder=True).repeat().take(warmup + steps)
        began = time.perf_counter()
        fit = timed_fit(model, batches, steps, warmup, proxy.batch_size)
        fit_whole = time.perf_counter() - began
    return {"child": name, "threads": threads, "ours": ours, "fit": fit, "ours_whole": ours_whole,
            "fit_whole": fit_whole}


def in_subprocess(names, threads: int, steps: int, warmup: int, cpus: str | None = None) -> subprocess.Popen:
    command = [sys.executable, os.path.abspath(__file__), "--worker", ",".join(names), "--threads", str(threads),
               "--steps", str(steps), "--warmup", str(warmup)]
    if cpus:
        command = ["taskset", "-c", cpus] + command
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen) -> list[dict]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"worker failed:\n{err[-3000:]}")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed steps of 64 images (default 60)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first, tracing included (default 10)")
    parser.add_argument("--write", action="store_true", help="put the table into BENCHMARKS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        for name in args.worker.split(","):
            print(json.dumps(measure(name, args.threads, args.steps, args.warmup)), flush=True)
        return 0
    if args.steps < 5 or args.warmup < 2:
        parser.error("need --steps >= 5 and --warmup >= 2")
    results = {}
    for threads in (1, 2):
        print(f"[{time.strftime('%H:%M:%S')}] {threads} thread(s) ...", file=sys.stderr, flush=True)
        for row in collect(in_subprocess(CHILDREN, threads, args.steps, args.warmup)):
            results[row["child"], threads] = row
    # two one-thread children at once, one a core: what two Ray workers do
    print(f"[{time.strftime('%H:%M:%S')}] two 1-thread children at once ...", file=sys.stderr, flush=True)
    pair = [in_subprocess(CHILDREN, 1, args.steps, args.warmup, cpus=str(core)) for core in (0, 1)]
    together = [collect(p) for p in pair]
    lines = [f"`python benchmarks/child_throughput.py --steps {args.steps} --warmup {args.warmup}` -- "
             f"{machine()}; {today()}. Training images per second, batches of 64, tracing excluded.", "",
             "| child | proxy step, 1 thread | model.fit, 1 thread | ratio | proxy step, 2 threads | model.fit, 2 "
             "threads | 2 threads / 1 | two 1-thread children at once (sum) | whole run, tracing included: proxy "
             "step s / model.fit s (1 thread) |", "|---|---|---|---|---|---|---|---|---|"]
    ratios, speedups, pairs = [], [], []
    for i, name in enumerate(CHILDREN):
        one, two = results[name, 1], results[name, 2]
        both = together[0][i]["ours"] + together[1][i]["ours"]
        ratios.append(one["ours"] / one["fit"])
        speedups.append(two["ours"] / one["ours"])
        pairs.append(both / two["ours"])
        lines.append(f"| {name} | {one['ours']:.0f} | {one['fit']:.0f} | {ratios[-1]:.2f}x | {two['ours']:.0f} | "
                     f"{two['fit']:.0f} | {speedups[-1]:.2f}x | {both:.0f} | {one['ours_whole']:.1f} / "
                     f"{one['fit_whole']:.1f} |")
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    whole = [results[n, 1]["fit_whole"] / results[n, 1]["ours_whole"] for n in CHILDREN]
    lines += ["", f"The proxy's step trains {mean(ratios):.2f}x as many images a second as `model.fit` of the same "
                  f"model at one thread (mean over the children), once traced; over a whole run of "
                  f"{args.warmup + args.steps} steps, tracing included, `model.fit` takes {mean(whole):.2f}x the "
                  f"proxy's time. A second thread speeds one child up "
                  f"{mean(speedups):.2f}x; two one-thread children at once, one a core, train {mean(pairs):.2f}x "
                  "the images of one two-thread child: hence one thread a child and one child a core "
                  "(`proxy.threads: 1`, `cpus_per_worker: 1`)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        update_block("search:throughput", "### A child's training throughput\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
