"""Per-layer latency tables measured for real: each distinct layer as a one-layer Keras model, timed on this host
or on a phone, for `search.latency.lut.build_lut`.
"""

from __future__ import annotations

from typing import Callable, Sequence

from mnas.measure.timing import measure_in_passes
from mnas.search.latency.base import Progress
from mnas.search.latency.lut import LayerKey, block_of
from mnas.trainer import builder  # its own layer function, so the table times what the whole model runs
from mnas.trainer.tflite import keras_to_tflite


def keras_layer(key: LayerKey):
    """A one-layer Keras model computing exactly what that layer computes inside `trainer.builder`'s network."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(key.in_hw, key.in_hw, key.in_filters), name="features")
    if key.op == "stem":
        x = layers.Conv2D(key.out_filters, key.kernel, strides=key.stride, padding="same", use_bias=False)(inputs)
        x = layers.ReLU()(layers.BatchNormalization()(x))
    elif key.op == "head":
        x = layers.Conv2D(key.out_filters, 1, use_bias=False)(inputs)
        x = layers.GlobalAveragePooling2D()(layers.ReLU()(layers.BatchNormalization()(x)))
    elif key.op == "fc":
        inputs = keras.Input(shape=(key.in_filters,), name="features")
        x = layers.Dense(key.out_filters)(inputs)
    else:
        block, declared = block_of(key)
        x = builder.build_layer(inputs, block, declared, key.stride, "l_")
    return keras.Model(inputs, x)


def host_layer_measurer(num_threads: int = 1, quantize: str = "float32", warmup: int = 3, runs: int = 20,
                        passes: int = 5, progress: bool = False) -> Callable[[Sequence[LayerKey]], list[float]]:
    """Times layers on this host, for `build_lut`: each converted, then all timed in `passes` passes, each
    keeping its fastest (median ms; `measure.timing.measure_in_passes`)."""
    def measure(keys: Sequence[LayerKey]) -> list[float]:
        timed = measure_in_passes({str(k): lambda k=k: keras_to_tflite(keras_layer(k), quantize) for k in keys},
                                  passes, "layer", progress, num_threads=num_threads, warmup=warmup, runs=runs,
                                  rounds=1)
        return [timed[str(k)].ms for k in keys]

    return measure


def adb_layer_measurer(device, quantize: str = "float32",
                       progress: bool = False) -> Callable[[Sequence[LayerKey]], list[float]]:
    """Times layers on a phone (`measure.adb.AdbDevice`), one after another, for `build_lut`."""
    def measure(keys: Sequence[LayerKey]) -> list[float]:
        steps, out = Progress(len(keys), "measured layer", progress), []
        for key in keys:
            out.append(device.time_tflite(keras_to_tflite(keras_layer(key), quantize), "layer").ms)
            steps.step(f"{key} {out[-1]:.3f} ms")
        return out

    return measure
