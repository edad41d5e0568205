"""Benchmark: where the trainer's step costs more than a plain `model.fit` -- the weight average and the L2 term.

Trains MnasNet-A1 x0.5 on the first 12,800 Fashion-MNIST images (100 steps of 128, one epoch) three ways --
the full recipe, without the weight average (--ema-decay 0), and without the average and the L2 penalty --
and prints the epoch's images/s (tracing included, the same for all three). Figures in BENCHMARKS.md.
About 3 minutes on 2 cores.

    python benchmarks/train_overhead.py --out /tmp/train-overhead
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mnasnet-a1", help="any `train --arch` (default %(default)s)")
    parser.add_argument("--width", type=float, default=0.5, help="multiplies the model's width (default %(default)s)")
    parser.add_argument("--train-limit", type=int, default=12800, help="training images, one epoch of batch 128 "
                                                                       "(default %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default %(default)s)")
    parser.add_argument("--out", default="/tmp/train-overhead", help="one folder a variant (default %(default)s)")
    args = parser.parse_args(argv)

    from mnas.trainer.recipe import Recipe
    from mnas.trainer.replay import resolve_arch
    from mnas.trainer.train import TrainConfig, open_data, set_up_tensorflow, train

    set_up_tensorflow(args.threads)
    arch = resolve_arch(args.arch).arch
    arch = arch.replace(depth_multiplier=arch.depth_multiplier * args.width)
    variants = {"full recipe": Recipe(), "no weight average": Recipe(ema_decay=0.0),
                "no average, no L2": Recipe(ema_decay=0.0, weight_decay=0.0)}
    data = None
    for name, recipe in variants.items():
        config = TrainConfig(arch=arch, epochs=1, batch_size=128, recipe=recipe, train_limit=args.train_limit,
                             eval_limit=1000)
        data = data or open_data(config)
        out = os.path.join(args.out, name.replace(" ", "-").replace(",", ""))
        summary = train(config, out, threads=args.threads, data=data, log=lambda _: None)
        print(f"| {name} | {summary['final']['images_per_second']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
