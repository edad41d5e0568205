"""`launch.py train` killed with SIGKILL at several moments and resumed with --resume each time ends bit for bit
where an uninterrupted run ends: same weights, optimizer slots, weight average and metrics, each epoch's row
exactly once, no temporary file left behind.

The kills: one from outside at an unplanned moment (as soon as metrics.csv shows epoch 1, i.e. somewhere in epoch
2 or its bookkeeping), and two at exact moments inside the checkpoint bookkeeping -- after a checkpoint's bytes are
on disk but before the rename that publishes it (a torn write), and after the final epoch's checkpoint is published
but before metrics.csv is rewritten. The trainer has no crash hook of its own, so the exact kills run the same
command through a small prelude that wraps `trainer.checkpoint.atomic_write` (the one way the run's files are
written) and sends the process SIGKILL at the N-th write of a given file.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import record_reliability
from conftest import TINY_ARCH, write_tiny_fashion
from mnas.search.fileio import read_json
from mnas.trainer import checkpoint as ckpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 4
TIMINGS = ("train_seconds", "eval_seconds", "images_per_second")  # wall-clock columns: differ between runs

# Runs launch.py as __main__ with trainer.checkpoint.atomic_write wrapped: MNAS_TEST_KILL=WHEN:FILE:N sends
# SIGKILL at the N-th write of FILE in this process, WHEN 'before' the rename (the temporary file is complete on
# disk, the old file still in place) or 'after' it.
PRELUDE = """
import os, runpy, signal, sys
sys.path.insert(0, {root!r})
from mnas.trainer import checkpoint
when, name, nth = os.environ["MNAS_TEST_KILL"].split(":")
real, writes = checkpoint.atomic_write, {{}}
def kill():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
def atomic_write(path, data, before_replace=None):
    base = os.path.basename(path)
    writes[base] = writes.get(base, 0) + 1
    hit = base == name and writes[base] == int(nth)
    real(path, data, kill if hit and when == "before" else before_replace)
    if hit and when == "after":
        kill()
checkpoint.atomic_write = atomic_write
sys.argv = ["launch.py"] + sys.argv[1:]
runpy.run_path(os.path.join({root!r}, "launch.py"), run_name="__main__")
"""


def train_command(arch_file, data_dir, out, resume=False, kill=None):
    argv = ["train", "--arch", arch_file, "--data-dir", data_dir, "--epochs", str(EPOCHS), "--batch-size", "16",
            "--out", str(out), "--threads", "1"] + (["--resume"] if resume else [])
    if kill is None:
        return [sys.executable, os.path.join(ROOT, "launch.py"), *argv], None
    env = {**os.environ, "MNAS_TEST_KILL": kill}
    return [sys.executable, "-c", PRELUDE.format(root=ROOT), *argv], env


def run(command, env=None, timeout=120):
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def epochs_in_metrics(out):
    try:
        return pd.read_csv(out / ckpt.METRICS)["epoch"].tolist()
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return []


def checkpoint_epoch(out):
    return ckpt.load_state(out / ckpt.CHECKPOINT)[1]["epoch"]  # load_state raises on a torn file


def temporaries(out):
    return sorted(f for f in os.listdir(out) if f.startswith("."))


@pytest.mark.slow
def test_sigkilled_cli_training_resumes_to_the_uninterrupted_result(tmp_path):
    arch_file = tmp_path / "tiny.arch"
    arch_file.write_text(TINY_ARCH)
    arch_file = str(arch_file)
    # 320 images: 20 steps an epoch, long enough for the outside kill to land inside the run
    data_dir = write_tiny_fashion(tmp_path / "fm", n_train=320, n_test=64)
    full, crashed = tmp_path / "full", tmp_path / "crashed"

    done = run(train_command(arch_file, data_dir, full)[0])
    assert done.returncode == 0, done.stderr[-3000:]
    assert epochs_in_metrics(full) == [1, 2, 3, 4]

    # 1. Killed from outside at an unplanned moment: as soon as epoch 1 is on disk.
    command, _ = train_command(arch_file, data_dir, crashed)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not epochs_in_metrics(crashed) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"exited {proc.returncode} before the kill: {proc.stderr.read()[-3000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    first = checkpoint_epoch(crashed)
    assert 1 <= first < EPOCHS - 1, f"the outside kill landed after epoch {first}: the run is too fast to kill"

    # 2. Resumed, then killed in the middle of the next checkpoint's write: its bytes are in a temporary file,
    # the rename has not happened. The published checkpoint is still the previous, whole one.
    result = run(*train_command(arch_file, data_dir, crashed, resume=True, kill=f"before:{ckpt.CHECKPOINT}:1"))
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert f"resuming {crashed} after epoch {first} " in result.stdout
    assert checkpoint_epoch(crashed) == first
    assert len([f for f in temporaries(crashed) if f.endswith(".part")]) == 1  # the torn write's leftover

    # 3. Resumed, then killed right after the last epoch's checkpoint is published, before metrics.csv follows.
    last_write = EPOCHS - first
    result = run(*train_command(arch_file, data_dir, crashed, resume=True,
                                kill=f"after:{ckpt.CHECKPOINT}:{last_write}"))
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert f"resuming {crashed} after epoch {first} " in result.stdout  # the torn checkpoint was never seen
    assert checkpoint_epoch(crashed) == EPOCHS and epochs_in_metrics(crashed) == list(range(1, EPOCHS))
    assert not (crashed / ckpt.SUMMARY).exists()

    # 4. Resumed: nothing left to train, but the run's files must catch up with its checkpoint.
    result = run(*train_command(arch_file, data_dir, crashed, resume=True))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nothing to do" in result.stdout

    assert temporaries(crashed) == []
    assert epochs_in_metrics(crashed) == list(range(1, EPOCHS + 1))  # every epoch exactly once, in order
    reference, reference_meta = ckpt.load_state(full / ckpt.CHECKPOINT)
    resumed, resumed_meta = ckpt.load_state(crashed / ckpt.CHECKPOINT)
    assert (resumed_meta["epoch"], resumed_meta["step"]) == (reference_meta["epoch"], reference_meta["step"])
    for group in ("model", "optimizer", "ema"):
        assert len(resumed[group]) == len(reference[group]) > 0, group
        for a, b in zip(reference[group], resumed[group]):
            np.testing.assert_array_equal(a, b)
    a, b = pd.read_csv(full / ckpt.METRICS), pd.read_csv(crashed / ckpt.METRICS)
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.drop(columns=list(TIMINGS)), b.drop(columns=list(TIMINGS)), check_exact=True)
    a_summary, b_summary = read_json(full / ckpt.SUMMARY), read_json(crashed / ckpt.SUMMARY)
    for key in ("epochs", "steps", "best_eval_top1", "params"):
        assert a_summary[key] == b_summary[key], key
    epochs = epochs_in_metrics(crashed)
    record_reliability("trainer_kill", kills=3, resumes=3, epochs=EPOCHS, identical_to_uninterrupted=True,
                       moments=[f"outside:after-epoch-{first}", f"before:{ckpt.CHECKPOINT}:1",
                                f"after:{ckpt.CHECKPOINT}:{last_write}"],
                       lost=len(set(range(1, EPOCHS + 1)) - set(epochs)), twice=len(epochs) - len(set(epochs)))
