"""Full training on tiny data: metrics, checkpoints, exact resume after a crash, the recipe, the command line."""

import json
import os

import numpy as np
import pandas as pd
import pytest

import launch
from trainer import checkpoint as ckpt
from trainer import data
from trainer.recipe import Recipe, learning_rate
from trainer.train import TrainConfig, train

TINY_ARCH = """# two blocks, narrow head: builds and trains in a second at 28x28
stem: 8
head: 32
r1_k3_s11_e1_i8_o8_noskip
r1_k3_s22_e3_i8_o16_se0.25
"""


def write_tiny_fashion(folder, n_train=64, n_test=32, seed=0):
    """IDX files of a learnable toy task: class c has a bright horizontal bar at rows 2c..2c+5."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 6] = 250
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    for field, stem in data.FASHION_MNIST_FILES.items():
        data.write_idx(os.path.join(folder, stem + ".gz"), arrays[field])
    return str(folder)


@pytest.fixture
def tiny(tmp_path):
    """(architecture file, Fashion-MNIST-like data folder) in tmp_path."""
    data.clear_cache()
    arch = tmp_path / "tiny.arch"
    arch.write_text(TINY_ARCH)
    yield str(arch), write_tiny_fashion(tmp_path / "fm")
    data.clear_cache()


def tiny_config(tiny, **changes):
    from search.registry import load_architecture

    arch_file, data_dir = tiny
    fields = dict(arch=load_architecture(arch_file), data_dir=data_dir, epochs=2, batch_size=16, arch_source=arch_file)
    fields.update(changes)
    return TrainConfig(**fields)


def test_two_epochs_write_metrics_checkpoint_and_tensorboard(tiny, tmp_path):
    out = tmp_path / "run"
    lines = []
    summary = train(tiny_config(tiny), out, threads=1, log=lines.append)
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2] and metrics["step"].tolist() == [4, 8]
    for column in ("train_loss", "eval_top1", "eval_top5", "raw_eval_top1", "learning_rate", "images_per_second"):
        assert metrics[column].notna().all()
    assert (metrics["eval_top5"] >= metrics["eval_top1"]).all()
    assert summary["steps"] == 8 and json.loads((out / "summary.json").read_text())["epochs"] == 2
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["arch"]["stem_stride"] == 1 and config["model"]["arch"]["resolution"] == 28  # small images
    groups, meta = ckpt.load_state(out / "checkpoint.npz")
    assert meta["epoch"] == 2 and len(groups["ema"]) > 0 and len(groups["optimizer"]) > 1
    assert [f for f in os.listdir(out) if f.startswith(".")] == []  # no temporary file left behind
    events = [f for _, _, files in os.walk(out / "tensorboard") for f in files if f.startswith("events")]
    assert len(events) == 2
    assert lines[0].startswith("epoch 1/2") and "eval (averaged) top-1" in lines[0]
    # TensorBoard: each epoch's scalars once, at the epoch's last step, equal to metrics.csv (as float32). With
    # 8 steps no per-step scalar is due (every 50 steps).
    written = {"train": {"epoch_loss": "train_loss", "epoch_top1": "train_top1",
                         "images_per_second": "images_per_second", "learning_rate": "learning_rate"},
               "eval": {"loss": "eval_loss", "top1": "eval_top1", "top5": "eval_top5", "raw_top1": "raw_eval_top1"}}
    for writer, tags in written.items():
        scalars = read_scalars(out / "tensorboard" / writer)
        assert sorted(scalars) == sorted(tags), writer
        for tag, column in tags.items():
            assert [step for step, _ in scalars[tag]] == [4, 8], (writer, tag)
            assert [value for _, value in scalars[tag]] == metrics[column].astype(np.float32).tolist(), (writer, tag)


def read_scalars(folder):
    """{tag: [(step, value), ...]} of the TensorBoard event files in `folder`, in the order written; checks that
    every value is a float32 scalar tagged for TensorBoard's scalars plugin."""
    import tensorflow as tf

    scalars = {}
    for name in sorted(os.listdir(folder)):
        for event in tf.compat.v1.train.summary_iterator(str(folder / name)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars", value.tag
                array = tf.make_ndarray(value.tensor)
                assert array.shape == () and array.dtype == np.float32, (value.tag, array)
                scalars.setdefault(value.tag, []).append((event.step, float(array)))
    return scalars


def test_tensorboard_logs_training_loss_and_learning_rate_every_50_steps(tiny, tmp_path):
    from trainer.recipe import make_schedule

    config = tiny_config(tiny, epochs=1, batch_size=1)  # 64 steps: one per-step point, at step 50
    train(config, tmp_path / "run", threads=1, log=lambda _: None)
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    scalars = read_scalars(tmp_path / "run" / "tensorboard" / "train")
    assert [step for step, _ in scalars["loss"]] == [50] and 0 < scalars["loss"][0][1] < 10
    schedule = make_schedule(config.recipe, config.batch_size, 64, config.epochs)
    # one learning-rate series: the step-50 point, then the epoch's (step 64, as in metrics.csv)
    assert scalars["learning_rate"] == [(50, float(np.float32(schedule(50)))),
                                        (64, float(np.float32(metrics["learning_rate"].iloc[0])))]
    assert [step for step, _ in scalars["epoch_loss"]] == [64]


def test_resume_after_a_crash_ends_equal_to_an_uninterrupted_run(tiny, tmp_path):
    config = tiny_config(tiny)
    train(config, tmp_path / "full", threads=1, log=lambda _: None)

    class Crash(Exception):
        pass

    def crash_after_first_epoch(epoch, row):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        train(config, tmp_path / "crashed", threads=1, on_epoch_end=crash_after_first_epoch, log=lambda _: None)
    _, meta = ckpt.load_state(tmp_path / "crashed" / "checkpoint.npz")
    assert (meta["epoch"], meta["step"]) == (1, 4)
    lines = []
    train(config, tmp_path / "crashed", resume=True, threads=1, log=lines.append)
    assert lines[0].endswith("after epoch 1 (optimizer step 4)") and lines[1].startswith("epoch 2/2")
    full, _ = ckpt.load_state(tmp_path / "full" / "checkpoint.npz")
    resumed, resumed_meta = ckpt.load_state(tmp_path / "crashed" / "checkpoint.npz")
    assert resumed_meta["step"] == 8
    # Data order, augmentation and dropout depend only on (seed, epoch) and restored state, and ops are
    # deterministic: the weights, optimizer slots and weight average are bit-for-bit those of the full run.
    for group in ("model", "optimizer", "ema"):
        assert len(full[group]) == len(resumed[group])
        for a, b in zip(full[group], resumed[group]):
            np.testing.assert_array_equal(a, b)
    a = pd.read_csv(tmp_path / "full" / "metrics.csv")
    b = pd.read_csv(tmp_path / "crashed" / "metrics.csv")
    assert a["eval_top1"].tolist() == b["eval_top1"].tolist() and a["train_loss"].tolist() == b["train_loss"].tolist()


def test_run_directory_is_never_overwritten_and_resume_checks_settings(tiny, tmp_path):
    config = tiny_config(tiny, epochs=1)
    train(config, tmp_path / "run", threads=1, log=lambda _: None)
    with pytest.raises(ValueError, match="already holds a training run"):
        train(config, tmp_path / "run", threads=1)
    with pytest.raises(ValueError, match="different batch_size"):
        train(tiny_config(tiny, epochs=1, batch_size=8), tmp_path / "run", resume=True, threads=1)
    with pytest.raises(ValueError, match="holds no training run"):
        train(config, tmp_path / "elsewhere", resume=True, threads=1)
    with pytest.raises(ValueError, match="batch size 100 exceeds the 64 training images"):
        train(tiny_config(tiny, batch_size=100), tmp_path / "big", threads=1)
    assert not (tmp_path / "big").exists() and not (tmp_path / "elsewhere").exists()


def test_recipe_schedule_scaling_and_short_run_rules():
    recipe = Recipe()
    assert recipe.peak_lr(256) == pytest.approx(0.016) and recipe.peak_lr(1024) == pytest.approx(0.064)
    assert recipe.warmup(350) == 5 and recipe.warmup(3) == pytest.approx(0.3)

    def lr(step):
        return float(learning_rate(step, 0.008, steps_per_epoch=10, warmup_epochs=5, decay_rate=0.97,
                                   decay_epochs=2.4))

    assert lr(0) == 0 and lr(25) == pytest.approx(0.004)           # linear warm-up over 50 steps
    assert lr(50) == pytest.approx(0.008 * 0.97 ** 2)               # staircase counted from step 0: floor(50/24)
    assert lr(71) == pytest.approx(0.008 * 0.97 ** 2) and lr(72) == pytest.approx(0.008 * 0.97 ** 3)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        Recipe(ema_decay=1.0)


def test_weight_average_uses_the_official_num_updates_warm_up():
    import keras

    from trainer.recipe import WeightEMA

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign(np.ones((2, 1), np.float32))
    ema = WeightEMA(model, 0.9999)
    model.layers[0].kernel.assign(np.zeros((2, 1), np.float32))
    ema.update(1)  # decay min(0.9999, 2/11)
    assert float(ema.shadows[0].numpy()[0, 0]) == pytest.approx(2 / 11)
    with ema.swapped():
        assert float(model.layers[0].kernel.numpy()[0, 0]) == pytest.approx(2 / 11)
    assert float(model.layers[0].kernel.numpy()[0, 0]) == 0.0


def run_cli(argv, capsys):
    code = launch.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_errors_are_one_line_exit_2_and_write_nothing(tiny, tmp_path, capsys):
    arch_file, data_dir = tiny
    out = tmp_path / "out"
    cases = [
        (["--arch", "mnasnet-z9", "--data-dir", data_dir], "unknown architecture 'mnasnet-z9'"),
        (["--arch", arch_file, "--data-dir", str(tmp_path / "nowhere")], "does not exist"),
        (["--arch", f"{tmp_path}/norun:1", "--data-dir", data_dir], "no such run directory"),
        (["--arch", arch_file, "--dataset", "mnist-9", "--data-dir", data_dir], "unknown dataset 'mnist-9'"),
        (["--arch", arch_file, "--data-dir", data_dir, "--epochs", "0"], "epochs must be a positive integer"),
        (["--arch", arch_file, "--data-dir", data_dir, "--ema-decay", "1.5"], "ema_decay must be in"),
    ]
    broken = tmp_path / "broken"
    write_tiny_fashion(broken)
    (broken / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    data.clear_cache()
    cases.append((["--arch", arch_file, "--data-dir", str(broken)], "train-images-idx3-ubyte.gz"))
    for argv, message in cases:
        code, _, err = run_cli(["train", *argv, "--out", str(out)], capsys)
        assert code == 2 and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not out.exists()
