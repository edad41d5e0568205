"""`export --checkpoint RUN_DIR`: SavedModel + TFLite (float32, int8) of a trained run, with LiteRT accuracy."""

from __future__ import annotations

import os

HELP = "export a trained run to SavedModel and TFLite (float32, int8) and report each model's accuracy"
DESCRIPTION = """Export the last checkpoint of a `train` run (its averaged weights, as the paper evaluates them;
--raw-weights for the others): a SavedModel, a float32 TFLite model, and an int8 post-training-quantized TFLite
model (weights and activations, int8 input and output; activation ranges calibrated on --representative images
of the training set), plus with --weight-only a dynamic-range model (int8 weights, float activations). Each
TFLite model then runs in LiteRT over the run's evaluation set and its top-1 / top-5 are printed beside the
Keras model's, with the share of images where it predicts the same class. The table is saved as export.json."""


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="a `train` run directory")
    parser.add_argument("--export-dir", default=None, help="where to write (default RUN_DIR/export)")
    parser.add_argument("--data-dir", default=None, help="the dataset's folder, if it moved since training")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 model")
    parser.add_argument("--weight-only", action="store_true", help="also write a dynamic-range quantized model")
    parser.add_argument("--representative", type=int, default=256, help="calibration images (default 256)")
    parser.add_argument("--raw-weights", action="store_true", help="export the raw weights, not the average")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow and LiteRT threads (default: all)")


def run(args) -> int:
    import dataclasses

    from commands.train import export_formats
    from trainer import checkpoint as ckpt
    from trainer.export import export_model
    from trainer.train import TrainConfig, load_trained, open_data, set_up_tensorflow

    if args.representative < 1:
        raise ValueError(f"--representative must be a positive integer, got {args.representative}")
    run_dir = args.checkpoint
    if not os.path.isdir(run_dir):
        raise ValueError(f"no such run directory: {run_dir}")
    config_path = os.path.join(run_dir, ckpt.CONFIG)
    if not os.path.isfile(config_path):
        raise ValueError(f"{run_dir}: not a training run ({ckpt.CONFIG} missing)")
    saved = ckpt.read_json(config_path)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig.from_dict({k: v for k, v in saved.items() if k in names})
    if args.data_dir:
        config = dataclasses.replace(config, data_dir=args.data_dir)
    set_up_tensorflow(args.threads)
    data = open_data(config)
    model, _, data = load_trained(run_dir, averaged=not args.raw_weights, data=data, threads=args.threads)
    export_model(model, data, args.export_dir or os.path.join(run_dir, "export"), export_formats(args),
                 args.representative, threads=args.threads)
    return 0
