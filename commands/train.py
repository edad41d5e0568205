"""`train --arch ARCH`: full training of an architecture with the MnasNet recipe, then (optionally) export."""

from __future__ import annotations

import os

HELP = "train an architecture (registry name, block strings, or a search's child) with the paper's recipe"
DESCRIPTION = """Train an architecture fully, with the recipe of the MnasNet paper and official trainer as defaults:
RMSProp (decay 0.9, momentum 0.9, epsilon 1e-3), learning rate 0.016 per 256 images (scaled with --batch-size),
linear warm-up over 5 epochs (at most a tenth of the run), x0.97 every 2.4 epochs, weight decay 1e-5 (L2 on
non-batch-norm weights), label smoothing 0.1, batch-norm momentum 0.99, the architecture's dropout (0.2 for
MnasNet-A1), and an exponential moving average of the weights (decay 0.9999 with the official warm-up
min(decay, (1+t)/(10+t)), which makes it average about the last 11% of a short run) used for evaluation and export.
Every value can be overridden (the recipe options below). Evaluation reports top-1 and top-5 (from 6 classes)
after every epoch. The last lines say which accuracy to read -- the averaged weights' -- and warn when the run is
too short (under 1,000 steps) for any of its accuracies to measure the architecture, with the --epochs that would.

ARCH: a registry name (mnasnet-a1, mnasnet-small, ...), a file of block strings, block strings inline in quotes,
or a child of a search: RUN_DIR:RANK (1-based, by reward among 'ok' children) or RUN_DIR:pareto:I (the I-th
child of the Pareto front by increasing latency) -- the 'rank' and 'pareto' columns of `results RUN_DIR` and of
the dashboard, whose replay commands these are.

Datasets: fashion-mnist (default: Debian's IDX files, 28x28 grey, evaluated on its 10,000 test images), cifar /
cifar100 (the python pickle batches, or one .npz of x_train, y_train, x_test, y_test), imagenet (TFRecord shards
train-* and validation-* with image/encoded and image/class/label; Inception crops), folder (DIR/train/<class>/
and DIR/val/<class>/ images; or DIR/<class>/ with every 10th image held out). Images below 64 pixels train with
the stem's stride removed (--stem-stride to choose).

Devices and clusters. --batch-size is the global batch, split evenly over every replica, and the learning rate
follows it (0.016 per 256 images). One GPU or a CPU trains as is; a machine with several GPUs trains on all of
them (MirroredStrategy), or on the first --devices N. --workers N trains on N processes with Ray Train
(MultiWorkerMirroredStrategy): a local Ray cluster over this machine, or the cluster at --address (the run
directory and the data must then be on storage every node sees); each worker takes --devices GPUs (default one
on a cluster with GPUs, else its CPU) and --threads CPUs. Worker 0 writes the run directory; a worker that dies
restarts the group from the last checkpoint; --resume works with or without workers. --mixed-precision (GPUs
only) trains in float16 with float32 weights; --sync-bn computes batch norm's statistics over the global batch.

The run directory (--out, default runs/train/<name>-<dataset>) gets config.json, checkpoint.npz after every epoch,
metrics.csv (pandas.read_csv), summary.json and tensorboard/. After a crash, run the same command with --resume.
Training, evaluation and LiteRT runs show a progress bar on a terminal (a line a minute in a log file).
--export-dir DIR then writes a SavedModel, float32 and int8 TFLite models (--weight-only adds a dynamic-range one)
and their LiteRT accuracy beside the Keras model's (see `export --help`)."""


# Every Recipe field and the option that overrides it (a test checks that none is missing).
RECIPE_FLAGS: dict[str, tuple[str, str]] = {
    "base_lr": ("--lr", "peak learning rate per --lr-batch images"),
    "lr_batch": ("--lr-batch", "images --lr is given for: the run's peak is lr x batch-size / lr-batch"),
    "warmup_epochs": ("--warmup-epochs", "linear warm-up epochs, at most a tenth of --epochs"),
    "decay_rate": ("--lr-decay-rate", "learning-rate decay factor"),
    "decay_epochs": ("--lr-decay-epochs", "epochs between decays"),
    "rho": ("--rmsprop-decay", "RMSProp decay of the squared-gradient average"),
    "momentum": ("--momentum", "RMSProp momentum"),
    "epsilon": ("--rmsprop-epsilon", "RMSProp epsilon"),
    "weight_decay": ("--weight-decay", "L2 weight decay on non-batch-norm weights"),
    "label_smoothing": ("--label-smoothing", "label smoothing"),
    "dropout": ("--dropout", "dropout before the classifier"),
    "bn_momentum": ("--bn-momentum", "batch-norm momentum"),
    "ema_decay": ("--ema-decay", "weight-average decay cap, with the official warm-up; 0 turns it off"),
}


def add_arguments(parser):
    from mnas.trainer.recipe import Recipe

    parser.add_argument("--arch", required=True, metavar="ARCH",
                        help="registry name, block-string file, inline block strings, RUN_DIR:RANK or RUN_DIR:pareto:I")
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help="fashion-mnist (default), cifar, cifar100, imagenet or folder")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="the dataset's folder (default: Debian's Fashion-MNIST; data/cifar for CIFAR)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N", help="epochs (default 350, the paper's)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B",
                        help="images per step over every device and worker: the global batch (default 128); the "
                             "learning rate scales with it")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="run directory (default runs/train/<arch name>-<dataset>)")
    parser.add_argument("--export-dir", default=None, metavar="DIR",
                        help="after training, export SavedModel and TFLite models here (see `export --help`)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint (same settings; --epochs may grow)")
    group = parser.add_argument_group("data and model")
    group.add_argument("--image-size", type=int, default=None, metavar="PIXELS",
                       help="image side (default: native 28/32 for arrays, the architecture's 224 for files)")
    group.add_argument("--fit", choices=("resize", "pad"), default=None,
                       help="how array images reach --image-size (default resize)")
    group.add_argument("--stem-stride", type=int, choices=(1, 2), default=None,
                       help="stem stride (default 1 below 64 pixels, else the architecture's)")
    group.add_argument("--depth-multiplier", type=float, default=None, metavar="D",
                       help="width multiplier (official rounding)")
    group.add_argument("--num-classes", type=int, default=None, metavar="N",
                       help="classes of an imagenet dataset (default 1000)")
    group.add_argument("--train-limit", type=int, default=None, metavar="N", help="use only the first N training images")
    group.add_argument("--eval-limit", type=int, default=None, metavar="N",
                       help="use only the first N evaluation images")
    group.add_argument("--seed", type=int, default=None, help="seed of weights, data order, augmentation (default 0)")
    group.add_argument("--threads", type=int, default=0, metavar="N",
                       help="TensorFlow threads (default: every core); with --workers, each worker's (and its CPUs)")
    cluster = parser.add_argument_group("devices and clusters (--batch-size stays the global batch)")
    cluster.add_argument("--devices", type=int, default=None, metavar="N",
                         help="local devices to replicate over (default: every GPU, or the CPU); with --workers, "
                              "GPUs per worker")
    cluster.add_argument("--workers", type=int, default=None, metavar="N",
                         help="train on N Ray Train workers (multi-worker mirrored), on a local Ray or --address")
    cluster.add_argument("--address", default=None, metavar="ADDR",
                         help="the Ray cluster to run --workers on (e.g. HEAD_IP:6379 or auto; default: a local Ray)")
    cluster.add_argument("--mixed-precision", action="store_true",
                         help="mixed_float16: float16 math, float32 weights (GPUs only)")
    cluster.add_argument("--sync-bn", action="store_true",
                         help="batch-norm statistics over the global batch, not each replica's slice")
    recipe = parser.add_argument_group("recipe overrides (defaults: the paper's and the official trainer's)")
    defaults = Recipe()
    for field, (flag, text) in RECIPE_FLAGS.items():
        default = getattr(defaults, field)
        shown = "the architecture's: 0.2 for MnasNet-A1" if default is None else f"{default:g}"
        integer = isinstance(default, int)
        recipe.add_argument(flag, dest=field, type=int if integer else float, default=None,
                            metavar="N" if integer else "X", help=f"{text} (default {shown})")
    export = parser.add_argument_group("export (with --export-dir)")
    export.add_argument("--no-int8", action="store_true", help="skip the int8 post-training-quantized model")
    export.add_argument("--weight-only", action="store_true",
                        help="also write a weight-only (dynamic-range) quantized model, model_dynamic.tflite")
    export.add_argument("--representative", type=int, default=256, metavar="N",
                        help="training images that calibrate int8 activations (default 256)")


def export_formats(args) -> tuple[str, ...]:
    return ("float32",) + (() if args.no_int8 else ("int8",)) + (("dynamic",) if args.weight_only else ())


def check_export_options(args) -> None:
    if args.representative < 1:
        raise ValueError(f"--representative must be a positive integer, got {args.representative}")


def build_config(args):
    """TrainConfig from the command line; raises ValueError on any bad value before anything is written."""
    from mnas.trainer.recipe import Recipe
    from mnas.search.arch import MAX_DEPTH_MULTIPLIER
    from mnas.trainer.replay import resolve_arch
    from mnas.trainer.train import TrainConfig

    resolved = resolve_arch(args.arch)
    arch = resolved.arch
    if args.depth_multiplier is not None:
        if not 0 < args.depth_multiplier <= MAX_DEPTH_MULTIPLIER:  # inf and NaN too
            raise ValueError(f"--depth-multiplier must be positive and at most {MAX_DEPTH_MULTIPLIER:g}, "
                             f"got {args.depth_multiplier:g}")
        arch = arch.replace(depth_multiplier=args.depth_multiplier)
    recipe = Recipe(**{k: getattr(args, k) for k in RECIPE_FLAGS if getattr(args, k) is not None})
    given = {k: getattr(args, k) for k in ("dataset", "data_dir", "epochs", "batch_size", "image_size", "fit",
                                           "stem_stride", "num_classes", "train_limit", "eval_limit", "seed")
             if getattr(args, k) is not None}
    config = TrainConfig(arch=arch, recipe=recipe, arch_source=resolved.source,
                         mixed_precision=bool(getattr(args, "mixed_precision", False)),
                         sync_bn=bool(getattr(args, "sync_bn", False)), **given)
    return config, resolved.slug


def run(args) -> int:
    from pathlib import Path

    from mnas.trainer.ray_replay import check_options
    from mnas.trainer.train import open_data, reading, set_up_tensorflow, train

    check_export_options(args)
    check_options(args.workers, args.address, args.devices)
    config, slug = build_config(args)  # a bad ARCH or value fails here, before TensorFlow is even imported
    out = args.out or os.path.join("runs", "train", f"{slug}-{config.dataset}")  # one child on two datasets: two
    if args.export_dir:
        from mnas.trainer.export import check_export_dir

        export_dir, run_dir = check_export_dir(args.export_dir), Path(out).absolute()
        if export_dir == run_dir or export_dir in run_dir.parents:
            raise ValueError(f"--export-dir {args.export_dir} would replace the run directory {out}: "
                             "choose another folder (RUN_DIR/export is fine)")
    # Before any TensorFlow op runs (thread pools and GPU memory are fixed at the first). The driver of a Ray run
    # trains nothing: its workers check mixed precision against their own GPUs.
    tf = set_up_tensorflow(args.threads, config.mixed_precision and not args.workers)
    replicas = placement = None
    if args.workers:
        from mnas.trainer.ray_replay import plan_workers

        # more workers than the cluster can place fails here (a local cluster: before Ray starts)
        placement = plan_workers(config, args.workers, args.devices, args.threads, args.address)
    else:
        from mnas.trainer.distributed import check_global_batch, local_replicas

        replicas = local_replicas(tf, args.devices)  # more --devices than the machine has fails here
        check_global_batch(config.batch_size, replicas)
    data = open_data(config)  # a missing or malformed dataset fails here, before the run directory exists
    spread = ""
    if replicas is not None:
        from mnas.trainer.devices import short

        spread = (f" on {replicas.count} devices ({', '.join(map(short, replicas.strategy.extended.worker_devices))}"
                  f", {config.batch_size // replicas.count} images each a step)")
    print(f"training {config.arch_source} on {data.name} ({data.num_train} training, {data.num_eval} evaluation "
          f"images of {'x'.join(map(str, data.image_shape))}) for {config.epochs} epochs{spread} -> {out}", flush=True)
    if args.workers:
        from mnas.trainer.ray_replay import train_on_ray

        summary = train_on_ray(config, out, placement, resume=args.resume, threads=args.threads,
                               address=args.address, data=data)
    else:
        summary = train(config, out, resume=args.resume, threads=args.threads, data=data, devices=args.devices,
                        replicas=replicas)
    for line in reading(summary, config):
        print(line)
    if summary["final"]:
        print(f"metrics: {os.path.join(out, 'metrics.csv')}")
    if args.export_dir:
        import contextlib

        from mnas.trainer.export import export_model

        if args.workers or replicas is not None or config.mixed_precision:
            # The model was trained elsewhere, or its variables are mirrored, or it computes in float16: export a
            # float32 model rebuilt from the checkpoint's averaged weights.
            from mnas.trainer.train import load_trained

            model, ema = load_trained(out, averaged=True, data=data, threads=args.threads)[0], None
        else:
            model, ema = summary["model"], summary["ema"]
        with ema.swapped() if ema is not None else contextlib.nullcontext():  # export what was evaluated
            export_model(model, data, args.export_dir, export_formats(args), args.representative,
                         threads=args.threads)
    return 0

