"""Data-parallel replay on this CPU-only machine: two logical CPU devices against one device, and the checks that
come before any replica starts (devices, cluster capacity, mixed precision, resume of older runs).

Two logical devices must be configured before TensorFlow creates its runtime, so the comparison runs in a fresh
subprocess (REPLICATE below) that splits the CPU, then trains the same tiny configuration three times: on one
device (no strategy: the ordinary path), on two devices with per-replica batch norm (the default), and on two
devices with batch norm over the global batch (`sync_bn`). One step per epoch, so each epoch's train_loss is one
step's loss: the loss curve step by step.

Tolerances, measured (12 steps, the recipe's learning rate, dropout off: dropout masks are drawn per replica):
* sync_bn: the first three steps' losses are identical to the one-device ones; later steps within 2.7e-5,
  relative. What differs is only the order of floating-point sums (gradients summed over two halves, then
  across replicas; batch-norm moments from per-replica sums), which the optimizer amplifies a little from step
  to step: a one-device run whose batch norm uses the same sum formula differs from it by as much. The test
  allows 1e-3. Weights, weight average and optimizer slots after 12 steps: largest absolute difference 3.2e-4
  (allowed 3e-3).
* per-replica batch norm (the default): each half batch is normalised with its own statistics, which changes
  the function itself: step 1 differs by 6e-5 relative, the curve by at most 2.3e-3, the weights by 1.4e-2.
  The test allows 1e-3 for step 1 and 1e-2 for the curve, and checks that the difference is there.
The run takes about 25 s of CPU (three trainings, two of them replicated) in a fresh interpreter.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_ARCH, tiny_config, write_tiny_fashion
from mnas.trainer import checkpoint as ckpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REPLICATE = """
import dataclasses, json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {root!r})
from mnas.trainer.train import TrainConfig, train
config = TrainConfig.from_dict(json.loads(sys.argv[1]))
out, curves = sys.argv[2], {{}}
for name, devices, sync in (("one", 1, False), ("two", 2, False), ("two-sync", 2, True)):
    losses = []
    summary = train(dataclasses.replace(config, sync_bn=sync), f"{{out}}/{{name}}", threads=1, devices=devices,
                    log=lambda line: None, on_epoch_end=lambda epoch, row: losses.append(row["train_loss"]))
    curves[name] = {{"losses": losses, "replicas": summary["replicas"]}}
print("CURVES " + json.dumps(curves))
"""


@pytest.fixture
def tiny_files(tmp_path):
    """(architecture file, Fashion-MNIST-like data folder), as test_train's `tiny`."""
    from mnas.trainer import data

    data.clear_cache()
    (tmp_path / "tiny.arch").write_text(TINY_ARCH)
    yield str(tmp_path / "tiny.arch"), write_tiny_fashion(tmp_path / "fm")
    data.clear_cache()


def replicate(config, out):
    """Runs REPLICATE in a fresh interpreter; returns {name: {'losses': [...], 'replicas': n}}."""
    result = subprocess.run([sys.executable, "-c", REPLICATE.format(root=ROOT), json.dumps(config.to_dict()),
                             str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("CURVES "))
    return json.loads(line[len("CURVES "):])


def largest_difference(a_run, b_run, group):
    a, _ = ckpt.load_state(a_run / ckpt.CHECKPOINT)
    b, _ = ckpt.load_state(b_run / ckpt.CHECKPOINT)
    assert len(a[group]) == len(b[group]) > 0
    return max(float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0 for x, y in zip(a[group], b[group]))


@pytest.mark.slow
def test_two_logical_cpu_devices_follow_the_one_device_loss_curve(tmp_path):
    from mnas.search.registry import load_architecture
    from mnas.trainer.recipe import Recipe
    from mnas.trainer.train import TrainConfig

    (tmp_path / "tiny.arch").write_text(TINY_ARCH)
    data_dir = write_tiny_fashion(tmp_path / "fm", n_train=16, n_test=32)
    config = TrainConfig(arch=load_architecture(str(tmp_path / "tiny.arch")), data_dir=data_dir, epochs=6,
                         batch_size=16, recipe=Recipe(dropout=0.0))
    curves = replicate(config, tmp_path / "runs")
    one, two, synced = (np.array(curves[name]["losses"]) for name in ("one", "two", "two-sync"))
    assert [curves[name]["replicas"] for name in ("one", "two", "two-sync")] == [1, 2, 2]
    assert len(one) == len(two) == len(synced) == 6 and one[-1] < one[0]  # it trains
    # Batch norm over the global batch: the one-device computation, up to summation order.
    np.testing.assert_allclose(synced, one, rtol=1e-3, atol=0)
    np.testing.assert_allclose(synced[:3], one[:3], rtol=1e-6, atol=0)
    runs = tmp_path / "runs"
    for group in ("model", "ema", "optimizer"):
        assert largest_difference(runs / "one", runs / "two-sync", group) < 3e-3, group
    # Per-replica batch norm (the default): the same images and updates, each half normalised on its own.
    assert abs(two[0] - one[0]) / one[0] < 1e-3
    np.testing.assert_allclose(two, one, rtol=1e-2, atol=0)
    assert np.max(np.abs(two - one)) > 1e-6  # really per replica: the statistics differ
    # Every run kept its files as a one-device run does.
    for name in ("one", "two", "two-sync"):
        assert sorted(os.listdir(runs / name)) == ["checkpoint.npz", "config.json", "metrics.csv", "summary.json",
                                                   "tensorboard"]
        assert json.loads((runs / name / "config.json").read_text())["sync_bn"] == (name == "two-sync")


# -- before any replica starts: devices, cluster capacity, mixed precision ---------------------------------------


def test_worker_placement_and_cluster_capacity_are_checked_with_one_line_errors():
    from mnas.trainer.ray_replay import Placement, check_capacity, check_options, decide_placement, placeable

    laptop = [{"CPU": 2.0, "GPU": 0.0}]
    gpu_nodes = [{"CPU": 16.0, "GPU": 4.0}, {"CPU": 16.0, "GPU": 2.0}, {"CPU": 64.0}]  # the last: CPUs only
    assert decide_placement(2, 0, None, laptop, "here") == Placement(2, cpus=1, gpus=0)
    assert decide_placement(2, 4, None, gpu_nodes, "there") == Placement(2, cpus=4, gpus=1)
    assert decide_placement(2, 0, 2, gpu_nodes, "there") == Placement(2, cpus=1, gpus=2)
    assert decide_placement(3, 0, 1, laptop, "here") == Placement(3, cpus=1, gpus=0)  # one device: its CPU
    with pytest.raises(ValueError, match=r"^--devices 2 with --workers asks each worker for 2 GPUs, and here has "
                                         "none: drop --devices"):
        decide_placement(2, 0, 2, laptop, "here")
    # GPU workers fit only where the GPUs are: 4 + 2 one-GPU workers, 2 + 1 two-GPU workers.
    assert placeable(Placement(8, cpus=2, gpus=1), gpu_nodes) == 6
    assert placeable(Placement(8, cpus=2, gpus=2), gpu_nodes) == 3
    assert placeable(Placement(8, cpus=8), gpu_nodes) == 2 + 2 + 8
    check_capacity(Placement(2), laptop, "this machine")
    with pytest.raises(ValueError) as err:
        check_capacity(Placement(3), laptop, "this machine")
    assert str(err.value) == ("--workers 3: this machine can place at most 2 workers of 1 CPU (1 node, 2 CPUs): "
                              "lower --workers (or --threads, the CPUs of each worker), or add nodes to the cluster")
    with pytest.raises(ValueError, match=r"at most 3 workers of 2 CPU and 2 GPU \(3 nodes, 96 CPUs, 6 GPUs\)"):
        check_capacity(Placement(4, cpus=2, gpus=2), gpu_nodes, "the Ray cluster at head:6379")
    for workers, address, devices, message in ((None, "head:6379", None, "--address joins a Ray cluster"),
                                               (0, None, None, "--workers must be a positive integer, got 0"),
                                               (None, None, 0, "--devices must be a positive integer, got 0")):
        with pytest.raises(ValueError, match=message):
            check_options(workers, address, devices)


def test_more_devices_than_exist_and_mixed_precision_without_a_gpu_are_refused(tiny_files):
    import tensorflow as tf

    from mnas.trainer.ray_replay import Placement, plan_workers

    from mnas.trainer.devices import local_devices, pick_devices, set_precision
    from mnas.trainer.distributed import check_global_batch, local_replicas

    assert tf.config.list_physical_devices("GPU") == []  # this machine: the CPU is the one device
    assert len(pick_devices(tf, None)) == 1 and local_replicas(tf, None) is None and local_replicas(tf, 1) is None
    have = len(local_devices(tf))
    with pytest.raises(ValueError) as err:
        pick_devices(tf, have + 1)
    assert str(err.value).startswith(f"--devices {have + 1}: this machine has {have} CPU device")
    assert str(err.value).endswith(f"use --devices {have} or fewer, or --workers to add machines")
    with pytest.raises(ValueError, match="^--mixed-precision needs a GPU and this machine has none"):
        set_precision(True)
    check_global_batch(128, None)
    # --workers on this machine: CPU workers, so no mixed precision either (checked before Ray starts).
    assert plan_workers(tiny_config(tiny_files), 2, threads=1) == Placement(2, cpus=1, gpus=0)
    with pytest.raises(ValueError, match="^--mixed-precision needs GPU workers and this machine has no GPU"):
        plan_workers(tiny_config(tiny_files, mixed_precision=True), 2)


def test_global_batch_must_split_evenly_over_the_replicas():
    from mnas.trainer.distributed import Replicas, check_global_batch

    class Four:
        num_replicas_in_sync = 4

    check_global_batch(128, Replicas(Four()))
    with pytest.raises(ValueError, match=r"^--batch-size 130 \(the global batch\) does not split evenly over 4 "
                                         "replicas: use a multiple of 4$"):
        check_global_batch(130, Replicas(Four()))


def test_mixed_precision_trains_in_float16_keeps_float32_weights_and_reloads_as_float32(tiny_files, tmp_path, monkeypatch):
    """On a GPU machine `mixed_float16` is a flag; this CPU-only machine refuses it, so the test lets it through
    (CPUs compute float16, slowly) to check what the trainer does with it."""
    import keras

    from mnas.trainer import devices
    from mnas.trainer.train import load_trained, train

    real = devices.set_precision
    monkeypatch.setattr(devices, "set_precision", lambda mixed, gpus=None: real(mixed, ["a GPU"]))
    try:
        summary = train(tiny_config(tiny_files, epochs=1, mixed_precision=True), tmp_path / "mixed", threads=1,
                        log=lambda _: None)
        model = summary["model"]
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
        assert conv.compute_dtype == "float16" and conv.kernel.dtype == "float32"
        assert np.isfinite(summary["final"]["train_loss"])
    finally:
        real(False)
    groups, _ = ckpt.load_state(tmp_path / "mixed" / ckpt.CHECKPOINT)
    assert {a.dtype.name for a in groups["model"] + groups["ema"]} <= {"float32", "int64", "uint32"}
    train(tiny_config(tiny_files, epochs=1), tmp_path / "plain", threads=1, log=lambda _: None)
    plain, _ = ckpt.load_state(tmp_path / "plain" / ckpt.CHECKPOINT)
    # The loss-scale optimizer's own state is checkpointed beside RMSProp's: its scale (2^15 to start) and counters.
    assert len(groups["optimizer"]) > len(plain["optimizer"])
    assert any(a.shape == () and float(a) == 2.0 ** 15 for a in groups["optimizer"])
    with pytest.raises(ValueError, match="different mixed_precision"):
        train(tiny_config(tiny_files, epochs=2), tmp_path / "mixed", resume=True, threads=1)
    # Export rebuilds the model from the checkpoint in float32 (commands/train.py, export of a mixed run).
    loaded, saved, _ = load_trained(tmp_path / "mixed", threads=1)
    assert saved["mixed_precision"] is True and keras.mixed_precision.global_policy().name == "float32"
    assert {layer.compute_dtype for layer in loaded.layers if layer.weights} == {"float32"}


def test_a_run_written_before_the_new_settings_resumes(tiny_files, tmp_path):
    from mnas.trainer.train import prepare_run_dir

    config = tiny_config(tiny_files)
    run = tmp_path / "run"
    run.mkdir()
    old = {k: v for k, v in config.to_dict().items() if k not in ("mixed_precision", "sync_bn")}
    (run / ckpt.CONFIG).write_text(json.dumps(old))
    assert prepare_run_dir(config, run, resume=True) is None  # same run, no checkpoint yet
    with pytest.raises(ValueError, match="different sync_bn"):
        prepare_run_dir(tiny_config(tiny_files, sync_bn=True), run, resume=True)


def identities(batch) -> list[tuple[int, int]]:
    """(class, number) of each flat-coloured image of a batch (tests/tiny_datasets.colour; PNGs: exact)."""
    pixels = np.round((np.asarray(batch).mean(axis=(1, 2)) + 1) * 127.5).astype(int)
    return [((red - 10) // 40, green + 256 * blue) for red, green, blue in pixels]


def png_records(root, shards: int, count: int, spoiled=()) -> None:
    """ImageNet TFRecord shards of `count` PNG examples (example i of class i % 3), the numbers in `spoiled`
    written as records that are not Examples at all (parsing one fails), and a validation shard."""
    import tensorflow as tf

    from tiny_datasets import example, png

    bounds = np.linspace(0, count, shards + 1).astype(int)
    for shard in range(shards):
        with tf.io.TFRecordWriter(str(root / f"train-{shard:05d}-of-{shards:05d}")) as writer:
            for i in range(bounds[shard], bounds[shard + 1]):
                writer.write(b"not an Example" if i in spoiled else example(png(i % 3, i), i % 3 + 1))
    with tf.io.TFRecordWriter(str(root / "validation-00000-of-00001")) as writer:
        writer.write(example(png(0, 999), 1))


@pytest.mark.parametrize("form", ["folder", "imagenet"])
def test_each_file_worker_reads_and_decodes_only_its_slice_of_every_global_batch(tmp_path, form):
    """Two workers of a global batch of 6: worker 0 gets the first 3 images of each of the one-device run's
    global batches, worker 1 the last 3 (disjoint; together every image the one-device epoch trains on, with the
    same augmentation). Then worker 1's images are spoiled on disk (garbage files, records that are not Examples):
    worker 0 still reads its epoch, unchanged -- it never opened or parsed them -- and one device fails."""
    import tensorflow as tf

    from mnas.trainer.pipelines import open_input
    from tiny_datasets import write_png_folder

    root = tmp_path / form
    if form == "folder":
        write_png_folder(root, classes=3, per_class=10)  # 27 training images (every 10th held out)
    else:
        root.mkdir()
        png_records(root, shards=3, count=27)

    def epoch(**share):
        data = open_input(form, str(root), 8, num_classes=3)
        assert data.by_worker
        return [(identities(x.numpy()), y.numpy().tolist()) for x, y in data.train(6, 1, 2, **share)]

    whole = epoch()
    first, second = epoch(workers=2, worker=0), epoch(workers=2, worker=1)
    assert len(whole) == len(first) == len(second) == 4  # 27 // 6 global batches; the last 3 images dropped
    for (images, labels), (a, a_labels), (b, b_labels) in zip(whole, first, second):
        assert (a + b, a_labels + b_labels) == (images, labels)
    mine = {image for images, _ in first for image in images}
    theirs = {image for images, _ in second for image in images}
    assert not mine & theirs and len(mine | theirs) == 24
    assert {label for label, _ in mine | theirs} == {0, 1, 2}

    if form == "folder":
        for label, number in theirs:
            (root / f"c{label}" / f"img{number:05d}.png").write_bytes(b"garbage")
    else:
        png_records(root, shards=3, count=27, spoiled={number for _, number in theirs})
    assert epoch(workers=2, worker=0) == first
    with pytest.raises(tf.errors.InvalidArgumentError):
        epoch()


def test_a_worker_with_several_replicas_splits_its_slice_and_turns_auto_sharding_off(tmp_path):
    """2 workers of 2 replicas each, global batch 8: worker 1's input is per-replica batches of 2, its slice of
    each global batch in two, and tf.distribute is told not to shard it again."""
    import tensorflow as tf

    from mnas.trainer.distributed import shard_policy, worker_batches
    from mnas.trainer.pipelines import open_input
    from tiny_datasets import write_png_folder

    policy = tf.data.experimental.AutoShardPolicy
    assert shard_policy(tf, 1) == policy.OFF and shard_policy(tf, 2) == policy.DATA  # arrays: DATA
    data = open_input("folder", write_png_folder(tmp_path / "f", classes=2, per_class=10), 8)
    whole = [identities(x.numpy()) for x, _ in data.train(8, 0, 0)]
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4)
    dataset = worker_batches(tf, data, 8, 0, 0, context)
    assert dataset.options().experimental_distribute.auto_shard_policy == policy.OFF
    parts = [identities(x.numpy()) for x, _ in dataset]
    assert len(whole) == 2 and parts == [whole[0][4:6], whole[0][6:8], whole[1][4:6], whole[1][6:8]]
    with pytest.raises(ValueError, match="does not split evenly over 3 workers"):
        data.train(8, 0, 0, workers=3, worker=0)


def test_the_chiefs_lines_reach_the_driver_whole_and_worker_errors_read_as_one_line():
    from mnas.trainer.ray_replay import Verdict, _first_error, _LineQueue

    class Queue(list):
        def put(self, item):
            self.append(item)

    queue = Queue()
    stream = _LineQueue(queue)
    stream.write("epoch 1/3  loss 2.3")
    stream.write("0\nevaluate step 30/100")
    assert queue == ["epoch 1/3  loss 2.30"] and not stream.isatty()
    stream.write("\n")
    assert queue == ["epoch 1/3  loss 2.30", "evaluate step 30/100"]

    class Wrapped(Exception):
        def __init__(self, cause):
            super().__init__("Traceback (most recent call last):\n  ...\nValueError: reading x")
            self.cause = cause

    class WorkerGroupError(Exception):
        worker_failures = {1: Wrapped(ValueError("data folder /nfs/x does not exist")), 0: RuntimeError("peer gone")}

    assert _first_error(WorkerGroupError("Training failed")) == "worker 0: peer gone"
    assert _first_error(RuntimeError("controller\nlost the node")) == "lost the node"
    verdict = Verdict()
    verdict.fail("training diverged: loss nan at epoch 1, step 2")
    verdict.fail("a later error")
    assert verdict.get() == "training diverged: loss nan at epoch 1, step 2"
