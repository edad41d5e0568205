"""Benchmark: what data-parallel replay costs on a CPU machine, beside the one-device trainer.

Trains the same model for the same steps (MnasNet-A1 x0.5 on the first 3,200 Fashion-MNIST images, global batch
128: 25 steps an epoch, 2 epochs) four ways, each in a fresh process, round after round:

    one device         `train` as always (no tf.distribute strategy), --threads 2
    2 devices          the CPU split into two logical devices, MirroredStrategy (per-replica batch norm)
    2 devices, sync-bn the same with batch norm over the global batch (--sync-bn)
    2 Ray workers      `--workers 2 --threads 1`: Ray Train, MultiWorkerMirroredStrategy over gRPC on one host

and prints a Markdown table of the medians (and ranges) over the rounds of the second epoch's images/s (the
first one traces the step) and of each command's wall time. On one CPU the replicas share the same cores, so
this measures the strategy's overhead, not a speed-up: replication pays off with one accelerator per replica.
Figures in BENCHMARKS.md. About 8 minutes a round on 2 cores.

    python benchmarks/distributed_replay.py --rounds 3 --out /tmp/distributed-replay
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPLIT_CPU = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {root!r})
from mnas import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mnasnet-a1", help="any `train --arch` (default %(default)s)")
    parser.add_argument("--depth-multiplier", default="0.5", help="the model's width (default %(default)s)")
    parser.add_argument("--train-limit", type=int, default=3200, help="training images (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="times each variant runs (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs a run; the last one's images/s is reported "
                                                              "(default %(default)s)")
    parser.add_argument("--out", default="/tmp/distributed-replay", help="the runs' folder, deleted first "
                                                                         "(default %(default)s)")
    args = parser.parse_args(argv)

    common = ["train", "--arch", args.arch, "--depth-multiplier", args.depth_multiplier, "--epochs",
              str(args.epochs), "--batch-size", "128", "--train-limit", str(args.train_limit), "--eval-limit", "1000"]
    launch = [sys.executable, os.path.join(ROOT, "launch.py")]
    split = [sys.executable, "-c", SPLIT_CPU.format(root=ROOT)]
    variants = [("one device", launch, ["--threads", "2"]),
                ("2 devices", split, ["--threads", "2", "--devices", "2"]),
                ("2 devices, sync-bn", split, ["--threads", "2", "--devices", "2", "--sync-bn"]),
                ("2 Ray workers", launch, ["--threads", "1", "--workers", "2"])]
    shutil.rmtree(args.out, ignore_errors=True)
    ray_temp = tempfile.mkdtemp(prefix="mnas-bench-", dir="/tmp")  # short: Ray's socket paths
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    try:
        for round_ in range(args.rounds):
            for name, command, extra in variants:
                out = os.path.join(args.out, f"{round_}-" + name.replace(" ", "-").replace(",", ""))
                started = time.perf_counter()
                result = subprocess.run(command + common + extra + ["--out", out], cwd=ROOT, capture_output=True,
                                        text=True, env={**os.environ, "MNAS_RAY_TMPDIR": ray_temp})
                wall = time.perf_counter() - started
                if result.returncode:
                    print(f"{name}: failed: {result.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                with open(os.path.join(out, "summary.json")) as handle:
                    speed = json.load(handle)["final"]["images_per_second"]
                figures[name].append((speed, wall))
                print(f"round {round_ + 1} {name}: {speed:.0f} img/s, {wall:.0f} s", flush=True)
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    base = statistics.median(s for s, _ in figures["one device"]) if figures["one device"] else float("nan")
    print(f"| run | epoch {args.epochs} img/s, median (range) | vs one device | wall s, median (range) |\n"
          "|---|---|---|---|")
    for name, runs in figures.items():
        if not runs:
            continue
        speeds, walls = [s for s, _ in runs], [w for _, w in runs]
        print(f"| {name} | {statistics.median(speeds):.0f} ({min(speeds):.0f}-{max(speeds):.0f}) | "
              f"{statistics.median(speeds) / base:.2f}x | {statistics.median(walls):.0f} "
              f"({min(walls):.0f}-{max(walls):.0f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
