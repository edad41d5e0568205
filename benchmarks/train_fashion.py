"""Benchmark: full training of found architectures on Fashion-MNIST, a plain `model.fit` beside it, and the
accuracy of their float32 and int8 TFLite exports (issue 5, "Done means"; figures in BENCHMARKS.md).

For each architecture: `trainer.train.train` with the paper's recipe (defaults of `launch.py train`) for
--epochs epochs on the 60,000 training images at 28x28 (stem stride removed, see trainer/train.py), evaluated
on the 10,000 test images with the averaged weights; then the same model trained by a plain `model.fit`
(same optimizer, schedule, label smoothing; no weight average, no L2 term; `jit_compile=False`, since Keras'
default 'auto' compiles with XLA on TensorFlow, measured 7x slower on this project's CPUs) for --fit-steps steps
to compare throughput; then `trainer.export.export_model` (SavedModel, float32, int8 calibrated on 256 training
images) with LiteRT evaluation on the test set.

    python benchmarks/train_fashion.py --arch mnasnet-a1 --arch /tmp/fresh/runs/default:1 --width 0.5 \
        --epochs 3 --out /tmp/train-bench

Images/s of the trainer are the median over epochs 2.. (epoch 1 includes tracing); of `fit`, the steps after
the first 10 (tracing excluded). Writes OUT/results.json and prints a Markdown table. About 4 minutes an epoch
for each model at width 0.5 on 2 threads (~300 training images/s), plus a few minutes for its exports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import timed_fit  # noqa: E402


def fit_images_per_second(config, data, steps: int, warmup: int = 10) -> float:
    """Throughput of a plain Keras `model.fit` of the same model, optimizer and loss (tracing excluded)."""
    import keras
    import tensorflow as tf

    from mnas.trainer.recipe import make_optimizer, make_schedule
    from mnas.trainer.train import build

    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(config.seed)
    model = build(config, data)
    recipe = config.recipe
    schedule = make_schedule(recipe, config.batch_size, data.steps_per_epoch(config.batch_size), config.epochs)
    model.compile(make_optimizer(recipe, schedule), jit_compile=False,
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing),
                  metrics=["accuracy"])
    batches = data.train(config.batch_size, config.seed, 0).repeat().take(steps + warmup)
    batches = batches.map(lambda x, y: (x, tf.one_hot(y, data.num_classes)))
    return timed_fit(model, batches, steps, warmup, config.batch_size)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", required=True,
                        help="any `train --arch` (a model name, a block-string file, RUN_DIR:RANK); repeatable")
    parser.add_argument("--width", type=float, default=0.5, help="multiplies each model's width (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="trainer epochs (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128, help="default %(default)s")
    parser.add_argument("--fit-steps", type=int, default=150, help="steps of the plain model.fit timed beside the "
                                                                   "trainer (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default %(default)s)")
    parser.add_argument("--out", default="/tmp/train-bench", help="one folder a model, and results.json "
                                                                  "(default %(default)s)")
    parser.add_argument("--train-limit", type=int, default=None, help="smoke runs: first N training images")
    parser.add_argument("--eval-limit", type=int, default=None, help="smoke runs: first N test images")
    args = parser.parse_args(argv)

    import pandas as pd

    from mnas.trainer.export import export_model
    from mnas.trainer.replay import resolve_arch
    from mnas.trainer.train import TrainConfig, open_data, set_up_tensorflow, train

    set_up_tensorflow(args.threads)
    results = []
    for spec in args.arch:
        resolved = resolve_arch(spec)
        arch = resolved.arch.replace(depth_multiplier=resolved.arch.depth_multiplier * args.width)
        config = TrainConfig(arch=arch, epochs=args.epochs, batch_size=args.batch_size, arch_source=spec,
                             train_limit=args.train_limit, eval_limit=args.eval_limit)
        data = open_data(config)
        out = os.path.join(args.out, resolved.slug)
        started = time.perf_counter()
        # A run already in OUT (an earlier invocation that stopped after training) is reloaded, not retrained.
        summary = train(config, out, threads=args.threads, data=data,
                        resume=os.path.exists(os.path.join(out, "config.json")))
        train_wall = time.perf_counter() - started
        model, ema = summary["model"], summary["ema"]
        with ema.swapped():
            report = export_model(model, data, os.path.join(out, "export"), ("float32", "int8"), 256,
                                  threads=args.threads)
        history = pd.read_csv(os.path.join(out, "metrics.csv")).to_dict("records")  # what a user would open
        speeds = [row["images_per_second"] for row in history[1:]] or [history[0]["images_per_second"]]
        fit_speed = fit_images_per_second(config, data, args.fit_steps)
        results.append({
            "arch": spec, "blocks": list(arch.block_strings), "width": arch.depth_multiplier,
            "model_arch": summary["model_arch"], "params": summary["params"], "epochs": args.epochs,
            "batch_size": args.batch_size, "eval_top1": summary["final"]["eval_top1"],
            "eval_top5": summary["final"]["eval_top5"], "raw_eval_top1": summary["final"]["raw_eval_top1"],
            "history": history, "train_wall_seconds": train_wall,
            "trainer_images_per_second": statistics.median(speeds), "fit_images_per_second": fit_speed,
            "export": report})
        with open(os.path.join(args.out, "results.json"), "w") as handle:
            json.dump(results, handle, indent=2)
    print("| model | params | epochs | test top-1 (EMA) | raw top-1 | trainer img/s | model.fit img/s | "
          "float32 TFLite top-1 | int8 TFLite top-1 | int8 same class |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rows = {row["format"]: row for row in r["export"]["formats"]}
        print(f"| {r['arch']} x{r['width']:g} | {r['params'] / 1e6:.2f}M | {r['epochs']} | "
              f"{100 * r['eval_top1']:.2f}% | {100 * r['raw_eval_top1']:.2f}% | "
              f"{r['trainer_images_per_second']:.0f} | {r['fit_images_per_second']:.0f} | "
              f"{100 * rows['float32']['top1']:.2f}% | {100 * rows['int8']['top1']:.2f}% | "
              f"{100 * rows['int8']['agreement']:.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
