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
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR",
                        help="a `train` run directory (its config.json and checkpoint.npz)")
    parser.add_argument("--export-dir", default=None, metavar="DIR",
                        help="where to write: a new folder or a previous export (default RUN_DIR/export)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="the dataset's folder, if it moved since training")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 model")
    parser.add_argument("--weight-only", action="store_true",
                        help="also write a weight-only (dynamic-range) quantized model, model_dynamic.tflite")
    parser.add_argument("--representative", type=int, default=256, metavar="N",
                        help="training images that calibrate int8 activations (default 256)")
    parser.add_argument("--raw-weights", action="store_true", help="export the raw weights, not the average")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="TensorFlow and LiteRT threads (default: every core)")


def run(args) -> int:
    from mnas.commands.train import check_export_options, export_formats
    from mnas.trainer.export import check_export_dir, export_model
    from mnas.trainer.train import load_trained

    run_dir = args.checkpoint
    if not os.path.isdir(run_dir):
        raise ValueError(f"no such run directory: {run_dir}")
    export_dir = args.export_dir or os.path.join(run_dir, "export")
    check_export_options(args)
    check_export_dir(export_dir)
    model, _, data = load_trained(run_dir, averaged=not args.raw_weights, threads=args.threads,
                                  data_dir=args.data_dir)
    export_model(model, data, export_dir, export_formats(args), args.representative, threads=args.threads)
    return 0
