"""Keras -> TFLite conversion: the one converter behind the exported models and every latency measurement.

Conversion goes through `tf.lite.TFLiteConverter.from_keras_model`. (Converting a traced concrete function of
a Keras 3 model instead yields a model whose variables are not frozen, which fails at run time.) The float
model is what the MnasNet paper timed; `quantize='int8'` gives a fully integer model from a representative
dataset: random images for timing (latency does not depend on the values), real training images for an exported
model (`trainer.export` passes them as `representative`).

TensorFlow is imported inside the functions, under `quiet()`.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile

QUANTIZATIONS = ("float32", "int8")


@contextlib.contextmanager
def quiet():
    """Silences the converter's prints and C++ logs (they would corrupt --json output); replays them on error.

    Also wraps TensorFlow's import and LiteRT's interpreter set-up in the trainer, whose C++ start-up lines
    (oneDNN, CUDA, XNNPACK) would otherwise surround every message of the command line."""
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink, contextlib.redirect_stdout(io.StringIO()):
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        except BaseException:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            sink.seek(0)
            tail = sink.read()[-4000:].decode("utf-8", "replace")
            if tail.strip():
                print(tail, file=os.sys.stderr)
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def keras_to_tflite(model, quantize: str = "float32", calibration_samples: int = 8, representative=None) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer: float32, or full-integer int8 (int8 weights, activations,
    input and output).

    Args:
        calibration_samples: random images that calibrate int8 activation ranges when `representative` is None.
        representative: for int8, real images [N, H, W, C] of a one-input model to calibrate on instead.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantize!r} (known: {', '.join(QUANTIZATIONS)})")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    with quiet():
        import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "int8":
        shapes = [tuple(1 if d is None else d for d in t.shape) for t in model.inputs]
        rng = np.random.default_rng(0)

        def random_images():
            for _ in range(calibration_samples):
                yield [rng.random(shape, dtype=np.float32) for shape in shapes]

        def given_images():
            for image in representative:
                yield [np.asarray(image, np.float32)[np.newaxis]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = random_images if representative is None else given_images
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with quiet():
        return converter.convert()


def arch_to_tflite(arch, resolution: int | None = None, quantize: str = "float32", num_classes: int = 1000) -> bytes:
    """Builds `arch` with `trainer.builder` at `resolution` and converts it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    size = resolution or arch.resolution
    with quiet():
        from mnas.trainer.builder import build_model

        model = build_model(arch, num_classes=num_classes, input_shape=(size, size, 3))
    return keras_to_tflite(model, quantize)
