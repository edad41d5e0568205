"""Keras -> TFLite conversion and timing of a TFLite model with LiteRT, shared by every measured backend.

TensorFlow and LiteRT are imported inside the functions: `import search.latency` must stay cheap for the
search loop, which only predicts.

Conversion goes through `tf.lite.TFLiteConverter.from_keras_model`. (Converting a traced concrete function of
a Keras 3 model instead yields a model whose variables are not frozen, which fails at run time.) The float
model is what the MnasNet paper timed; `quantize='int8'` gives a fully integer model from a representative
dataset of random images, the post-training quantization the paper's release exports.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time

from search.latency.base import Measurement

QUANTIZATIONS = ("float32", "int8")


@contextlib.contextmanager
def _quiet():
    """Silences the converter's prints and C++ logs (they would corrupt --json output); replays them on error."""
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


def keras_to_tflite(model, quantize: str = "float32", calibration_samples: int = 8) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer (float32, or int8 from random representative images)."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantize!r} (known: {', '.join(QUANTIZATIONS)})")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    with _quiet():
        import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "int8":
        shapes = [tuple(1 if d is None else d for d in t.shape) for t in model.inputs]
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(calibration_samples):
                yield [rng.random(shape, dtype=np.float32) for shape in shapes]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with _quiet():
        return converter.convert()


def arch_to_tflite(arch, resolution: int | None = None, quantize: str = "float32", num_classes: int = 1000) -> bytes:
    """Builds `arch` with `trainer.builder` at `resolution` and converts it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    size = resolution or arch.resolution
    with _quiet():
        from trainer.builder import build_model

        model = build_model(arch, num_classes=num_classes, input_shape=(size, size, 3))
    return keras_to_tflite(model, quantize)


def time_tflite(flatbuffer: bytes, num_threads: int = 1, warmup: int = 5, runs: int = 30,
                min_seconds: float = 0.0) -> Measurement:
    """Times `invoke()` of a TFLite model in LiteRT: warm-up, then `runs` timed calls (more if `min_seconds`).

    Inputs are random; latency of these networks does not depend on the values. The median is reported
    because a shared machine produces one-sided outliers (another process takes the core).
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    start = time.perf_counter()
    interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            value = rng.random(detail["shape"]).astype(dtype)
        else:
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, size=detail["shape"], endpoint=True).astype(dtype)
        interpreter.set_tensor(detail["index"], value)
    for _ in range(warmup):
        interpreter.invoke()
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < runs or time.perf_counter() - began < min_seconds:
        tick = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - tick) * 1e3)
    return Measurement(ms=statistics.median(times), mean_ms=statistics.fmean(times),
                       std_ms=statistics.pstdev(times), min_ms=min(times), max_ms=max(times), runs=len(times),
                       measure_s=time.perf_counter() - start)
