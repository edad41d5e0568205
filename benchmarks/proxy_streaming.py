#!/usr/bin/env python
"""The proxy's throughput streaming from files beside the in-memory path: same child, same images, one process.

    python benchmarks/proxy_streaming.py [--rounds 3] [--steps 40] [--warmup 8] [--write]

The first `--images` Fashion-MNIST training images are written into a temporary folder twice: as an image folder
(DIR/<class>/*.png) and as TFRecord shards in the ImageNet schema (PNG bytes in image/encoded, label + 1 in
image/class/label). Then MnasNet-A1, adapted by the default proxy (`search.proxy.proxy_architecture`, 28x28,
one thread), trains on each form in turn, round after round (every other round in the reverse order), so that the
machine's load falls alike on all:

* in memory, file order: the default proxy's own path (`configs/default.yaml`), arrays batched by `make_pipeline`;
* in memory, random split: the same arrays, subsets drawn at random (`split: random`);
* image folder and TFRecords: streamed through `trainer.splits`, each file decoded, Inception-cropped and resized
  as the trainer does for files (3 channels: the PNGs decode to RGB), a random split.

For each: the seconds to open the data and draw the subsets (`workers.proxy.proxy_data`; a worker pays it once a
child, the file listing or record index once a process), training images per second over `--steps` steps after
`--warmup` (tracing excluded) in wall time and per CPU second of the whole process (tf.data's threads included:
decoding costs CPU even when it overlaps the training step, and on a machine full of workers CPU is what runs out),
and scoring images per second over the held-out sample. Medians over the rounds; ratios against the in-memory
file-order path. Expected duration: ~2.5 minutes a round on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine, report, today  # noqa: E402

TAG = "proxy:streaming"
PATHS = ("memory, file order", "memory, random split", "image folder (PNG)", "TFRecords (PNG)")


def write_files(images: int, folder: str) -> tuple[str, str]:
    """The first `images` Fashion-MNIST training images as a PNG folder and as ImageNet-schema TFRecords."""
    import numpy as np
    import tensorflow as tf

    from mnas.trainer.data import load_dataset

    arrays = load_dataset("fashion-mnist")
    x, y = arrays.x_train[:images], arrays.y_train[:images]
    pngs = [tf.io.encode_png(image).numpy() for image in x]
    tree = os.path.join(folder, "png")
    for label in range(10):
        os.makedirs(os.path.join(tree, f"class{label}"))
    for number, (data, label) in enumerate(zip(pngs, y)):
        with open(os.path.join(tree, f"class{label}", f"{number:06d}.png"), "wb") as handle:
            handle.write(data)
    records = os.path.join(folder, "tfrecords")
    os.makedirs(records)
    shards = 4
    bounds = np.linspace(0, images, shards + 1).astype(int)
    for shard in range(shards):
        with tf.io.TFRecordWriter(os.path.join(records, f"train-{shard:05d}-of-{shards:05d}")) as writer:
            for number in range(bounds[shard], bounds[shard + 1]):
                feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pngs[number]])),
                           "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(
                               value=[int(y[number]) + 1]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return tree, records


def configs(args, tree: str, records: str) -> dict:
    from mnas.search.proxy import ProxyConfig

    base = ProxyConfig(steps=args.warmup + args.steps, train_subset=args.train_subset, heldout=args.heldout,
                       threads=1)
    return {PATHS[0]: base.replace(split="file-order"), PATHS[1]: base.replace(split="random"),
            PATHS[2]: base.replace(dataset="folder", data_dir=tree),
            PATHS[3]: base.replace(dataset="imagenet", data_dir=records, num_classes=10)}


def measure(arch, proxy, warmup: int, steps: int) -> dict:
    from mnas.workers.proxy import ProxyTraining, proxy_data

    started = time.perf_counter()
    proxy_data(proxy)
    setup = time.perf_counter() - started
    with ProxyTraining(arch, proxy) as training:
        training.train_to(warmup)
        started, cpu = time.perf_counter(), time.process_time()
        training.train_to(warmup + steps)
        train = steps * proxy.batch_size / (time.perf_counter() - started)
        train_cpu = steps * proxy.batch_size / (time.process_time() - cpu)
        started = time.perf_counter()
        accuracy, _ = training.score()
        score = proxy.heldout / (time.perf_counter() - started)
    return {"setup": setup, "train": train, "train_cpu": train_cpu, "score": score, "accuracy": accuracy}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="times each path is measured, alternating (default 3)")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps of 64 images (default 40)")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps first, tracing included (default 8)")
    parser.add_argument("--images", type=int, default=8000, help="Fashion-MNIST images written to files (8,000)")
    parser.add_argument("--train-subset", type=int, default=5000, help="proxy training subset (default 5,000)")
    parser.add_argument("--heldout", type=int, default=1000, help="proxy held-out sample (default 1,000)")
    parser.add_argument("--write", action="store_true", help="put the table into BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 5 or args.warmup < 2:
        parser.error("need --rounds >= 1, --steps >= 5 and --warmup >= 2")
    if (args.train_subset + args.heldout) * 10 > args.images * 9:
        parser.error("the image folder keeps every 10th image for evaluation: need --train-subset + --heldout "
                     "<= 0.9 x --images")

    from mnas.search.registry import load_architecture

    arch = load_architecture("mnasnet-a1")
    results: dict[str, list[dict]] = {path: [] for path in PATHS}
    with tempfile.TemporaryDirectory(prefix="mnas-streaming-") as folder:
        print(f"[{time.strftime('%H:%M:%S')}] writing {args.images:,} images as PNG files and TFRecords ...",
              file=sys.stderr, flush=True)
        tree, records = write_files(args.images, folder)
        chosen = configs(args, tree, records)
        for number in range(args.rounds):
            for path in PATHS[::-1] if number % 2 else PATHS:     # every other round backwards: no path always first
                row = measure(arch, chosen[path], args.warmup, args.steps)
                results[path].append(row)
                print(f"[{time.strftime('%H:%M:%S')}] round {number + 1}: {path}: {row['train']:.0f} training "
                      f"images/s ({row['train_cpu']:.0f} per CPU s), {row['score']:.0f} scored/s, set-up "
                      f"{row['setup']:.2f} s", file=sys.stderr, flush=True)

    def median(path, key):
        return statistics.median(row[key] for row in results[path])

    reference = PATHS[0]
    lines = [f"`python benchmarks/proxy_streaming.py --rounds {args.rounds} --steps {args.steps} --warmup "
             f"{args.warmup}` -- {machine()}; {today()}. MnasNet-A1 as the default proxy trains it (28x28, width "
             f"0.5, one thread, batches of 64), {args.train_subset:,} training and {args.heldout:,} held-out "
             f"images of Fashion-MNIST; the four paths measured in turn, {args.rounds} rounds, medians (range).", "",
             "| path | data set-up s | training images/s | vs in memory | training images / CPU s | vs in memory "
             "| scoring images/s | vs in memory |",
             "|---|---|---|---|---|---|---|---|"]
    for path in PATHS:
        trains = [row["train"] for row in results[path]]
        lines.append(f"| {path} | {median(path, 'setup'):.2f} | {median(path, 'train'):.0f} ({min(trains):.0f}-"
                     f"{max(trains):.0f}) | {median(path, 'train') / median(reference, 'train'):.2f}x | "
                     f"{median(path, 'train_cpu'):.0f} | "
                     f"{median(path, 'train_cpu') / median(reference, 'train_cpu'):.2f}x | "
                     f"{median(path, 'score'):.0f} | {median(path, 'score') / median(reference, 'score'):.2f}x |")
    lines += ["", "Data set-up: seconds to open the data and draw one child's two subsets. The folder listing and "
                  "the TFRecord index are made once a process and kept, so only a worker's first child pays them."]
    report("\n".join(lines), TAG, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
