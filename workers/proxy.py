"""Training a child on the proxy task and scoring it: what one worker does to one child.

The task and the adaptation of the child are defined in `search.proxy` (`ProxyConfig`, `proxy_architecture`);
this module trains the adapted child briefly and scores it on the held-out slice of the training split. A child
that cannot be scored raises `ChildFailed` with its code (`search.failures`).

Importing this module does not import TensorFlow (a Ray driver can import it cheaply); `train_child` imports it
on first use and sets its thread pools once per process.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from mnas.search.failures import ChildFailed, Failure
from mnas.search.proxy import ProxyConfig, proxy_architecture
from mnas.search.arch import Architecture


@dataclasses.dataclass(frozen=True)
class ProxyResult:
    """What a worker reports for a child that trained. Seconds are wall time on the worker."""

    accuracy: float          # top-1 on the held-out slice of the training split
    heldout_loss: float      # mean cross-entropy on the held-out slice
    final_loss: float        # mean training loss over the last epoch (or the last `steps` window)
    steps: int               # optimizer steps taken
    epochs: float            # passes over the training subset (fractional when `steps` is set)
    build_seconds: float     # building the Keras model
    train_seconds: float     # training, first-step tracing included
    eval_seconds: float      # scoring the held-out slice
    images_per_second: float  # training images / train_seconds
    proxy_params: int        # trainable parameters of the proxy model (not of the deployment model)
    proxy_arch: tuple[str, ...]  # block strings actually trained (the stem stride is not in them)
    cpu_seconds: float       # process CPU time for the whole child: wall time minus contention, at 1 thread
    threads: int             # TensorFlow intra-op threads in effect

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["proxy_arch"] = list(self.proxy_arch)
        return data


# --------------------------------------------------------------------------------------------------------------
# Training one child

def _optimizer(proxy: ProxyConfig, total_steps: int):
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(proxy.learning_rate, decay_steps=max(1, total_steps))
    decay = proxy.weight_decay or None
    if proxy.optimizer == "adam":
        return keras.optimizers.AdamW(schedule, weight_decay=proxy.weight_decay) if decay else \
            keras.optimizers.Adam(schedule)
    if proxy.optimizer == "rmsprop":  # the paper's settings for full training (decay 0.9, momentum 0.9, eps 1e-3)
        return keras.optimizers.RMSprop(schedule, rho=0.9, momentum=0.9, epsilon=1e-3, weight_decay=decay)
    return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=decay)


def _split(proxy: ProxyConfig):
    """The training subset and the held-out slice, both from the training split (never the test split)."""
    from mnas.trainer.data import load_dataset

    try:
        data = load_dataset(proxy.dataset, proxy.data_dir)
    except (OSError, ValueError) as err:
        raise ChildFailed(Failure.DATA_ERROR, str(err)) from err
    x, y = data.x_train, data.y_train
    if proxy.train_subset + proxy.heldout > len(x):
        raise ValueError(f"proxy config: train_subset {proxy.train_subset} + heldout {proxy.heldout} exceed the "
                         f"{len(x)} training images of {proxy.dataset}")
    start = len(x) - proxy.heldout
    return (x[:proxy.train_subset], y[:proxy.train_subset]), (x[start:], y[start:])


def train_child(arch: Architecture, proxy: ProxyConfig | None = None, num_classes: int | None = None) -> ProxyResult:
    """Trains `proxy_architecture(arch, proxy)` on the proxy task and scores it on the held-out slice.

    Args:
        arch: the deployment architecture (the child the controller sampled).
        proxy: the proxy task; None means the defaults.
        num_classes: classifier width; None takes the dataset's.

    Raises:
        ChildFailed: with code nan_loss, build_error, oom, data_error or train_error.
        ValueError: the config asks for more images than the dataset has (every child would fail alike).
    """
    with ProxyTraining(arch, proxy, num_classes) as training:
        training.train_to(training.total_steps)
        return training.result()


class ProxyTraining:
    """One child's proxy training, run in segments: what `train_child` does in one go, and what an early-stopping
    scheduler (ASHA) drives rung by rung, scoring the child between segments and dropping it when it lags.

        with ProxyTraining(arch, proxy) as training:
            training.train_to(training.total_steps // 4)
            accuracy, loss = training.score(limit=1000)   # a rung: cheap, on the first held-out images
            training.train_to(training.total_steps)
            result = training.result()                    # the full held-out score and timings

    The learning-rate schedule always spans `total_steps`, so a run cut into segments takes the same steps, in
    the same order, with the same rates as one uninterrupted run; its final result is identical.
    Errors become `ChildFailed` with a failure code, as in `train_child`.
    """

    def __init__(self, arch: Architecture, proxy: ProxyConfig | None = None, num_classes: int | None = None):
        from mnas.trainer.train import set_up_tensorflow

        self.proxy = proxy = proxy or ProxyConfig()
        self._tf = tf = set_up_tensorflow(proxy.threads)   # pools fixed by the first child of a reused actor
        import keras

        from mnas.trainer.builder import build_model
        from mnas.trainer.data import get_dataset_spec

        self.train_data, self.held_data = _split(proxy)
        num_classes = num_classes or get_dataset_spec(proxy.dataset).num_classes
        self.parch = parch = proxy_architecture(arch, proxy)
        keras.backend.clear_session(free_memory=True)
        keras.utils.set_random_seed(proxy.seed)
        self._cpu_started = time.process_time()
        started = time.perf_counter()
        try:
            x_train = self.train_data[0]
            self.model = build_model(parch, num_classes, (proxy.image_size, proxy.image_size, x_train.shape[-1]),
                                     name="proxy")
            for layer in self.model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = proxy.bn_momentum
        except (MemoryError, tf.errors.ResourceExhaustedError) as err:
            self.close()
            raise ChildFailed(Failure.OOM, f"building {parch}: {err}") from err
        except Exception as err:  # noqa: BLE001 -- any builder failure is this child's failure
            self.close()
            raise ChildFailed(Failure.BUILD_ERROR, f"{type(err).__name__}: {err}") from err
        self.build_seconds = time.perf_counter() - started
        self.per_epoch = len(x_train) // proxy.batch_size   # len(x_train) is train_subset (_split checks it)
        self.total_steps = proxy.total_steps
        self.steps_done = 0
        self.train_seconds = 0.0
        self.recent: list[float] = []
        self._batches = None
        self._train_step = None

    def __enter__(self) -> "ProxyTraining":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Frees the model and TensorFlow's graph state (a reused worker trains many children)."""
        import keras

        self.model = self._batches = self._train_step = None
        keras.backend.clear_session(free_memory=True)

    def _guard(self, what: str):
        return _FailureMapping(self._tf, what)

    def _prepare(self) -> None:
        import keras

        from mnas.trainer.data import make_pipeline

        proxy, tf = self.proxy, self._tf
        pipeline = make_pipeline(*self.train_data, proxy.batch_size, proxy.image_size, shuffle=True,
                                 seed=proxy.seed, drop_remainder=True).repeat().take(self.total_steps)
        self._batches = iter(pipeline)
        optimizer = _optimizer(proxy, self.total_steps)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model, variables = self.model, self.model.trainable_variables
        optimizer.build(variables)

        # A hand-written step rather than model.fit: it gave the same losses bit for bit and took a third less CPU
        # time per child here (fit's callbacks, metrics and epoch machinery cost more than a small step).
        @tf.function(reduce_retracing=True)
        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        self._train_step = train_step

    def train_to(self, step: int) -> None:
        """Trains until `step` optimizer steps are done in all (at most `total_steps`)."""
        step = min(int(step), self.total_steps)
        with self._guard("training"):
            started = time.perf_counter()
            if self._train_step is None:
                self._prepare()
            proxy = self.proxy
            while self.steps_done < step:
                x, y = next(self._batches)
                loss = float(self._train_step(x, y))  # one sync a step: stops a diverged child at once, < 1%
                self.steps_done += 1
                if not math.isfinite(loss):
                    raise ChildFailed(Failure.NAN_LOSS, f"training loss {loss} at step {self.steps_done} of "
                                                        f"{self.total_steps} (learning rate {proxy.learning_rate}, "
                                                        f"{proxy.optimizer})")
                self.recent.append(loss)
                del self.recent[:-self.per_epoch]   # final_loss averages the last epoch's worth of steps
            self.train_seconds += time.perf_counter() - started

    def score(self, limit: int | None = None) -> tuple[float, float]:
        """(top-1 accuracy, mean cross-entropy) on the held-out slice, or on its first `limit` images."""
        import numpy as np

        from mnas.trainer.data import make_pipeline
        from mnas.trainer.train import scores

        images, labels = self.held_data
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        with self._guard("scoring"):
            eval_step = self._tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
            logits = np.concatenate([eval_step(x).numpy() for x, _ in
                                     make_pipeline(images, labels, 500, self.proxy.image_size)], axis=0)
        labels = np.asarray(labels)
        if not np.all(np.isfinite(logits)):
            raise ChildFailed(Failure.NAN_LOSS,
                              "held-out logits are not finite (diverged weights or batch-norm statistics)")
        scored = scores(logits, labels)
        return scored["top1"], scored["loss"]

    def result(self) -> ProxyResult:
        """Scores the whole held-out slice; call after training to `total_steps`."""
        import numpy as np

        final_loss = float(np.mean(self.recent)) if self.recent else math.nan
        if not math.isfinite(final_loss):
            raise ChildFailed(Failure.NAN_LOSS, f"training loss {final_loss} (learning rate "
                                                f"{self.proxy.learning_rate}, {self.proxy.optimizer})")
        started = time.perf_counter()
        accuracy, heldout_loss = self.score()
        eval_seconds = time.perf_counter() - started
        steps, batch = self.steps_done, self.proxy.batch_size
        return ProxyResult(
            accuracy=accuracy, heldout_loss=heldout_loss, final_loss=final_loss, steps=steps,
            epochs=steps * batch / len(self.train_data[0]), build_seconds=self.build_seconds,
            train_seconds=self.train_seconds, eval_seconds=eval_seconds,
            images_per_second=steps * batch / max(self.train_seconds, 1e-9),
            proxy_params=int(sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)),
            proxy_arch=self.parch.block_strings, cpu_seconds=time.process_time() - self._cpu_started,
            threads=int(self._tf.config.threading.get_intra_op_parallelism_threads() or self.proxy.threads))


class _FailureMapping:
    """Turns what training or scoring raises into `ChildFailed` (oom, train_error); ChildFailed passes through."""

    def __init__(self, tf, what: str):
        self.tf, self.what = tf, what

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if err is None or isinstance(err, ChildFailed) or not isinstance(err, Exception):
            return False
        if isinstance(err, (MemoryError, self.tf.errors.ResourceExhaustedError)):
            raise ChildFailed(Failure.OOM, f"{self.what}: {type(err).__name__}: {err}") from err
        raise ChildFailed(Failure.TRAIN_ERROR, f"{type(err).__name__}: {err}") from err
