"""`describe ARCH`: the per-layer table of an architecture, with analytic params and multiply-adds."""

from __future__ import annotations

import json

HELP = "print an architecture layer by layer: shapes, ops, parameters, multiply-adds"
DESCRIPTION = """Print an architecture layer by layer, with parameters and multiply-adds counted analytically
(no model is built, no TensorFlow is imported).

ARCH is a registry name (mnasnet-a1, mnasnet-b1, mnasnet-small, mnasnet-d1, mnasnet-d1-320, mobilenetv2), a
path to a text file with one block string a line (optional lines 'stem: N' and 'head: N'), block strings
given inline in quotes, or a child of a search: RUN_DIR:RANK (by reward) or RUN_DIR:pareto:I (the I-th of the
Pareto front, fastest first), as `results RUN_DIR` numbers them -- every command reads ARCH the same way.

Params are trainable parameters as the paper counts them; 'weights' adds batch norm's moving statistics (what
Keras count_params() reports)."""


def add_arguments(parser):
    parser.add_argument("arch", metavar="ARCH", help="registry name, block-string file, inline block strings, "
                                                     "RUN_DIR:RANK or RUN_DIR:pareto:I")
    parser.add_argument("--resolution", type=int, default=None, help="input size (default: the architecture's, 224)")
    parser.add_argument("--depth-multiplier", type=float, default=None,
                        help="width multiplier with the official rounding (default: the architecture's, 1.0)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier width (default 1000)")
    parser.add_argument("--input-channels", type=int, default=3, help="image channels (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def resolve(args):
    """The architecture named by args.arch (any ARCH form: trainer.replay.resolve_arch, the one resolver of every
    command) with --resolution / --depth-multiplier applied."""
    from mnas.search.arch import MAX_DEPTH_MULTIPLIER
    from mnas.trainer.replay import resolve_arch

    arch = resolve_arch(args.arch).arch
    changes = {}
    if args.resolution is not None:
        if args.resolution < 1:
            raise ValueError(f"--resolution must be a positive integer, got {args.resolution}")
        changes["resolution"] = args.resolution
    if args.depth_multiplier is not None:
        if not 0 < args.depth_multiplier <= MAX_DEPTH_MULTIPLIER:  # inf and NaN too
            raise ValueError(f"--depth-multiplier must be positive and at most {MAX_DEPTH_MULTIPLIER:g}, "
                             f"got {args.depth_multiplier:g}")
        changes["depth_multiplier"] = args.depth_multiplier
    return arch.replace(**changes) if changes else arch


def run(args) -> int:
    from mnas.search.counts import count, profile

    if args.num_classes < 1 or args.input_channels < 1:
        raise ValueError("--num-classes and --input-channels must be positive integers")
    arch = resolve(args)
    rows = profile(arch, args.num_classes, args.input_channels)
    totals = count(arch, args.num_classes, args.input_channels)
    if args.json:
        print(json.dumps({
            "arch": args.arch, "blocks": list(arch.block_strings), "stem_filters": arch.stem_filters,
            "head_filters": arch.head_filters, "resolution": arch.resolution,
            "depth_multiplier": arch.depth_multiplier, "dropout": arch.dropout, "num_classes": args.num_classes,
            "params": totals.params, "weights": totals.weights, "madds": totals.madds,
            "layers": [row._asdict() for row in rows],
        }, indent=2))
        return 0
    print(f"{args.arch}: resolution {arch.resolution}, depth multiplier {arch.depth_multiplier:g}, "
          f"stem {arch.scaled_stem()}, head {arch.head_filters}, dropout {arch.dropout:g}")
    for text in arch.block_strings:
        print(f"  {text}")
    header = f"{'layer':<11} {'input':>13} {'op':<8} {'k':>2} {'s':>2} {'expand':>6} {'se':>4} {'skip':<8} " \
             f"{'params':>10} {'madds':>13}"
    print(header)
    print("-" * len(header))
    for row in rows:
        shape = f"{row.in_hw}x{row.in_hw}x{row.in_filters}"
        print(f"{row.name:<11} {shape:>13} {row.op:<8} {row.kernel:>2} {row.stride:>2} {row.expand_filters:>6} "
              f"{row.se_filters or '-':>4} {row.skip:<8} {row.params - 2 * row.bn_channels:>10,} {row.madds:>13,}")
    print("-" * len(header))
    print(f"total: {totals.params:,} params ({totals.params / 1e6:.2f}M), {totals.madds:,} multiply-adds "
          f"({totals.madds / 1e6:.1f}M); {totals.weights:,} weights with batch-norm statistics")
    return 0
