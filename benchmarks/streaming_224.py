#!/usr/bin/env python
"""The proxy's input pipeline at 224x224 on JPEGs, streamed beside in memory, and what it costs per trained image.

    python benchmarks/streaming_224.py [--images 1800] [--rounds 5] [--batches 4] [--write]

Complements `benchmarks/proxy_streaming.py` (28x28 PNGs, where decoding costs next to nothing) for the case of
`configs/paper.yaml` (ImageNet TFRecords of JPEGs, cropped to 224x224) and `configs/folder.yaml` (a folder of
the user's JPEGs; it crops them to 64x64).

The data: `--images` synthetic JPEGs of ImageNet's typical size and weight, written to a temporary folder twice,
as an image folder (DIR/class<k>/*.jpg, 10 classes) and as 4 TFRecord shards in the official ImageNet schema
(image/encoded, image/class/label 1-based, image/format). Each image is 350-500 x 280-420 px (30% of them
portrait), a bicubic upsampling of a random 4x4 to 12x12 colour grid plus smooth and pixel-level noise, encoded
at quality 90, so that the files weigh about what ImageNet's do (~110 kB; the mean is printed): JPEG decoding
time grows with both the pixels and the bytes. The in-memory path gets the same images already decoded, centre-
cropped and resized to 224x224 (`trainer.pipelines.eval_preprocess`), as uint8 arrays in an npz file.

What is timed is the input pipeline alone, as the proxy worker builds it, without training: `workers.proxy.
proxy_data` (open the split, draw the subsets; timed as set-up), then `training_batches` of the training subset
(`trainer.splits`), with `configs/paper.yaml`'s proxy settings (224 px, batches of 256, random split) pointed at
the files -- only `train_subset`/`heldout` shrunk to fit the images, and `threads` 1 or 2 -- and a fourth path
with `configs/folder.yaml`'s settings (64 px, batches of 64). Per path: `--warmup` untimed batches (the pipeline's
start, the shuffle buffer's fill), then `--batches` batches timed, all within the first epoch: images per second
(wall) and images per CPU-second of the whole process (tf.data's threads included). Each thread count runs in its
own process (TensorFlow's thread pools are fixed once a process, as in a worker, `trainer.train.
set_up_tensorflow`); every round runs both processes, and the order of the thread counts and of the paths in each
process flips from one round to the next, so the machine's load falls alike on all. Medians over the rounds.

The consumption side: one process trains MnasNet-A1 as paper.yaml's child (`benchmarks/child_cost.py`'s child and
settings: the deployment model at 224x224, paper.yaml's optimizer, by `workers.proxy.ProxyTraining`) on the in-
memory images for `--child-steps` steps of 32 after two untimed ones, wall and CPU time. From both: the CPU the
JPEG input costs per trained image, as a fraction of the CPU the training step costs here, and the CPU cores of
decoding that a GPU training K images/s needs: K / (streamed images per CPU-second, one thread).

Expected duration: ~8 minutes on 2 busy cores (1 minute writing the files, under a minute a round, 1.5 for
the child).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine, report, today  # noqa: E402

TAG = "proxy:streaming-224"
PATHS = ("memory", "tfrecords", "folder", "folder-64")
LABELS = {"memory": "in memory (npz, decoded 224x224 uint8), paper.yaml",
          "tfrecords": "TFRecords (JPEG), paper.yaml",
          "folder": "image folder (JPEG), paper.yaml settings",
          "folder-64": "image folder (JPEG), folder.yaml (64 px, batches of 64)"}
CLASSES = 10
SHARDS = 4
GPU_RATES = (1000, 2000, 3000)     # images/s of an assumed GPU child, for the cores-of-decoding sentence


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# The files

def synthetic_jpeg(rng, tf) -> tuple[bytes, int]:
    """One ImageNet-like JPEG (bytes, pixels): smooth colour regions plus texture, ~110 kB at ~425x350."""
    import numpy as np

    width, height = int(rng.integers(350, 501)), int(rng.integers(280, 421))
    if rng.random() < 0.3:
        width, height = height, width
    grid = int(rng.integers(4, 13))
    base = tf.image.resize(rng.uniform(0, 255, (1, grid, grid, 3)).astype(np.float32), (height, width),
                           method="bicubic")
    smooth = tf.image.resize(rng.normal(0, 50, (1, height // 2 + 1, width // 2 + 1, 3)).astype(np.float32),
                             (height, width))
    grain = rng.normal(0, 22, (1, height, width, 1)).astype(np.float32)
    image = tf.cast(tf.clip_by_value(base + smooth + grain, 0, 255), tf.uint8)[0]
    return tf.io.encode_jpeg(image, quality=90).numpy(), width * height


def write_files(images: int, folder: str) -> dict:
    """The JPEG folder, the TFRecord shards and the decoded 224x224 npz; returns their paths and the JPEGs' sizes."""
    import numpy as np
    from mnas.trainer.pipelines import eval_preprocess
    from mnas.trainer.train import import_tensorflow

    tf = import_tensorflow()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, images)
    tree, records = os.path.join(folder, "jpeg"), os.path.join(folder, "tfrecords")
    for label in range(CLASSES):
        os.makedirs(os.path.join(tree, f"class{label}"))
    os.makedirs(records)
    bounds = np.linspace(0, images, SHARDS + 1).astype(int)
    writers = [tf.io.TFRecordWriter(os.path.join(records, f"train-{shard:05d}-of-{SHARDS:05d}"))
               for shard in range(SHARDS)]
    decoded = np.zeros((images, 224, 224, 3), np.uint8)
    sizes, pixels = [], []
    for number in range(images):
        data, area = synthetic_jpeg(rng, tf)
        sizes.append(len(data))
        pixels.append(area)
        label = int(labels[number])
        with open(os.path.join(tree, f"class{label}", f"{number:06d}.jpg"), "wb") as handle:
            handle.write(data)
        feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                   "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label + 1])),
                   "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"JPEG"]))}
        shard = int(np.searchsorted(bounds, number, side="right")) - 1
        writers[shard].write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        unit = eval_preprocess(tf.constant(data), 224)          # [-1, 1] floats, the trainer's centre crop
        decoded[number] = np.clip(np.round((unit.numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8)
    for writer in writers:
        writer.close()
    npz = os.path.join(folder, "arrays")
    os.makedirs(npz)
    np.savez(os.path.join(npz, "data.npz"), x_train=decoded, y_train=labels.astype(np.int64))
    return {"folder": tree, "records": records, "npz": npz, "kb": float(np.mean(sizes)) / 1e3,
            "pixels": float(np.mean(pixels)), "mb": sum(sizes) / 1e6}


# --------------------------------------------------------------------------------------------------------------
# One process: the input pipelines at one thread count

def proxy_settings(config: str) -> dict:
    import yaml

    return yaml.safe_load(open(os.path.join(ROOT, "configs", config), encoding="utf-8"))["proxy"]


def proxies(files: dict, threads: int, train_subset: int, heldout: int) -> dict:
    from mnas.search.proxy import ProxyConfig

    paper = {**proxy_settings("paper.yaml"), "train_subset": train_subset, "heldout": heldout, "threads": threads}
    folder = {**proxy_settings("folder.yaml"), "data_dir": files["folder"], "train_subset": train_subset,
              "heldout": heldout, "threads": threads}
    return {"memory": ProxyConfig.from_dict({**paper, "dataset": "npz", "data_dir": files["npz"]}),
            "tfrecords": ProxyConfig.from_dict({**paper, "data_dir": files["records"]}),
            "folder": ProxyConfig.from_dict({**paper, "dataset": "folder", "data_dir": files["folder"]}),
            "folder-64": ProxyConfig.from_dict(folder)}


def pipeline_rates(proxy, warmup: int, batches: int) -> dict:
    """Set-up seconds, and images/s and images per CPU-second of `batches` training batches after `warmup`
    (counted in batches of 256: a path with smaller batches times as many images in more batches)."""
    import gc

    from mnas.trainer.splits import as_examples
    from mnas.workers.proxy import proxy_data

    scale = max(1, 256 // proxy.batch_size)
    warmup, batches = warmup * scale, batches * scale
    started = time.perf_counter()
    data = proxy_data(proxy)
    setup = time.perf_counter() - started
    # what ProxyTraining hands to as_examples: arrays in memory, Examples when streamed
    train = (data.train.images, data.train.labels) if not data.split.streamed else data.train
    batches_of = as_examples(train).training_batches(proxy.batch_size, proxy.image_size, proxy.seed,
                                                      warmup + batches, parallel=proxy.threads)
    for _ in range(warmup):
        next(batches_of)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        images, _ = next(batches_of)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert tuple(images.shape[1:]) == (proxy.image_size, proxy.image_size, 3), images.shape
    del batches_of, images, data, train       # the iterators stop before the next path runs
    gc.collect()
    count = batches * proxy.batch_size
    return {"setup": setup, "wall": count / wall, "cpu": count / cpu}


def run_pipelines(spec: dict) -> dict:
    from mnas.trainer.train import set_up_tensorflow

    set_up_tensorflow(spec["threads"])            # as a worker does, before any op
    chosen = proxies(spec["files"], spec["threads"], spec["train_subset"], spec["heldout"])
    results = {}
    for path in spec["order"]:
        results[path] = row = pipeline_rates(chosen[path], spec["warmup"], spec["batches"])
        log(f"  {spec['threads']} thread(s), {path}: {row['wall']:.1f} images/s, {row['cpu']:.1f} per CPU s, "
            f"set-up {row['setup']:.2f} s")
    return results


# --------------------------------------------------------------------------------------------------------------
# One process: the consumption side, a paper.yaml child training at 224

def run_child(spec: dict) -> dict:
    """`benchmarks/child_cost.py`'s measure (its child, its settings), timed in CPU seconds as well as wall."""
    from mnas.search.proxy import ProxyConfig
    from mnas.workers.proxy import ProxyTraining

    from benchmarks.child_cost import child

    batch, steps, threads = spec["batch_size"], spec["steps"], spec["threads"]
    proxy = ProxyConfig.from_dict({**proxy_settings("paper.yaml"), "dataset": "npz", "data_dir": spec["npz"],
                                   "train_subset": batch * 4, "heldout": batch, "batch_size": batch, "epochs": 1,
                                   "steps": steps + 2, "threads": threads, "num_classes": 1000})
    with ProxyTraining(child(spec["child"]), proxy) as training:
        training.train_to(2)                              # tracing and the first steps' warm-up
        started, cpu = time.perf_counter(), time.process_time()
        training.train_to(steps + 2)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"wall": steps * batch / wall, "cpu": steps * batch / cpu}


def in_process(kind: str, spec: dict) -> dict:
    """Runs `kind` ('pipelines' or 'child') in a fresh Python process; returns its JSON result."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), f"--_{kind}", json.dumps(spec)],
                          stdout=subprocess.PIPE, check=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1800, help="synthetic JPEGs written (default 1,800)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of both thread counts (default 5)")
    parser.add_argument("--batches", type=int, default=4,
                        help="timed batches of 256 a path (default 4: 1,024 images; folder.yaml's path times "
                             "as many images in batches of 64)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches of 256 first (default 1)")
    parser.add_argument("--threads", default="1,2", help="tf.data / TensorFlow thread counts (default 1,2)")
    parser.add_argument("--child", default="mnasnet-a1", help="the consuming child (child_cost.py's names)")
    parser.add_argument("--child-steps", type=int, default=4, help="timed training steps of 32 (default 4)")
    parser.add_argument("--child-threads", type=int, default=2, help="the child's threads (default 2)")
    parser.add_argument("--write", action="store_true", help="put the results into BENCHMARKS.md (proxy:streaming-224)")
    parser.add_argument("--_pipelines", help=argparse.SUPPRESS)
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._pipelines or args._child:
        result = run_pipelines(json.loads(args._pipelines)) if args._pipelines else run_child(json.loads(args._child))
        print(json.dumps(result))
        return 0

    threads = [int(t) for t in args.threads.split(",")]
    batch = proxy_settings("paper.yaml")["batch_size"]
    train_subset = (args.warmup + args.batches + 1) * batch        # the timed batches stay inside one epoch
    heldout = 64
    if (train_subset + heldout) * 10 > args.images * 9:
        parser.error(f"need --images >= {-(-(train_subset + heldout) * 10 // 9)} for {args.warmup} + "
                     f"{args.batches} batches of {batch} in one epoch (the folder keeps every 10th image aside)")
    began, load_start = time.time(), os.getloadavg()
    results = {t: {path: [] for path in PATHS} for t in threads}
    loads = []
    with tempfile.TemporaryDirectory(prefix="mnas-streaming-224-") as folder:
        log(f"writing {args.images:,} JPEGs as a folder, TFRecords and decoded arrays ...")
        files = write_files(args.images, folder)
        log(f"  mean {files['kb']:.0f} kB, {files['pixels'] / 1e3:.0f}k pixels a JPEG ({files['mb']:.0f} MB)")
        for number in range(args.rounds):
            flip = number % 2 == 1
            for t in threads[::-1] if flip else threads:
                order = PATHS[::-1] if flip else PATHS
                spec = {"threads": t, "order": order, "warmup": args.warmup, "batches": args.batches,
                        "train_subset": train_subset, "heldout": heldout,
                        "files": {k: files[k] for k in ("folder", "records", "npz")}}
                log(f"round {number + 1}, {t} thread(s), load {os.getloadavg()[0]:.1f}")
                loads.append(os.getloadavg()[0])
                for path, row in in_process("pipelines", spec).items():
                    results[t][path].append(row)
        log(f"the child: {args.child}, {args.child_threads} threads, {args.child_steps} steps of 32 at 224 ...")
        trained = in_process("child", {"child": args.child, "npz": files["npz"], "batch_size": 32,
                                       "steps": args.child_steps, "threads": args.child_threads})
        log(f"  {trained['wall']:.2f} training images/s, {trained['cpu']:.2f} per CPU s")
    minutes = (time.time() - began) / 60

    def median(t, path, key):
        return statistics.median(row[key] for row in results[t][path])

    lines = [(f"`python benchmarks/streaming_224.py --images {args.images} --rounds {args.rounds} --batches "
             f"{args.batches} --warmup {args.warmup}` -- {machine()} (load {load_start[0]:.1f} at the start, "
             f"{min(loads):.1f}-{max(loads):.1f} at the rounds' starts); {today()}; {minutes:.0f} minutes. "
             f"{args.images:,} synthetic JPEGs (mean {files['pixels'] / 1e3:.0f}k pixels, 350-500 x 280-420 px, "
             f"{files['kb']:.0f} kB: smooth colour fields plus texture at quality 90) as an image folder and as "
             f"{SHARDS} ImageNet-schema TFRecord shards; in memory, the same images decoded and centre-cropped to "
             f"224x224 uint8 (npz). The proxy's input pipeline alone (`proxy_data`, then `training_batches` as the "
             f"worker builds them, no training), `configs/paper.yaml`'s proxy (224 px, batches of {batch}, random "
             f"split) but {train_subset:,} training images; the last row `configs/folder.yaml`'s (64 px, batches "
             f"of 64). {args.batches} batches of {batch} timed after {args.warmup} (folder.yaml's path: as many "
             f"images in batches of 64), each thread count in its own process, "
             f"{args.rounds} rounds alternating the order; medians (range). Files read from the page cache."), "",
             ("| path | threads | data set-up s | images/s | vs in memory | images / CPU s | vs in memory | "
             "CPU ms / image |"), "|---|---|---|---|---|---|---|---|"]
    for t in threads:
        for path in PATHS:
            walls = [row["wall"] for row in results[t][path]]
            lines.append(f"| {LABELS[path]} | {t} | {median(t, path, 'setup'):.2f} | {median(t, path, 'wall'):.0f} "
                         f"({min(walls):.0f}-{max(walls):.0f}) | "
                         f"{median(t, path, 'wall') / median(t, 'memory', 'wall'):.3f}x | "
                         f"{median(t, path, 'cpu'):.0f} | "
                         f"{median(t, path, 'cpu') / median(t, 'memory', 'cpu'):.3f}x | "
                         f"{1e3 / median(t, path, 'cpu'):.2f} |")
    one = threads[0] if 1 not in threads else 1
    stream_cpu = min(median(one, "tfrecords", "cpu"), median(one, "folder", "cpu"))     # the dearer of the two
    jpeg_ms = 1e3 / stream_cpu - 1e3 / median(one, "memory", "cpu")
    child_ms = 1e3 / trained["cpu"]
    cores = ", ".join(f"K = {k:,}: {k / stream_cpu:.1f}" for k in GPU_RATES)
    lines += ["", (f"The consumer: {args.child} as paper.yaml's child (`benchmarks/child_cost.py`'s settings, the "
                  f"deployment model at 224x224, by `workers.proxy.ProxyTraining`) trained {trained['wall']:.2f} "
                  f"images/s on {args.child_threads} threads, {child_ms:.0f} CPU ms an image ({args.child_steps} "
                  "steps of 32 after 2 untimed, in-memory images)."), "",
              (f"Per trained image, the JPEG input ({one} thread, the dearer streamed path) costs "
               f"{1e3 / stream_cpu:.1f} CPU ms, {jpeg_ms:.1f} ms more than the decoded arrays: "
               f"{100 * jpeg_ms / child_ms:.1f}% of the {child_ms:.0f} CPU ms the training step costs on this CPU. "
               f"A GPU child that trains K images/s needs K / {stream_cpu:.0f} cores of this CPU to decode for it "
               f"({cores} cores; K is an assumption, not a measurement).")]
    if 1 in threads and 2 in threads:
        speedup = statistics.median(median(2, path, "wall") / median(1, path, "wall") for path in PATHS[1:3])
        extra = statistics.median(median(1, path, "cpu") / median(2, path, "cpu") for path in PATHS[1:3])
        lines += ["", (f"Two threads against one: the streamed 224 paths delivered {speedup:.2f}x the images per "
                      f"second at {extra:.2f}x the CPU per image (one process a thread count, on 2 busy cores).")]
    lines += ["", (f"folder.yaml's 64 px path: {1e3 / median(one, 'folder-64', 'cpu'):.1f} CPU ms an image against "
                  f"{1e3 / median(one, 'folder', 'cpu'):.1f} at 224 ({one} thread): the decode of the whole JPEG "
                  "is paid whatever the crop's size. Not timed: scoring (the centre crop; 50,000 held-out images "
                  "a paper.yaml child, under 1% of its 6,155,835 training images) and reading from a disk or a "
                  "network file system rather than the page cache.")]
    report("\n".join(lines), TAG, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
