"""Full training of one architecture: the paper's recipe, per-epoch checkpoints, resume, TensorBoard, metrics.

`train(config, out_dir)` trains `config.arch` on `config.dataset` with `config.recipe` (trainer.recipe) and
evaluates top-1 / top-5 on the evaluation set after every epoch -- with the averaged weights, as the official
trainer does, and with the raw weights beside them. The run directory's files are described in
`trainer.checkpoint`. After a crash, `train(config, out_dir, resume=True)` reloads the last checkpoint and
continues with the next epoch; as every random choice is a function of (seed, epoch) (trainer.pipelines) and
TensorFlow ops are deterministic, the resumed run computes the same weights an uninterrupted one would have.

Small images. A network built for 224 pixels halves its feature map five times; at 28 or 32 pixels the last
blocks would see a single pixel. So on images smaller than 64 pixels the stem's stride is removed by default
(`stem_stride=None` -> 1), the usual CIFAR adaptation of ImageNet networks and the one the search's proxy makes
(search/proxy.py); the trained and exported model is that architecture at that size, as config.json records.

A hand-written `tf.function` step rather than `model.fit`: the weight average, the official L2 penalty and
exact resumption of the optimizer and the average need hooks `fit` does not have; benchmarks/train_speed.py
measures both on the same model. No XLA: `jit_compile` was measured 7x slower on this project's CPUs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from mnas.search.arch import Architecture
from mnas.search.fileio import read_json
from mnas.trainer import checkpoint as ckpt
from mnas.trainer.progress import Progress
from mnas.trainer.recipe import Recipe

SMALL_IMAGE = 64  # below this side, the stem's stride is removed by default
TOP5_MIN_CLASSES = 6  # top-5 is reported only where it says more than top-1 (5 of 3 classes is every image)
SHORT_RUN_STEPS = 1_000
"""Fewer optimizer steps than this, and a run's accuracies are not its architecture's. BENCHMARKS.md ("Full
training", Fashion-MNIST, the paper's recipe): after 468 steps the averaged weights of both models tried were near
chance (12% and 19% top-1) and the raw weights 69% and 25% -- the weights still move fast at the peak learning
rate, and the average (the last ~1/9 of the run, the official warm-up) and batch norm's moving statistics lag them;
after 936 steps the averaged weights led the raw ones by 3-10 points and ranked the two models. A shorter run
checks the pipeline; it does not measure a model."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What to train and on what; saved as config.json and checked again on --resume."""

    arch: Architecture
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    epochs: int = 350
    batch_size: int = 128
    image_size: int | None = None
    """None: an array dataset's native size (28 Fashion-MNIST, 32 CIFAR), the architecture's for file datasets."""
    fit: str = "resize"
    stem_stride: int | None = None
    """None: 1 below 64 pixels, else the architecture's."""
    num_classes: int | None = None
    train_limit: int | None = None
    eval_limit: int | None = None
    seed: int = 0
    recipe: Recipe = Recipe()
    arch_source: str = ""
    mixed_precision: bool = False
    """Keras' mixed_float16 policy (GPUs only, trainer.devices); a run resumes only with the same setting, as its
    optimizer then holds a loss scale."""
    sync_bn: bool = False
    """With several replicas, batch-norm statistics over the global batch instead of each replica's slice
    (trainer.distributed); no effect on one device."""

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("mixed_precision", "sync_bn"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name.replace('_', '-')} must be true or false, got {getattr(self, name)!r}")
        if self.stem_stride is not None and self.stem_stride not in (1, 2):
            raise ValueError(f"stem-stride must be 1 or 2, got {self.stem_stride!r}")
        if self.fit not in ("resize", "pad"):
            raise ValueError(f"fit must be 'resize' or 'pad', got {self.fit!r}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["arch"] = self.arch.to_dict()
        data["recipe"] = self.recipe.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        fields = dict(data)
        fields["arch"] = Architecture.from_dict(fields["arch"])
        fields["recipe"] = Recipe.from_dict(fields.get("recipe", {}))
        return cls(**fields)


def open_data(config: TrainConfig):
    """The run's InputData (trainer.pipelines); raises before anything is written if the data is unusable."""
    from mnas.trainer.pipelines import FILE_DATASETS, open_input

    size = config.image_size or (config.arch.resolution if config.dataset in FILE_DATASETS else None)
    return open_input(config.dataset, config.data_dir, size, config.fit, config.num_classes,
                      config.train_limit, config.eval_limit)


def model_architecture(config: TrainConfig, data) -> Architecture:
    """The architecture actually built: the configured one at the data's image size, small-image stem stride,
    and the recipe's dropout when it overrides the architecture's."""
    size = data.image_shape[0]
    stride = config.stem_stride or (1 if size < SMALL_IMAGE else config.arch.stem_stride)
    dropout = config.arch.dropout if config.recipe.dropout is None else config.recipe.dropout
    return config.arch.replace(resolution=size, stem_stride=stride, dropout=dropout)


def build(config: TrainConfig, data):
    """The Keras model of `config` for `data`, batch-norm momentum from the recipe."""
    import keras

    from mnas.trainer.builder import build_model

    model = build_model(model_architecture(config, data), data.num_classes, data.image_shape)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = config.recipe.bn_momentum
    return model


def import_tensorflow():
    """TensorFlow, imported and its devices scanned with the C++ start-up lines hidden (shown with MNAS_VERBOSE=1,
    which `--verbose` sets).

    Those lines (oneDNN, "Could not find cuda drivers", `E0000 ... failed call to cuInit` on a machine without a
    GPU) are printed while TensorFlow loads, before TF_CPP_MIN_LOG_LEVEL applies, and would otherwise surround
    the command's own output and its one-line errors. The device scan does not create the runtime: thread counts
    can still be set afterwards."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ.get("MNAS_VERBOSE") == "1":
        import tensorflow as tf

        return tf
    from mnas.trainer.tflite import quiet

    with quiet():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf


def set_up_tensorflow(threads: int = 0, mixed_precision: bool = False):
    """Sets up TensorFlow for training in this process and returns the module: the one place every process that
    trains (a replay, a Ray Train worker, a search's child worker) prepares it.

    Imports TensorFlow quietly (import_tensorflow), turns memory growth on for every visible GPU (no process
    reserves all of a GPU's memory: trainer.devices), fixes the thread count if `threads` is given (0 leaves
    TensorFlow's default, every core), makes ops deterministic (exact resume), and sets Keras' dtype policy:
    `mixed_float16` if `mixed_precision`, else float32 (so a process reused for another run gets its own).
    Call it before any TensorFlow op runs: thread pools and GPU memory settings are fixed at the first. As
    `keras.backend.clear_session()` resets the dtype policy, code that clears the session afterwards sets the
    policy again with `trainer.devices.set_precision` (train() does).

    Raises:
        ValueError: `mixed_precision` on a machine without a visible GPU.
    """
    from mnas.trainer.devices import configure_gpus, set_precision

    tf = import_tensorflow()
    gpus = configure_gpus(tf)
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # TensorFlow already ran an op in this process: its pools are fixed
    tf.config.experimental.enable_op_determinism()
    set_precision(mixed_precision, gpus)
    return tf


def prepare_run_dir(config: TrainConfig, out_dir: str | os.PathLike, resume: bool) -> Path | None:
    """Checks the run directory before training; returns the checkpoint to resume from, if any.

    A fresh run refuses a directory that already holds a run (never overwrites a user's checkpoint); a resumed
    run requires the same configuration, except for a larger number of epochs.
    """
    out = Path(out_dir)
    saved = out / ckpt.CONFIG
    if not resume:
        if saved.exists() or (out / ckpt.CHECKPOINT).exists():
            raise ValueError(f"{out} already holds a training run: pass --resume to continue it, "
                             "or choose another --out")
        return None
    if not saved.exists():
        raise ValueError(f"--resume: {out} holds no training run ({ckpt.CONFIG} missing)")
    previous = read_json(saved)
    mine = config.to_dict()
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # settings added since it was written
    changed = sorted(k for k in mine if k not in ("epochs", "arch_source")
                     and previous.get(k, defaults.get(k)) != mine[k])
    if changed:
        raise ValueError(f"--resume: {out} was trained with different {', '.join(changed)}; "
                         "resume with the same settings (only --epochs may change)")
    path = out / ckpt.CHECKPOINT
    return path if path.exists() else None


def write_config(out: Path, config: TrainConfig, data) -> None:
    """config.json: the configuration, and the model actually built (its architecture at the data's size)."""
    ckpt.write_json(out / ckpt.CONFIG, {**config.to_dict(), "model": {
        "arch": model_architecture(config, data).to_dict(), "num_classes": data.num_classes,
        "image_shape": list(data.image_shape), "num_train": data.num_train, "num_eval": data.num_eval}})


def train(config: TrainConfig, out_dir: str | os.PathLike, resume: bool = False, threads: int = 0,
          on_epoch_end: Callable[[int, dict], None] | None = None, log: Callable[[str], None] | None = None,
          data=None, devices: int | None = None, replicas=None) -> dict[str, Any]:
    """Trains `config` into `out_dir`; returns the summary (also written to summary.json).

    Args:
        resume: continue the run in `out_dir` from its last checkpoint (from scratch if none was written).
        threads: TensorFlow threads; 0 leaves TensorFlow's default (all cores).
        on_epoch_end: called with (epoch, metrics row) after each epoch's checkpoint is on disk (tests use it
            to simulate a crash).
        log: where progress lines go (default: stdout).
        data: an already opened InputData (export and tests reuse one); None opens `config`'s.
        devices: how many local devices to replicate over (trainer.devices.pick_devices): None means every
            local GPU, or the CPU on a machine without one. One device trains with no tf.distribute strategy at
            all; several train data-parallel under MirroredStrategy (trainer.distributed), config.batch_size
            being the global batch.
        replicas: a trainer.distributed.Replicas to train under instead of local devices: a Ray Train worker's
            MultiWorkerMirroredStrategy (trainer.ray_replay). Only its chief (worker 0) evaluates, logs and
            writes `out_dir`; every worker restores the checkpoint it finds there.

    Raises:
        ValueError: bad configuration, unusable data, more devices than the machine has, a global batch that
            does not split over the replicas, or a run directory that does not fit `resume`.
    """
    tf = set_up_tensorflow(threads, config.mixed_precision)
    import keras

    from mnas.trainer import distributed as dist
    from mnas.trainer.devices import set_precision
    from mnas.trainer.recipe import WeightEMA, decayed_weights, make_optimizer, make_schedule

    if replicas is None:
        replicas = dist.local_replicas(tf, devices)  # None: one device, no strategy
    dist.check_global_batch(config.batch_size, replicas)
    chief = replicas is None or replicas.chief
    log = (log or (lambda line: print(line, flush=True))) if chief else (lambda line: None)
    data = data or open_data(config)
    steps_per_epoch = data.steps_per_epoch(config.batch_size)
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {config.batch_size} exceeds the {data.num_train} training images")
    resume_from = prepare_run_dir(config, out_dir, resume)
    arch = model_architecture(config, data)
    keras.backend.clear_session(free_memory=True)
    set_precision(config.mixed_precision)  # clear_session reset Keras' dtype policy
    keras.utils.set_random_seed(config.seed)

    def scope():  # variables created under it are mirrored across the replicas
        return replicas.scope() if replicas is not None else contextlib.nullcontext()

    with scope():
        model = build(config, data)  # before the run directory exists: an architecture that cannot build leaves none
    if replicas is not None and config.sync_bn:
        dist.use_synchronized_batch_norm(model)
    out = Path(out_dir)
    if chief:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.remove_temporaries(out)  # a run killed while writing a file leaves its temporary copy
        write_config(out, config, data)
    recipe = config.recipe
    schedule = make_schedule(recipe, config.batch_size, steps_per_epoch, config.epochs)  # the global batch's
    with scope():
        optimizer = make_optimizer(recipe, schedule)
        if config.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)  # float16 gradients would underflow
        trainable = model.trainable_variables
        optimizer.build(trainable)
        ema = WeightEMA(model, recipe.ema_decay) if recipe.ema_decay > 0 else None
    history: list[dict] = []
    start_epoch = 0
    if resume_from is not None:
        groups, meta = ckpt.load_state(resume_from)
        ckpt.assign_all(model.variables, groups["model"], "model", resume_from)
        ckpt.assign_all(optimizer.variables, groups["optimizer"], "optimizer", resume_from)
        if ema is not None:
            ckpt.assign_all(ema.shadows, groups["ema"], "weight-average", resume_from)
        history, start_epoch = meta["history"], meta["epoch"]
        if chief:  # metrics.csv follows the checkpoint; a run killed between the two writes left it an epoch behind
            ckpt.write_metrics(out / ckpt.METRICS, history)
        log(f"resuming {out} after epoch {start_epoch} (optimizer step {int(optimizer.iterations.numpy())})")
        if start_epoch >= config.epochs:
            log(f"{out}: already trained {start_epoch} epochs (asked for {config.epochs}); nothing to do")

    decayed = decayed_weights(model)
    mixed = config.mixed_precision
    if replicas is None:
        loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing)

        @tf.function(reduce_retracing=True)
        def train_step(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                if mixed:
                    logits = tf.cast(logits, tf.float32)
                loss = loss_fn(tf.one_hot(y, data.num_classes), logits)
                penalty = tf.add_n([tf.nn.l2_loss(v) for v in decayed]) if decayed else 0.0
                total = loss + recipe.weight_decay * penalty
                if mixed:
                    total = optimizer.scale_loss(total)
            optimizer.apply(tape.gradient(total, trainable), trainable)
            if ema is not None:
                ema.update(optimizer.iterations)
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
            return loss, correct

        def batches(epoch):
            return data.train(config.batch_size, config.seed, epoch)
    else:
        per_example = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing,
                                                           reduction=None)
        train_step = dist.make_replica_step(tf, replicas, model, optimizer, ema, per_example, decayed,
                                            recipe.weight_decay, data.num_classes, config.batch_size, mixed)
        policy = dist.shard_policy(tf, replicas.workers)

        def batches(epoch):
            return dist.epoch_batches(tf, replicas, data, config.batch_size, config.seed, epoch, steps_per_epoch,
                                      policy)

    eval_step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    writers = ({name: tf.summary.create_file_writer(str(out / "tensorboard" / name)) for name in ("train", "eval")}
               if chief else {})
    progress = Progress(steps_per_epoch, stream=sys.stdout if chief else _Discard())
    first_step = int(optimizer.iterations.numpy())
    batch = config.batch_size  # every batch is full (the last partial one is dropped)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        losses, correct, seen = 0.0, 0.0, 0
        progress.start(f"epoch {epoch + 1}/{config.epochs}")
        for step, (x, y) in enumerate(_reading(batches(epoch), tf, config.dataset), 1):
            loss, right = train_step(x, y)
            loss = float(loss)
            if not math.isfinite(loss):
                raise ValueError(f"training diverged: loss {loss} at epoch {epoch + 1}, step {step} "
                                 "(lower --lr or raise --batch-size)")
            losses, correct, seen = losses + loss * batch, correct + float(right), seen + batch
            progress.update(step, f"loss {losses / seen:.4f} top-1 {100 * correct / seen:.1f}%")
            global_step = first_step + (epoch - start_epoch) * steps_per_epoch + step  # no extra sync
            if global_step % 50 == 0 and writers:
                with writers["train"].as_default(step=global_step):
                    _scalar("loss", loss)
                    _scalar("learning_rate", float(schedule(global_step)))
        progress.finish()
        train_seconds = time.perf_counter() - started
        global_step = int(optimizer.iterations.numpy())
        if not chief:  # a worker of a multi-node run: the chief evaluates and keeps the run's files
            row = {"epoch": epoch + 1, "step": global_step, "train_loss": losses / seen, "train_top1": correct / seen,
                   "train_seconds": train_seconds, "images_per_second": seen / train_seconds}
            history.append(row)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row)
            continue
        started = time.perf_counter()
        raw = evaluate(eval_step, data, label=f"evaluate epoch {epoch + 1}")
        if ema is not None:
            with ema.swapped():
                averaged = evaluate(eval_step, data, label=f"evaluate epoch {epoch + 1} (averaged)")
        else:
            averaged = raw
        row = {"epoch": epoch + 1, "step": global_step, "learning_rate": float(schedule(global_step)),
               "train_loss": losses / seen, "train_top1": correct / seen,
               "eval_loss": averaged["loss"], "eval_top1": averaged["top1"], "eval_top5": averaged["top5"],
               "raw_eval_loss": raw["loss"], "raw_eval_top1": raw["top1"], "raw_eval_top5": raw["top5"],
               "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - started,
               "images_per_second": seen / train_seconds}
        history.append(row)
        ema_values = [s.numpy() for s in ema.shadows] if ema is not None else []
        ckpt.save_state(out / ckpt.CHECKPOINT, [v.numpy() for v in model.variables],
                        [v.numpy() for v in optimizer.variables], ema_values,
                        {"epoch": epoch + 1, "step": global_step, "history": history})
        ckpt.write_metrics(out / ckpt.METRICS, history)
        with writers["eval"].as_default(step=global_step):
            for key in ("eval_loss", "eval_top1", "eval_top5", "raw_eval_top1"):
                _scalar(key.replace("eval_", ""), row[key])
        with writers["train"].as_default(step=global_step):
            for key in ("train_loss", "train_top1", "images_per_second", "learning_rate"):
                _scalar(key.replace("train_", "epoch_"), row[key])
        weights = "averaged" if ema is not None else "raw"
        top5 = f" top-5 {100 * row['eval_top5']:.2f}%" if data.num_classes >= TOP5_MIN_CLASSES else ""
        log(f"epoch {epoch + 1}/{config.epochs}  loss {row['train_loss']:.4f}  train top-1 "
            f"{100 * row['train_top1']:.2f}%  | eval ({weights}) top-1 {100 * row['eval_top1']:.2f}%{top5}"
            + (f"  raw top-1 {100 * raw['top1']:.2f}%" if ema is not None else "")
            + f"  | lr {row['learning_rate']:.5f}  {row['images_per_second']:.0f} img/s  {train_seconds:.0f}s")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    for writer in writers.values():
        writer.flush()
    final = history[-1] if history else {}
    summary = {"epochs": len(history), "steps": int(optimizer.iterations.numpy()), "final": final,
               "best_eval_top1": max((r["eval_top1"] for r in history), default=None) if chief else None,
               "params": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
               "model_arch": arch.to_dict(), "num_classes": data.num_classes, "out_dir": str(out),
               "replicas": replicas.count if replicas is not None else 1}
    if chief:
        ckpt.write_json(out / ckpt.SUMMARY, summary)
    summary["model"], summary["ema"], summary["data"] = model, ema, data
    return summary


def _reading(batches, tf, dataset: str):
    """The batches, with an input pipeline's error (a corrupt image or shard) as one line naming the dataset --
    and only the pipeline's: an error of the step itself (an all-reduce whose peer died) stays what it is."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as err:
            raise ValueError(f"reading {dataset} training data: {err.message.strip().splitlines()[0]}") from None
        yield batch


class _Discard:
    """A stream that drops what it is given: the progress bar of a worker that is not the chief."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def reading(summary: Mapping[str, Any], config: TrainConfig) -> list[str]:
    """What to read in a finished run, as lines for the user (issue 23): the accuracy to quote and the weights it
    comes from; for a run shorter than SHORT_RUN_STEPS, a warning that neither score measures the architecture
    yet, with a budget that would (in epochs of this run and minutes at its pace); and, for a search's child, that
    the search's proxy score is another measurement."""
    final = summary.get("final") or {}
    if not final:
        return []
    steps, epochs = int(summary["steps"]), int(summary["epochs"])
    averaged = config.recipe.ema_decay > 0
    top5 = (f", top-5 {100 * final['eval_top5']:.2f}%"
            if summary.get("num_classes", TOP5_MIN_CLASSES) >= TOP5_MIN_CLASSES else "")
    run = f"{epochs} epoch{'s' if epochs != 1 else ''} ({steps:,} steps)"
    short = steps < SHORT_RUN_STEPS
    if not averaged:
        lines = [f"done after {run}: eval top-1 {100 * final['eval_top1']:.2f}%{top5} (raw weights: "
                 "--ema-decay 0 keeps no average)"]
    elif short:
        lines = [f"done after {run}: eval top-1 {100 * final['eval_top1']:.2f}% with the averaged weights, "
                 f"{100 * final['raw_eval_top1']:.2f}% with the raw ones -- too short a run for either to be this "
                 "architecture's accuracy"]
    else:
        lines = [f"done after {run}: eval top-1 {100 * final['eval_top1']:.2f}%{top5} with the averaged weights, the "
                 f"number to read (the paper evaluates them, --export-dir exports them; raw weights "
                 f"{100 * final['raw_eval_top1']:.2f}%)"]
    if short:
        per_epoch = max(1, round(steps / max(epochs, 1)))
        needed = math.ceil(SHORT_RUN_STEPS / per_epoch)
        seconds = needed * (final.get("train_seconds", 0.0) + final.get("eval_seconds", 0.0))
        pace = f", about {_duration(seconds)} at this run's pace" if seconds > 0 else ""
        window = min((10 + steps) / 9, 1 / (1 - config.recipe.ema_decay)) if averaged else 0  # official warm-up
        lag = f"the weight average (about its last {window:.0f} steps) and " if averaged else ""
        difference = 100 * abs(final["eval_top1"] - final["raw_eval_top1"]) if averaged else 0.0
        gap = f" (here the two scores differ by {difference:.1f} points)" if difference >= 0.5 else ""
        lines.append(f"warning: {steps:,} steps is too short to measure a model: its weights still move fast, "
                     f"and {lag}batch norm's statistics lag them{gap}. To compare architectures train at least "
                     f"{SHORT_RUN_STEPS:,} steps: --epochs {needed} here{pace} (the paper's recipe: 350 epochs of "
                     "ImageNet)")
    source = config.arch_source
    if source and ":" in source and not os.path.exists(source):
        lines.append("note: the search's accuracy for this child came from its proxy task (an adapted copy, a "
                     "subset, another recipe): it ranks children within the search and does not predict this "
                     "number")
    return lines


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 90:
        return f"{max(1, round(minutes))} minute{'s' if round(minutes) > 1 else ''}"
    return f"{minutes / 60:.1f} hours"


def _scalar(tag: str, value: float) -> None:
    """A TensorBoard scalar written with TensorFlow's own summary op: the same event TensorBoard's
    `tf.summary.scalar` writes (a float tensor tagged for the 'scalars' plugin), without needing the tensorboard
    package installed to *write* logs -- only to view them (`pip install tensorboard`)."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag, tf.constant(float(value), tf.float32), metadata=metadata)


def evaluate(eval_step, data, batch_size: int = 250, label: str = "evaluate") -> dict[str, float]:
    """Mean cross-entropy (no smoothing), top-1 and top-5 accuracy over the whole evaluation set."""
    logits, labels = predict(eval_step, data, batch_size, label)
    return scores(logits, labels)


def predict(eval_step, data, batch_size: int = 250, label: str = "evaluate") -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels over the evaluation set, with a progress bar: ImageNet's 50,000 evaluation images take
    minutes on a CPU."""
    outputs, labels = [], []
    progress = Progress(math.ceil(data.num_eval / batch_size), stream=sys.stdout)
    progress.start(label)
    for step, (x, y) in enumerate(data.evaluate(batch_size), 1):
        outputs.append(np.asarray(eval_step(x)))
        labels.append(y.numpy())
        progress.update(step)
    progress.finish()
    return np.concatenate(outputs), np.concatenate(labels)


def scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Loss, top-1 and top-5 of logits (float64 softmax); top-5 is top-k with k = min(5, classes)."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    k = min(5, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return {"loss": float(-log_probs[rows, labels].mean()), "top1": float((top[:, 0] == labels).mean()),
            "top5": float((top == labels[:, None]).any(axis=1).mean())}


def load_trained(run_dir: str | os.PathLike, averaged: bool = True, data=None, threads: int = 0,
                 data_dir: str | None = None):
    """A finished (or interrupted) run's model with its last checkpoint's weights -- the averaged ones unless
    `averaged` is False -- and its InputData (read from `data_dir` when the dataset moved since training).
    Returns (model, config dict, data)."""
    run = Path(run_dir)
    if not (run / ckpt.CONFIG).is_file():
        raise ValueError(f"{run}: not a training run ({ckpt.CONFIG} missing)")
    if not (run / ckpt.CHECKPOINT).is_file():
        raise ValueError(f"{run}: no checkpoint yet (no epoch has finished)")
    saved = read_json(run / ckpt.CONFIG)
    config = TrainConfig.from_dict({k: v for k, v in saved.items()
                                    if k in {f.name for f in dataclasses.fields(TrainConfig)}})
    if data_dir:
        config = dataclasses.replace(config, data_dir=data_dir)
    set_up_tensorflow(threads)
    import keras

    data = data or open_data(config)
    keras.backend.clear_session(free_memory=True)
    model = build(config, data)
    groups, _ = ckpt.load_state(run / ckpt.CHECKPOINT)
    ckpt.assign_all(model.variables, groups["model"], "model", run / ckpt.CHECKPOINT)
    if averaged and groups.get("ema"):
        floats = [v for v in model.variables if "float" in str(v.dtype)]
        ckpt.assign_all(floats, groups["ema"], "weight-average", run / ckpt.CHECKPOINT)
    return model, saved, data
