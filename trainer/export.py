"""Export of a trained model for phones, and the accuracy each exported form keeps.

The official release ships every MnasNet as a SavedModel, a float TFLite model and a post-training-quantized
TFLite model. `export_model` writes the same three from a trained Keras model (the averaged weights, when the
run kept an average):

    saved_model/            the Keras model as a TensorFlow SavedModel (serving signature: float images in [-1, 1])
    model_float32.tflite    float32 TFLite, converted with the project's converter (trainer.tflite)
    model_int8.tflite       full-integer post-training quantization: int8 weights and activations, int8 input and
                            output tensors, calibrated on representative images from the *training* set
    model_dynamic.tflite    (optional) weight-only "dynamic range" quantization: int8 weights, float activations
                            (TFLite keeps tensors of fewer than 1,024 weights in float: a tiny model does not shrink)
    export.json             the accuracy table below, as JSON

and then evaluates every TFLite model with LiteRT on the evaluation set, beside the Keras model: top-1, top-5,
the fraction of images whose predicted class equals Keras', and (float models) the largest logit difference.

Float32 and int8 conversion go through the converter the latency backends time (`trainer.tflite.
keras_to_tflite`), the int8 one calibrated on training images rather than the random images that suffice for
timing. The whole export goes to a temporary sibling folder first and is renamed into place at the end: a failed
conversion leaves no half export behind. An existing folder is replaced only when it holds a previous export and
nothing else, so a mistyped --export-dir (the run directory, a home folder) is refused rather than emptied.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from mnas.search.fileio import current_umask
from mnas.trainer import checkpoint as ckpt
from mnas.trainer.progress import Progress

FORMATS = ("float32", "int8", "dynamic")
EXPORT_FILES = {"saved_model", "export.json"} | {f"model_{kind}.tflite" for kind in FORMATS}


def convert(model, kind: str, representative: np.ndarray | None = None) -> bytes:
    """The TFLite flatbuffer of `model`: 'float32', 'int8' (needs representative images) or 'dynamic'."""
    from mnas.trainer.tflite import keras_to_tflite, quiet

    if kind not in FORMATS:
        raise ValueError(f"unknown TFLite format {kind!r} (known: {', '.join(FORMATS)})")
    if kind == "float32":
        return keras_to_tflite(model, "float32")
    if kind == "int8":
        if representative is None or not len(representative):
            raise ValueError("int8 quantization needs representative images")
        with warnings.catch_warnings():
            # "Statistics for quantized inputs were expected": the converter's note that int8 inputs take their
            # scale from calibration, which is what is wanted here.
            warnings.simplefilter("ignore", UserWarning)
            return keras_to_tflite(model, "int8", representative=representative)
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: weights only
    with quiet():
        return converter.convert()


def run_tflite(flatbuffer: bytes, data, batch_size: int = 100, threads: int = 0, info: dict | None = None,
               label: str = "litert") -> tuple[np.ndarray, np.ndarray]:
    """Logits (float, dequantized for an int8 output) and labels of a TFLite model over the evaluation set,
    run by LiteRT in batches (the last batch padded), inputs quantized when the model takes int8, with a progress
    bar (`label`): an int8 model at 224 pixels takes minutes over ImageNet's 50,000 images on a CPU.
    `info`, if given, receives {'kernels': 'xnnpack' or 'builtin'}: which kernels computed the result."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from mnas.trainer.tflite import quiet

    def make(resolver):
        with quiet():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
            interpreter = Interpreter(model_content=flatbuffer, num_threads=threads or os.cpu_count() or 1,
                                      experimental_op_resolver_type=resolver)
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"],
                                            [batch_size, *data.image_shape])
            interpreter.allocate_tensors()
        return interpreter

    kernels = "xnnpack"
    try:
        interpreter = make(OpResolverType.AUTO)  # LiteRT's default: XNNPACK where it applies
    except RuntimeError:
        kernels = "builtin"
        # XNNPACK failed to prepare some trained MnasNet-A1 exports here ("Node number 100
        # (TfLiteXNNPackDelegate) failed to prepare"); the builtin kernels compute the same model, more slowly.
        interpreter = make(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    if info is not None:
        info["kernels"] = kernels
    index = interpreter.get_input_details()[0]["index"]
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = source["quantization"]
    out_scale, out_zero = target["quantization"]
    quantized_in = np.dtype(source["dtype"]).kind == "i"
    outputs, labels = [], []
    progress = Progress(math.ceil(data.num_eval / batch_size))
    progress.start(label)
    for step, (x, y) in enumerate(data.evaluate(batch_size), 1):
        x = x.numpy()
        n = len(x)
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
        if quantized_in:
            limits = np.iinfo(source["dtype"])
            x = np.clip(np.round(x / in_scale + in_zero), limits.min, limits.max).astype(source["dtype"])
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        out = interpreter.get_tensor(target["index"])[:n]
        if np.dtype(target["dtype"]).kind == "i":
            out = (out.astype(np.float32) - out_zero) * out_scale
        outputs.append(out.astype(np.float32))
        labels.append(y.numpy())
        progress.update(step)
    progress.finish()
    return np.concatenate(outputs), np.concatenate(labels)


def check_export_dir(export_dir: str | os.PathLike) -> Path:
    """The export folder as an absolute path, refused (ValueError) when exporting would replace something that
    is not a previous export: a file, or a folder holding anything but an export's own files (a run directory,
    a home folder). Called before training, so that a long run does not end on this error."""
    final = Path(export_dir).absolute()
    if final.exists() and not final.is_dir():
        raise ValueError(f"export folder {export_dir} is a file")
    if final.is_dir():
        foreign = sorted(name for name in os.listdir(final) if name not in EXPORT_FILES)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise ValueError(f"export folder {export_dir} holds other files ({shown}): an export replaces its "
                             "folder, choose a new or empty one")
    return final


def export_model(model, data, export_dir: str | os.PathLike, formats=("float32", "int8"),
                 representative: int = 256, seed: int = 0, threads: int = 0,
                 log: Callable[[str], None] | None = None) -> dict:
    """Writes the SavedModel and the TFLite `formats` of `model` to `export_dir` and reports their accuracy.

    Args:
        data: the run's InputData (evaluation set; training images for calibration).
        representative: training images used to calibrate int8 activations (TensorFlow's guide: 100-500).
        threads: LiteRT threads (0: every core).

    Returns:
        {'keras': scores, 'formats': [{format, file, bytes, top1, top5, agreement, max_abs_diff}], ...}
    """
    import tensorflow as tf

    from mnas.trainer.train import predict, scores

    log = log or (lambda line: print(line, flush=True))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown TFLite format(s) {', '.join(unknown)} (known: {', '.join(FORMATS)})")
    final = check_export_dir(export_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    os.chmod(work, 0o777 & ~current_umask())
    try:
        eval_step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        keras_logits, labels = predict(eval_step, data, label="keras")
        keras_scores = scores(keras_logits, labels)
        keras_class = keras_logits.argmax(axis=1)
        model.export(str(work / "saved_model"), format="tf_saved_model", verbose=False)
        calibration = data.samples(representative, seed) if "int8" in formats else None
        rows = []
        for kind in formats:
            flatbuffer = convert(model, kind, calibration)
            name = f"model_{kind}.tflite"
            (work / name).write_bytes(flatbuffer)
            info: dict = {}
            logits, tflite_labels = run_tflite(flatbuffer, data, threads=threads, info=info, label=name)
            row = {"format": kind, "file": name, "bytes": len(flatbuffer), **scores(logits, tflite_labels), **info,
                   "agreement": float((logits.argmax(axis=1) == keras_class).mean()),
                   "max_abs_diff": float(np.abs(logits - keras_logits).max())}
            rows.append(row)
        report = {"keras": keras_scores, "formats": rows, "num_eval": int(len(labels)),
                  "representative_images": int(len(calibration)) if calibration is not None else 0,
                  "dataset": data.name, "image_shape": list(data.image_shape)}
        ckpt.write_json(work / "export.json", report)
        if final.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, retired / final.name)
            os.replace(work, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for line in format_report(report, export_dir) + agreement_warnings(report):
        log(line)
    return report


# The share of evaluation images on which an exported model must predict the Keras model's class, below which the
# export is flagged: float32 computes the same function (BENCHMARKS.md: every image agrees); a quantized model of a
# trained network agrees on ~98% (MnasNet-A1 x0.5 and a searched child after 2 epochs: 98.7%, 98.2%).
AGREEMENT_FLOOR = {"float32": 0.99, "int8": 0.95, "dynamic": 0.95}
REPRESENTATIVE_MIN = 100  # TensorFlow's guide calibrates int8 activations on 100-500 images


def agreement_warnings(report: dict) -> list[str]:
    """One 'warning:' line per exported model that agrees with Keras on too few images, with the figure and the
    likely reason: a float model that differs is a conversion problem; a quantized one, too few calibration
    images or a model not trained far enough (close logits swap places under int8 rounding, and the activation
    ranges of a model still far from converged calibrate poorly)."""
    lines = []
    keras_top1 = report["keras"]["top1"]
    for row in report["formats"]:
        if row["agreement"] >= AGREEMENT_FLOOR.get(row["format"], 0.95):
            continue
        figure = (f"warning: {row['file']} predicts the Keras model's class on only {100 * row['agreement']:.1f}% "
                  f"of the {report['num_eval']:,} evaluation images")
        if row["format"] == "float32":
            reason = (f"a float conversion should agree on every image (largest logit difference "
                      f"{row['max_abs_diff']:.3g}): a converter problem, do not ship this model")
        elif row["format"] == "int8" and report.get("representative_images", 0) < REPRESENTATIVE_MIN:
            reason = (f"likely too few calibration images ({report['representative_images']}; "
                      f"--representative {REPRESENTATIVE_MIN} or more, 256 by default)")
        else:
            reason = (f"likely a model not trained far enough (Keras top-1 {100 * keras_top1:.1f}%): close logits "
                      "swap places when quantized; train longer, then export again")
        lines.append(f"{figure}: {reason}")
    return lines


def format_report(report: dict, where: Path | str) -> list[str]:
    """The accuracy table of an export, one line per model."""
    keras_scores = report["keras"]
    lines = [f"exported to {where} ({report['num_eval']} evaluation images)",
             f"  {'model':<22} {'size':>10} {'top-1':>7} {'top-5':>7} {'same class':>10} {'max |dlogit|':>12}",
             f"  {'keras (saved_model/)':<22} {'':>10} {100 * keras_scores['top1']:>6.2f}% "
             f"{100 * keras_scores['top5']:>6.2f}% {'':>10} {'':>12}"]
    for row in report["formats"]:
        lines.append(f"  {row['file']:<22} {row['bytes'] / 1024:>8.0f}KB {100 * row['top1']:>6.2f}% "
                     f"{100 * row['top5']:>6.2f}% {100 * row['agreement']:>9.2f}% {row['max_abs_diff']:>12.4g}")
    return lines
