"""Data-parallel replay inside one TensorFlow process: the strategy, its input and its training step.

One device trains as `trainer.train` always did, with no strategy at all. Several local devices (the GPUs of a
machine, or logical CPU devices in the tests) replicate the model with `tf.distribute.MirroredStrategy`; a Ray
Train worker of a multi-node replay (trainer.ray_replay) replicates it across machines with
`MultiWorkerMirroredStrategy`, whose cluster Ray Train describes in TF_CONFIG. Both run the same step:

* `--batch-size` is the GLOBAL batch: every step consumes the same images, with the same augmentation, as a
  one-device run of that batch size -- the epoch's global batches are split into equal per-replica slices, so the
  learning rate, scaled by the paper's rule (0.016 per 256 images, trainer.recipe) from the global batch, means
  the same thing on 1 or 64 replicas;
* each replica's loss is its images' summed cross-entropy divided by the GLOBAL batch (and the L2 penalty divided
  by the number of replicas), so the gradients Keras' optimizer sums across replicas are exactly the one-device
  gradients of the mean loss;
* variables (model, optimizer, weight average) are created under `strategy.scope()` and mirrored; the weight
  average is updated once per step, in cross-replica context, after the optimizer.

Batch norm normalises each replica's slice with the slice's own statistics (Keras' and MirroredStrategy's
default, and what the per-GPU batch norm of large-batch ImageNet training does) unless `sync_bn` asks for
statistics over the global batch (Keras' `synchronized=True`: two all-reduces per batch-norm layer and step).
Dropout masks come from each replica's copy of the same seed state, so slices at the same position in different
replicas share a mask; with dropout off and `sync_bn`, a replicated run computes a one-device run's numbers up to
floating-point summation order (tests/test_distributed.py measures how far apart they are).

Input across workers. Every worker trains on its own slices of every global batch, so no two workers train on
the same image and the global batches are exactly a one-device run's. File datasets (ImageNet TFRecords, image
folders: `InputData.by_worker`) hand each worker its slices themselves (trainer.pipelines: the epoch's stream is
numbered, shared out, and only then read and decoded), so a worker decodes its own images only; they reach the
strategy through `distribute_datasets_from_function`, batched per worker, with tf.data's auto-sharding OFF.
Arrays (Fashion-MNIST, CIFAR, .npz: in every worker's memory anyway, and cheap to slice) keep tf.distribute's
DATA auto-sharding: each worker runs the epoch's global batches and keeps its own slices. ImageNet is not
sharded by TFRecord file (which would also spare each worker reading the others' records): a worker's batches
would then hold other images than its slices of a one-device run's, and shards of unequal sizes would give
workers unequal numbers of steps.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any


@dataclasses.dataclass
class Replicas:
    """A strategy and this process's place in it: `workers` processes (Ray Train workers), this one `worker`."""

    strategy: Any
    workers: int = 1
    worker: int = 0

    @property
    def count(self) -> int:
        """Replicas in sync across every worker: the global batch is split into this many slices."""
        return int(self.strategy.num_replicas_in_sync)

    @property
    def chief(self) -> bool:
        """The one process that evaluates, logs and writes the run directory (worker 0)."""
        return self.worker == 0

    def scope(self):
        return self.strategy.scope()


def local_replicas(tf, devices: int | None) -> Replicas | None:
    """MirroredStrategy over `devices` local devices (None: every local GPU); None when that is one device,
    which trains with no strategy (the single-device path, unchanged)."""
    from mnas.trainer.devices import pick_devices

    names = pick_devices(tf, devices)
    if len(names) == 1:
        return None
    if "GPU" in names[0]:
        return Replicas(tf.distribute.MirroredStrategy(names))  # NCCL all-reduce where TensorFlow has it
    # Logical CPU devices: MirroredStrategy's default there, collective all-reduce, numbers its collectives from
    # the same keys in every strategy, so a second strategy in one process (a second train() call) collides with
    # the first ("Shape mismatch in the collective instance"); summing on one device has no such keys.
    return Replicas(tf.distribute.MirroredStrategy(names, cross_device_ops=tf.distribute.ReductionToOneDevice()))


def check_global_batch(batch_size: int, replicas: Replicas | None) -> None:
    """The global batch must split into equal per-replica slices (uneven slices would weigh batch norm's
    statistics unevenly and leave one traced shape per slice size)."""
    if replicas is not None and batch_size % replicas.count:
        raise ValueError(f"--batch-size {batch_size} (the global batch) does not split evenly over "
                         f"{replicas.count} replicas: use a multiple of {replicas.count}")


def use_synchronized_batch_norm(model) -> int:
    """Makes every batch-norm layer of `model` compute its training statistics over the global batch; returns
    how many layers it changed."""
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def shard_policy(tf, workers: int):
    """tf.data's auto-shard policy for `workers` processes reading a dataset whole (arrays): DATA (see the module
    docstring), OFF for one."""
    policy = tf.data.experimental.AutoShardPolicy
    return policy.DATA if workers > 1 else policy.OFF


def epoch_batches(tf, replicas: Replicas, data, batch_size: int, seed: int, epoch: int, steps: int, policy):
    """`steps` distributed global batches of epoch `epoch`: per-replica slices of `data.train(batch_size, seed,
    epoch)`, this worker's share only -- read alone by this worker from a file dataset, else cut by `policy`
    from the whole batches."""
    if replicas.workers > 1 and getattr(data, "by_worker", False):
        distributed = replicas.strategy.distribute_datasets_from_function(
            lambda context: worker_batches(tf, data, batch_size, seed, epoch, context))
    else:
        dataset = data.train(batch_size, seed, epoch)
        distributed = replicas.strategy.experimental_distribute_dataset(_with_policy(tf, dataset, policy))
    return itertools.islice(distributed, steps)


def worker_batches(tf, data, batch_size: int, seed: int, epoch: int, context):
    """One worker's input (`context`: its tf.distribute.InputContext): its slices of the epoch's global batches,
    read by it alone, in per-replica batches that its replicas take in turn -- the slices, in the order, that DATA
    auto-sharding of the global batches gives the same replicas."""
    workers, replicas = context.num_input_pipelines, context.num_replicas_in_sync
    dataset = data.train(batch_size, seed, epoch, workers=workers, worker=context.input_pipeline_id)
    if replicas > workers:  # several replicas (GPUs) a worker: each takes its part of the worker's slice
        dataset = dataset.rebatch(context.get_per_replica_batch_size(batch_size), drop_remainder=True)
    return _with_policy(tf, dataset, tf.data.experimental.AutoShardPolicy.OFF)  # sharded already


def _with_policy(tf, dataset, policy):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return dataset.with_options(options)


def make_replica_step(tf, replicas: Replicas, model, optimizer, ema, loss_fn, decayed: list, weight_decay: float,
                      num_classes: int, global_batch: int, mixed_precision: bool):
    """The distributed training step: (x, y) per-replica -> (mean loss over the global batch, correct count)."""
    strategy = replicas.strategy
    trainable = model.trainable_variables
    per_replica_decay = weight_decay / replicas.count

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), tf.float32)
            loss = tf.reduce_sum(loss_fn(tf.one_hot(y, num_classes), logits)) / global_batch
            penalty = tf.add_n([tf.nn.l2_loss(v) for v in decayed]) if decayed else 0.0
            total = loss + per_replica_decay * penalty
            if mixed_precision:
                total = optimizer.scale_loss(total)
        optimizer.apply(tape.gradient(total, trainable), trainable)  # Keras sums the gradients across replicas
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
        return loss, correct

    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        loss, correct = strategy.run(replica_step, args=(x, y))
        if ema is not None:
            ema.update(optimizer.iterations)  # cross-replica context: once per step, on every copy
        total = tf.distribute.ReduceOp.SUM
        return strategy.reduce(total, loss, axis=None), strategy.reduce(total, correct, axis=None)

    return train_step
