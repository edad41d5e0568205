"""`mnas train --workers 2` on this machine: a Ray Train run of two CPU workers (multi-worker mirrored strategy)
trains, checkpoints, loses a worker, resumes, and exports -- and ends bit for bit where an uninterrupted replay on
two local devices ends.

The kill is real and lands at a named point: MNAS_TEST_KILL_WORKER=1:1 makes worker 1 send itself SIGKILL right
after every worker has reported epoch 1 (so the chief's checkpoint of epoch 1 is on disk, trainer/ray_replay.py).
Ray Train sees the dead worker, stops the group and starts both workers again (FailureConfig.max_failures); they
resume from the run directory's checkpoint. The reference, two logical CPU devices in one process
(MirroredStrategy), splits every global batch into the same two halves as the two workers do, and a sum of two
numbers does not depend on the order of its terms: the weights, optimizer slots and weight average must be equal,
not merely close.

Its own local Ray cluster (ray.init(address='local') in the subprocess, its session under a temporary folder):
nothing is shared with another Ray on the machine. About 75 s here (up to 2 minutes under load), most of it Ray and TensorFlow
starting in three processes twice.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_ARCH
from tiny_datasets import write_png_folder
from mnas.trainer import checkpoint as ckpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 3
PER_CLASS = 25   # 75 images, of which the folder's held-out share leaves 4 global batches of 16 an epoch

TWO_DEVICES = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {root!r})
from mnas import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture
def ray_temp():
    """A short folder for Ray's session (its socket paths must fit in 107 bytes), removed afterwards."""
    folder = tempfile.mkdtemp(prefix="mnas-rt-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_ray_train_workers_survive_a_killed_worker_and_export(tmp_path, ray_temp):
    arch = tmp_path / "tiny.arch"
    arch.write_text(TINY_ARCH)
    # An image folder: each worker reads and decodes only its own slices of every global batch (trainer.pipelines,
    # through distribute_datasets_from_function), the slices two local devices get.
    data_dir = write_png_folder(tmp_path / "images", classes=3, per_class=PER_CLASS)
    common = ["train", "--arch", str(arch), "--dataset", "folder", "--data-dir", data_dir, "--image-size", "16",
              "--epochs", str(EPOCHS), "--batch-size", "16", "--threads", "1"]
    out, export = tmp_path / "workers", tmp_path / "export"
    env = {**os.environ, "MNAS_RAY_TMPDIR": ray_temp, "MNAS_TEST_KILL_WORKER": "1:1"}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), *common, "--workers", "2",
                             "--out", str(out), "--export-dir", str(export), "--no-int8"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "Ray Train: 2 workers of 1 CPU, global batch 16" in lines[1]
    # Epoch 1 by the first workers, then a new group that resumed from epoch 1's checkpoint.
    epochs = [line.split()[1] for line in lines if line.startswith("epoch ")]
    assert epochs == ["1/3", "2/3", "3/3"], result.stdout
    resumed = [line for line in lines if line.startswith("resuming ")]
    assert resumed == [f"resuming {out} after epoch 1 (optimizer step 4)"], result.stdout
    assert lines.index(resumed[0]) > next(i for i, line in enumerate(lines) if line.startswith("epoch 1/3"))
    # The chief's run directory: each epoch once, nothing half-written, Ray Train's state in its own folder.
    assert pd.read_csv(out / ckpt.METRICS)["epoch"].tolist() == [1, 2, 3]
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "config.json", "metrics.csv", "ray_train", "summary.json",
                                       "tensorboard"]
    assert json.loads((out / ckpt.SUMMARY).read_text())["steps"] == 12
    # Exported from the checkpoint's averaged weights; float TFLite computes the Keras model's function (int8 is
    # left out here: tests/test_export.py covers the quantized models).
    report = json.loads((export / "export.json").read_text())
    rows = {row["format"]: row for row in report["formats"]}
    assert set(rows) == {"float32"} and rows["float32"]["agreement"] == 1.0
    assert rows["float32"]["max_abs_diff"] < 1e-4 and (export / "saved_model").is_dir()

    # The same replay, uninterrupted, on two logical devices of one process.
    reference = tmp_path / "devices"
    local = subprocess.run([sys.executable, "-c", TWO_DEVICES.format(root=ROOT), *common, "--devices", "2",
                            "--out", str(reference)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]
    assert "on 2 devices (CPU:0, CPU:1, 8 images each a step)" in local.stdout
    mine, _ = ckpt.load_state(out / ckpt.CHECKPOINT)
    theirs, _ = ckpt.load_state(reference / ckpt.CHECKPOINT)
    for group in ("model", "optimizer", "ema"):
        assert len(mine[group]) == len(theirs[group]) > 0, group
        for a, b in zip(mine[group], theirs[group]):
            np.testing.assert_array_equal(a, b)
    a, b = pd.read_csv(out / ckpt.METRICS), pd.read_csv(reference / ckpt.METRICS)
    assert a["train_loss"].tolist() == b["train_loss"].tolist() and a["eval_top1"].tolist() == b["eval_top1"].tolist()


def test_ctrl_c_during_a_ray_replay_is_an_interruption_not_a_failed_run():
    """Ray Train's Ctrl-C handler aborts the run and `fit` then raises whatever the abort left (a SystemExit out
    of the handler, with Ray 2.60): the handler is wrapped to note the interrupt first. A KeyboardInterrupt that
    Ray wraps -- a worker's, in WorkerGroupError.worker_failures, or any error's cause -- reads as one too; the
    run's own errors do not. (train_on_ray turns an interruption into KeyboardInterrupt: the CLI's exit 130.)"""
    from ray.train import ControllerError, WorkerGroupError
    from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

    from mnas.trainer.ray_replay import _interrupted, _noting_interrupts

    aborted = []

    class RayTrainer:  # Ray Train 2's trainer, as far as Ctrl-C goes
        def _register_sigint_handler(self, controller):
            signal.signal(signal.SIGINT, lambda signum, frame: aborted.append(controller))

    noted = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    try:
        _noting_interrupts(RayTrainer, noted)()._register_sigint_handler("controller")
        assert not noted.is_set()
        signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert noted.is_set() and aborted == ["controller"]  # noted, and Ray Train's abort still ran

    def worker_failed(error):
        return WorkerGroupError("Training failed", {1: UserExceptionWithTraceback(error, "Traceback ...")})

    assert _interrupted(KeyboardInterrupt())
    assert _interrupted(worker_failed(KeyboardInterrupt()))
    assert _interrupted(ControllerError(KeyboardInterrupt()))
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise RuntimeError("controller gone") from err
    except RuntimeError as err:
        assert _interrupted(err)
    assert not _interrupted(worker_failed(ValueError("training diverged: loss nan at epoch 1, step 2")))
    assert not _interrupted(ControllerError(RuntimeError("placement group removed")))
    assert not _interrupted(SystemExit(0))
