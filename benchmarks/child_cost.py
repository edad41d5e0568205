#!/usr/bin/env python
"""What a child of the paper's proxy (configs/paper.yaml) costs: training seconds per image on this machine, and
the device-hours of a whole search that follow from it.

    python benchmarks/child_cost.py [--children mnasnet-a1,random:0,random:1] [--batch-size 32] [--steps 6]
                                    [--threads 2] [--write]

Each child is the deployment model itself (paper.yaml's proxy: width 1.0, every stride kept, 224x224x3), trained
by the search's own worker code (`workers.proxy.ProxyTraining`) with paper.yaml's optimizer, on random images held
in memory (an `npz` written to a temporary folder): the figure is the model's training compute, without JPEG
decoding, which a GPU child runs on its CPUs beside the GPU (cpus_per_worker). Timed over --steps steps after two
untimed ones (tracing).

The cost model: a child of paper.yaml trains `train_subset x epochs` = 1,231,167 x 5 images, so

    child hours  = seconds per image x 6,155,835 / 3600
    search hours = child hours x samples          (device-hours: divide by the number of GPUs for wall time)

Run the same script on one of your GPU nodes (it trains on whatever device TensorFlow finds) to price a search
there; this machine has no GPU, so BENCHMARKS.md holds the CPU figure only. Expected duration here: ~3 minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine, report, today  # noqa: E402

PAPER_IMAGES = 1_231_167 * 5      # paper.yaml: train_subset x epochs
PAPER_SAMPLES = 8000


def child(name: str):
    import random

    from mnas.search.registry import load_architecture, load_space

    if name.startswith("random:"):
        space = load_space("mnasnet")
        return space.decode(space.sample_indices(random.Random(int(name.split(":")[1]))))
    return load_architecture(name)


def measure(name: str, data_dir: str, batch_size: int, steps: int, threads: int) -> float:
    """Seconds per training image of child `name` under paper.yaml's proxy settings (batch size aside)."""
    import yaml

    from mnas.search.proxy import ProxyConfig
    from mnas.workers.proxy import ProxyTraining

    paper = yaml.safe_load(open(os.path.join(ROOT, "configs", "paper.yaml"), encoding="utf-8"))["proxy"]
    proxy = ProxyConfig.from_dict({**paper, "dataset": "npz", "data_dir": data_dir, "train_subset": batch_size * 4,
                                   "heldout": batch_size, "batch_size": batch_size, "epochs": 1,
                                   "steps": steps + 2, "threads": threads, "num_classes": 1000})
    with ProxyTraining(child(name), proxy) as training:
        training.train_to(2)                              # tracing and the first steps' warm-up
        began = time.perf_counter()
        training.train_to(steps + 2)
        return (time.perf_counter() - began) / (steps * batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", default="mnasnet-a1,random:0,random:1",
                        help="comma-separated: model names (mnas models) or random:SEED, a uniform random child of "
                             "the mnasnet space (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="images a step (default %(default)s)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps a child, after 2 untimed ones "
                                                             "(default %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default %(default)s)")
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile (said in the table)")
    parser.add_argument("--write", action="store_true", help="update the child-cost block of BENCHMARKS.md")
    args = parser.parse_args()

    import numpy as np

    from mnas.search.counts import count

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        n = args.batch_size * 5
        np.savez(os.path.join(folder, "data.npz"), x_train=rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8),
                 y_train=rng.integers(0, 1000, n))
        for name in args.children.split(","):
            seconds = measure(name, folder, args.batch_size, args.steps, args.threads)
            madds = count(child(name)).madds / 1e6
            rows.append((name, madds, seconds))
            print(f"{name}: {madds:.0f}M multiply-adds, {seconds * 1e3:.1f} ms per training image", flush=True)
    lines = [f"`python benchmarks/child_cost.py --threads {args.threads} --batch-size {args.batch_size} "
             f"--steps {args.steps}` -- {machine()}; {today()}. Training compute of configs/paper.yaml's children "
             "(the deployment model at 224x224x3, paper.yaml's optimizer) on random images in memory, by the "
             f"worker's own code, {args.threads} TensorFlow threads, batches of {args.batch_size}."
             + (f" {args.note}" if args.note else ""), "",
             "| child | multiply-adds | ms per training image | one child (5 epochs of 1,231,167 images) | "
             f"a search of {PAPER_SAMPLES:,} children |", "|---|---|---|---|---|"]
    for name, madds, seconds in rows:
        hours = seconds * PAPER_IMAGES / 3600
        lines.append(f"| {name} | {madds:.0f}M | {seconds * 1e3:.1f} | {hours:,.0f} CPU-hours | "
                     f"{hours * PAPER_SAMPLES / 1e6:,.1f} million CPU-hours |")
    lines += ["", "On a GPU, run the same command there: the ms per image it prints, times 6,155,835 images, is a "
              "child's GPU-seconds (plus its JPEG decoding, which needs enough worker CPUs to keep up)."]
    report("\n".join(lines), "child-cost", args.write)


if __name__ == "__main__":
    main()
