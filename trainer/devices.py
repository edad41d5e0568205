"""The devices a TensorFlow process trains on, set up in one place: GPU memory, mixed precision, local replicas.

`trainer.train.set_up_tensorflow` calls `configure_gpus` and `set_precision` for every process that trains -- a
replay (`mnas train`), a Ray Train worker of a multi-node replay, a search's child worker -- so that

* every visible GPU grows its memory on demand instead of TensorFlow's default of reserving nearly all of it at
  start: two children packed on one GPU (fractional `gpus_per_worker`), or a replay beside a notebook, each take
  what they use;
* mixed precision (Keras' `mixed_float16` policy: float16 compute, float32 variables) is one switch, refused on a
  machine without a GPU: CPUs have no fast float16 arithmetic, so the policy would only slow a run down and change
  its numbers;

and `local_devices` / `pick_devices` say which devices a replay's MirroredStrategy spans: the visible GPUs, or,
on a machine without one, its CPU devices (one, unless a process split its CPU into logical devices with
`tf.config.set_logical_device_configuration` before TensorFlow started -- how the tests run two replicas here).
Which GPUs are visible is decided outside, by CUDA_VISIBLE_DEVICES (Ray sets it for each worker from the GPUs it
assigned).
"""

from __future__ import annotations

import sys

MIXED_POLICY = "mixed_float16"


def configure_gpus(tf) -> list:
    """Turns memory growth on for every visible GPU; returns the physical GPUs (empty on a CPU-only machine).

    Memory growth must be set before TensorFlow initialises the GPUs (its first op or device query that
    creates the runtime); in a process where that already happened the setting is left as it is."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # the runtime exists already: its memory settings are fixed
    return gpus


def set_precision(mixed_precision: bool, gpus: list | None = None) -> None:
    """Sets Keras' global dtype policy: `mixed_float16` if asked (GPUs only), else float32.

    `keras.backend.clear_session()` resets the policy to float32: call this again after it (trainer.train does).

    Args:
        gpus: the physical GPUs (configure_gpus' result); None lists them.

    Raises:
        ValueError: mixed precision asked on a machine without a visible GPU.
    """
    if mixed_precision and gpus is None:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    if mixed_precision and not gpus:
        raise ValueError("--mixed-precision needs a GPU and this machine has none visible to TensorFlow (CPUs have "
                         "no fast float16 arithmetic): drop --mixed-precision")
    if not mixed_precision and "keras" not in sys.modules:
        return  # nothing has set a policy in this process: float32 is Keras' default
    import keras

    wanted = MIXED_POLICY if mixed_precision else "float32"
    if keras.mixed_precision.global_policy().name != wanted:
        keras.mixed_precision.set_global_policy(wanted)


def local_devices(tf) -> list[str]:
    """The logical devices a local replay can replicate over: every visible GPU, else the CPU device(s)."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def pick_devices(tf, requested: int | None) -> list[str]:
    """The first `requested` local devices; None: every GPU, or one CPU device on a machine without GPUs (a CPU
    split into logical devices is used whole unless --devices asks for its parts).

    Raises:
        ValueError: more devices asked for than the machine has, naming what it has.
    """
    available = local_devices(tf)
    if requested is None:
        return available if "GPU" in available[0] else available[:1]
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ValueError(f"--devices must be a positive integer, got {requested!r}")
    if requested > len(available):
        kind = "GPU" if "GPU" in available[0] else "CPU device"
        raise ValueError(f"--devices {requested}: this machine has {len(available)} {kind}"
                         f"{'s' if len(available) != 1 else ''} ({', '.join(short(d) for d in available)}); "
                         f"use --devices {len(available)} or fewer, or --workers to add machines")
    return available[:requested]


def short(device: str) -> str:
    """'/job:localhost/replica:0/task:0/device:GPU:1' -> 'GPU:1'."""
    return device.rsplit("device:", 1)[-1]
