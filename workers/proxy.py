"""Training a child on the proxy task and scoring it: what one worker does to one child.

The task and the adaptation of the child are defined in `search.proxy` (`ProxyConfig`, `proxy_architecture`);
this module trains the adapted child briefly and scores it on the held-out sample of the training split. A child
that cannot be scored raises `ChildFailed` with its code (`search.failures`).

The data comes through the trainer's data layer (`trainer.splits`): `proxy_data` draws the training subset and
the held-out sample by index (`split_indices`), in memory for arrays, streamed from files for image folders and
TFRecords. `check_proxy_data` is the search's pre-flight check of the same data: what would fail every child
(missing files, a corrupt shard, labels that do not fit, a held-out sample of one class) stops the search with
one line before any child trains.

Importing this module does not import TensorFlow (a Ray driver can import it cheaply); `train_child` imports it
on first use and sets its thread pools once per process.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

from mnas.search.failures import ChildFailed, Failure
from mnas.search.proxy import ProxyConfig, proxy_architecture
from mnas.search.arch import Architecture


@dataclasses.dataclass(frozen=True)
class ProxyResult:
    """What a worker reports for a child that trained. Seconds are wall time on the worker."""

    accuracy: float          # top-1 on the held-out sample of the training split
    heldout_loss: float      # mean cross-entropy on the held-out sample
    final_loss: float        # mean training loss over the last epoch (or the last `steps` window)
    steps: int               # optimizer steps taken
    epochs: float            # passes over the training subset (fractional when `steps` is set)
    build_seconds: float     # building the Keras model
    train_seconds: float     # training, first-step tracing included
    eval_seconds: float      # scoring the held-out sample
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
# The data: a training subset and a held-out sample of the training split

LABELS_READ = 1000   # held-out labels read up front when they live inside TFRecords (all when these show one class)


def split_indices(size: int, train_subset: int, heldout: int, split: str = "random", seed: int = 0):
    """(training selection, held-out selection) of a training split of `size` examples.

    'random': `heldout` examples at random, in random order (so the first N of them, a rung's sample, are a
    random sample too), then `train_subset` at random from the rest; the held-out sample depends only on
    (size, heldout, seed), not on train_subset. 'file-order': the slices [0, train_subset) and
    [size - heldout, size), exactly as the proxy took them before the random split existed.

    Raises:
        ValueError: the two do not fit in `size` (a config error: every child would fail alike).
    """
    if train_subset + heldout > size:
        raise ValueError(f"proxy config: train_subset {train_subset} + heldout {heldout} exceed the {size} "
                         "training images of the dataset")
    if split == "file-order":
        return slice(0, train_subset), slice(size - heldout, size)
    if split != "random":
        raise ValueError(f"proxy config: unknown split {split!r} (known: random, file-order)")
    order = np.random.default_rng(seed).permutation(size)
    return order[heldout:heldout + train_subset], order[:heldout]


@dataclasses.dataclass(frozen=True)
class ProxyData:
    """What a child trains on and is scored on: two disjoint parts of the training split (never the test split)."""

    train: Any               # trainer.splits.Examples
    heldout: Any             # trainer.splits.Examples
    split: Any               # trainer.splits.TrainingSplit they come from
    held_numbers: Any        # the held-out sample's numbers in the split (a slice or an array)

    @property
    def num_classes(self) -> int:
        return self.split.num_classes


def proxy_data(proxy: ProxyConfig, num_classes: int | None = None) -> ProxyData:
    """Opens the training split of `proxy.dataset` and draws the training subset and the held-out sample.

    Raises:
        DatasetMissing, ValueError: the data cannot be read, or its labels do not fit the classes.
        ValueError: the config asks for more images than the split has.
    """
    from mnas.trainer.splits import open_training_split

    return _draw(open_training_split(proxy.dataset, proxy.data_dir, num_classes or proxy.num_classes), proxy)


def _draw(split, proxy: ProxyConfig) -> ProxyData:
    train, held = split_indices(split.size, proxy.train_subset, proxy.heldout, proxy.split, proxy.split_seed)
    return ProxyData(split.take(train), split.take(held), split, held)


def _one_class(labels: np.ndarray, proxy: ProxyConfig, where: str, read: int | None = None) -> str | None:
    """Why a held-out sample with these labels cannot rank children, or None when it has two classes or more."""
    classes = np.unique(labels)
    if len(classes) > 1:
        return None
    counted = f"the first {read} of the {proxy.heldout}" if read else f"all {len(labels)}"
    hint = ("the file is in class order: use split: random" if proxy.split == "file-order"
            else "the training split has one class")
    return (f"proxy: {counted} held-out images of {proxy.dataset} ({where}) are of class "
            f"{int(classes[0]) if len(classes) else '-'} only, so every child would score alike; {hint}")


@dataclasses.dataclass(frozen=True)
class ProxyDataSummary:
    """What `check_proxy_data` found: the split the search's children will share."""

    dataset: str
    where: str
    streamed: bool           # read from files on demand (folder, imagenet), not held in memory
    images: int              # in the training split
    num_classes: int
    channels: int
    train_subset: int
    heldout: int
    split: str
    split_seed: int
    heldout_classes: int     # distinct classes among the held-out labels read
    labels_read: int         # held-out labels read: all, unless they live inside TFRecords

    def describe(self) -> str:
        how = f"random split, seed {self.split_seed}" if self.split == "random" else "file order"
        read = "" if self.labels_read == self.heldout else f" in the first {self.labels_read}"
        return (f"{self.dataset} ({self.where}; {'streamed from files' if self.streamed else 'in memory'}): "
                f"{self.images:,} training images, {self.num_classes} classes; {self.train_subset:,} to train, "
                f"{self.heldout:,} held out ({how}; {self.heldout_classes} classes{read})")


def check_proxy_data(proxy: ProxyConfig) -> ProxyDataSummary:
    """Checks, once and before any child trains, what would otherwise fail every child alike.

    Opens the training split (a folder is listed, every TFRecord shard's record headers are read), draws the two
    subsets, checks that every label fits the classes and that the held-out sample has two classes or more (its
    labels are read from the records when they live there: the first LABELS_READ, all of them if those show one
    class), that every selected image file starts like a JPEG or PNG, and that the first image of each subset
    decodes.

    Raises:
        DatasetMissing, ValueError: one line naming the problem (the search prints it and exits with status 2).
    """
    data = proxy_data(proxy)
    split, held = data.split, data.heldout
    labels, read = held.known_labels(), None
    if labels is None:
        numbers = np.arange(split.size)[data.held_numbers]
        labels = split.labels_of(numbers[:LABELS_READ])
        read = len(labels) if len(labels) < len(numbers) else None
        if read and len(np.unique(labels)) < 2:
            labels, read = split.labels_of(numbers), None
        if len(labels) and (labels.min() < 0 or labels.max() >= split.num_classes):
            bad = int(labels.min() if labels.min() < 0 else labels.max())
            raise ValueError(f"{proxy.dataset} in {split.where}: held-out label {bad} does not fit "
                             f"{split.num_classes} classes (records carry labels 1-{split.num_classes}): set "
                             "proxy.num_classes, or fix the labels")
    problem = _one_class(labels, proxy, split.where, read)
    if problem:
        raise ValueError(problem)
    data.train.check()
    held.check()
    return ProxyDataSummary(proxy.dataset, split.where, split.streamed, split.size, split.num_classes,
                            data.train.channels, proxy.train_subset, proxy.heldout, proxy.split, proxy.split_seed,
                            len(np.unique(labels)), len(labels))


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


def train_child(arch: Architecture, proxy: ProxyConfig | None = None, num_classes: int | None = None) -> ProxyResult:
    """Trains `proxy_architecture(arch, proxy)` on the proxy task and scores it on the held-out sample.

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
        from mnas.trainer.devices import set_precision
        from mnas.trainer.train import set_up_tensorflow

        self.proxy = proxy = proxy or ProxyConfig()
        # pools fixed by the first child of a reused actor; ValueError for mixed precision without a GPU
        self._tf = tf = set_up_tensorflow(proxy.threads, mixed_precision=proxy.mixed_precision)
        import keras

        from mnas.trainer.builder import build_model

        self.data = data = _child_data(proxy, num_classes)
        # In memory: (images, labels) arrays, as they always were; streamed: trainer.splits.Examples.
        self.train_data = (data.train.images, data.train.labels) if not data.split.streamed else data.train
        self.held_data = (data.heldout.images, data.heldout.labels) if not data.split.streamed else data.heldout
        num_classes = data.num_classes
        self.parch = parch = proxy_architecture(arch, proxy)
        keras.backend.clear_session(free_memory=True)
        set_precision(proxy.mixed_precision)               # clear_session resets Keras' dtype policy
        keras.utils.set_random_seed(proxy.seed)
        self._cpu_started = time.process_time()
        started = time.perf_counter()
        try:
            self.model = build_model(parch, num_classes, (proxy.image_size, proxy.image_size, data.train.channels),
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
        self.per_epoch = data.train.count // proxy.batch_size   # train_subset (split_indices checks it)
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

        from mnas.trainer.splits import as_examples

        proxy, tf = self.proxy, self._tf
        self._batches = as_examples(self.train_data).training_batches(
            proxy.batch_size, proxy.image_size, proxy.seed, self.total_steps, parallel=proxy.threads)
        optimizer = _optimizer(proxy, self.total_steps)
        mixed = proxy.mixed_precision
        if mixed:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)   # float16 gradients would underflow
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model, variables = self.model, self.model.trainable_variables
        optimizer.build(variables)

        # A hand-written step rather than model.fit: it gave the same losses bit for bit and took a third less CPU
        # time per child here (fit's callbacks, metrics and epoch machinery cost more than a small step).
        @tf.function(reduce_retracing=True)
        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, tf.cast(model(x, training=True), tf.float32) if mixed else model(x, training=True))
                scaled = optimizer.scale_loss(loss) if mixed else loss
            optimizer.apply(tape.gradient(scaled, variables), variables)
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
                x, y = self._next(self._batches)
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
        """(top-1 accuracy, mean cross-entropy) on the held-out sample, or on its first `limit` images."""
        from mnas.trainer.splits import as_examples
        from mnas.trainer.train import scores

        held = as_examples(self.held_data)
        if limit is not None:
            held = held.head(limit)
        known = held.known_labels()
        with self._guard("scoring"):
            eval_step = self._tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
            batches = iter(held.scoring_batches(500, self.proxy.image_size, parallel=self.proxy.threads))
            outputs, seen = [], []
            while (batch := self._next(batches, last=True)) is not None:
                outputs.append(eval_step(batch[0]).numpy())
                seen.append(batch[1].numpy())
            logits = np.concatenate(outputs, axis=0).astype(np.float32)
        labels = np.asarray(known) if known is not None else np.concatenate(seen).astype(np.int64)
        if not np.all(np.isfinite(logits)):
            raise ChildFailed(Failure.NAN_LOSS,
                              "held-out logits are not finite (diverged weights or batch-norm statistics)")
        if known is None and limit is None:      # labels read from the records just now: the check of _child_data
            problem = _one_class(labels, self.proxy, self.data.split.where)
            if problem:
                raise ChildFailed(Failure.DATA_ERROR, problem)
        scored = scores(logits, labels)
        return scored["top1"], scored["loss"]

    def _next(self, batches, last: bool = False):
        """The next batch of `batches`; a failure to read or decode the data is this child's data_error. With
        `last`, None at the end instead of StopIteration."""
        tf = self._tf
        try:
            return next(batches)
        except StopIteration:
            if last:
                return None
            raise
        except (tf.errors.ResourceExhaustedError, MemoryError):
            raise
        except tf.errors.OpError as err:
            detail = (err.message or str(err)).strip().splitlines()[0]
            raise ChildFailed(Failure.DATA_ERROR, f"reading {self.proxy.dataset} ({self.data.split.where}): "
                                                  f"{type(err).__name__}: {detail}") from err

    def result(self) -> ProxyResult:
        """Scores the whole held-out sample; call after training to `total_steps`."""
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
            epochs=steps * batch / self.data.train.count, build_seconds=self.build_seconds,
            train_seconds=self.train_seconds, eval_seconds=eval_seconds,
            images_per_second=steps * batch / max(self.train_seconds, 1e-9),
            proxy_params=int(sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)),
            proxy_arch=self.parch.block_strings, cpu_seconds=time.process_time() - self._cpu_started,
            threads=int(self._tf.config.threading.get_intra_op_parallelism_threads() or self.proxy.threads))


def _child_data(proxy: ProxyConfig, num_classes: int | None) -> ProxyData:
    """`proxy_data` for one child: unreadable data, labels that do not fit, or a held-out sample of one class
    (when its labels are known without reading images) are this child's data_error; a config that asks for more
    images than the split has stays a ValueError (every child would fail alike)."""
    from mnas.trainer.splits import open_training_split

    try:
        split = open_training_split(proxy.dataset, proxy.data_dir, num_classes or proxy.num_classes)
    except (OSError, ValueError) as err:
        raise ChildFailed(Failure.DATA_ERROR, str(err)) from err
    data = _draw(split, proxy)
    labels = data.heldout.known_labels()
    problem = None if labels is None else _one_class(labels, proxy, split.where)
    if problem:
        raise ChildFailed(Failure.DATA_ERROR, problem)
    return data


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
