"""Full training on tiny data: metrics, checkpoints, exact resume after a crash, the recipe, the command line."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from mnas import cli
from mnas.trainer import checkpoint as ckpt
from mnas.trainer import data
from mnas.trainer.recipe import Recipe, learning_rate
from mnas.trainer.train import train

from conftest import run_cli, tiny_config, write_tiny_fashion


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
    from mnas.trainer.recipe import make_schedule

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

    from mnas.trainer.recipe import WeightEMA

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign(np.ones((2, 1), np.float32))
    ema = WeightEMA(model, 0.9999)
    model.layers[0].kernel.assign(np.zeros((2, 1), np.float32))
    ema.update(1)  # decay min(0.9999, 2/11)
    assert float(ema.shadows[0].numpy()[0, 0]) == pytest.approx(2 / 11)
    with ema.swapped():
        assert float(model.layers[0].kernel.numpy()[0, 0]) == pytest.approx(2 / 11)
    assert float(model.layers[0].kernel.numpy()[0, 0]) == 0.0


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
        (["--arch", arch_file, "--data-dir", data_dir, "--rmsprop-epsilon", "0"], "epsilon must be a positive"),
        (["--arch", "mnasnet-a1:2", "--data-dir", data_dir], "no such run directory: mnasnet-a1"),
        (["--arch", arch_file, "--data-dir", data_dir, "--representative", "0"], "--representative must be"),
        (["--arch", arch_file, "--data-dir", data_dir, "--export-dir", str(tmp_path)], "holds other files"),
        (["--arch", arch_file, "--data-dir", data_dir, "--export-dir", str(out)], "would replace the run directory"),
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


def test_recipe_defaults_are_the_papers_and_the_peak_scales_with_batch_size(tiny):
    import keras

    from mnas.search.registry import ARCHITECTURES
    from mnas.trainer.recipe import make_optimizer, make_schedule
    from mnas.trainer.train import build, model_architecture, open_data

    assert Recipe().to_dict() == {  # Tan et al. 2019 Sec. 6 and tensorflow/tpu mnasnet_main.py
        "base_lr": 0.016, "lr_batch": 256, "warmup_epochs": 5.0, "decay_rate": 0.97, "decay_epochs": 2.4,
        "rho": 0.9, "momentum": 0.9, "epsilon": 1e-3, "weight_decay": 1e-5, "label_smoothing": 0.1,
        "ema_decay": 0.9999, "bn_momentum": 0.99, "dropout": None}
    # The whole schedule is linear in the batch size: 0.016 per 256 images, 5 warm-up epochs, x0.97 every 2.4
    # epochs counted from step 0 (so the first step after a 500-step warm-up has decayed twice, floor(500/240)).
    for batch in (32, 256, 1024):
        schedule = make_schedule(Recipe(), batch, steps_per_epoch=100, epochs=350)
        peak = 0.016 * batch / 256
        assert float(schedule(250)) == pytest.approx(peak / 2)
        assert float(schedule(500)) == pytest.approx(peak * 0.97 ** 2)
        assert float(schedule(100 * 240)) == pytest.approx(peak * 0.97 ** 100, rel=1e-5)  # float32
    assert float(make_schedule(Recipe(lr_batch=128), 256, 100, 350)(250)) == pytest.approx(0.032 / 2)
    optimizer = make_optimizer(Recipe(), 0.01)
    assert isinstance(optimizer, keras.optimizers.RMSprop)
    assert (optimizer.rho, optimizer.momentum, optimizer.epsilon) == (0.9, 0.9, 1e-3)
    # Dropout: the architecture's (0.2 for MnasNet-A1) unless the recipe overrides it; batch norm from the recipe.
    config = tiny_config(tiny, recipe=Recipe(bn_momentum=0.9, dropout=0.3))
    inputs = open_data(config)
    assert model_architecture(tiny_config(tiny, arch=ARCHITECTURES["mnasnet-a1"]), inputs).dropout == 0.2
    assert model_architecture(config, inputs).dropout == 0.3
    model = build(config, inputs)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and {layer.momentum for layer in norms} == {0.9}
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.3]


def test_every_recipe_value_is_a_command_line_option(tiny):
    import dataclasses

    from mnas.commands.train import RECIPE_FLAGS, build_config

    assert set(RECIPE_FLAGS) == {f.name for f in dataclasses.fields(Recipe)}
    values = {"base_lr": 0.1, "lr_batch": 512, "warmup_epochs": 1.5, "decay_rate": 0.9, "decay_epochs": 3.0,
              "rho": 0.8, "momentum": 0.7, "epsilon": 0.01, "weight_decay": 4e-5, "label_smoothing": 0.2,
              "dropout": 0.25, "bn_momentum": 0.9, "ema_decay": 0.999}
    argv = ["train", "--arch", tiny[0]]
    for field, (flag, _) in RECIPE_FLAGS.items():
        argv += [flag, str(values[field])]
    config, slug = build_config(cli.build_parser().parse_args(argv))
    assert config.recipe == Recipe(**values) and slug == "tiny"
    config, _ = build_config(cli.build_parser().parse_args(["train", "--arch", tiny[0], "--batch-size", "64"]))
    assert config.recipe == Recipe() and config.batch_size == 64
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    for flag, _ in RECIPE_FLAGS.values():
        assert flag in help_text
    assert "(default 0.016)" in help_text and "(default 0.9999)" in help_text and "(default 1e-05)" in help_text


def test_scores_report_top1_and_top5():
    from mnas.trainer.train import scores

    logits = np.array([[9, 8, 7, 6, 5, 4, 0],    # label 0: top-1
                       [9, 8, 7, 6, 5, 4, 0],    # label 4: 5th best -> top-5 only
                       [9, 8, 7, 6, 5, 4, 0],    # label 5: 6th best -> neither
                       [0, 0, 0, 0, 0, 0, 1]], np.float32)
    result = scores(logits, np.array([0, 4, 5, 6]))
    assert result["top1"] == 0.5 and result["top5"] == 0.75
    assert scores(np.array([[1.0, 2.0]]), np.array([0]))["top5"] == 1.0  # fewer than 5 classes: top-k of all
    assert scores(np.array([[0.0, 0.0]]), np.array([1]))["loss"] == pytest.approx(np.log(2))


class _Stream:
    def __init__(self, tty):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_progress_bar_redraws_on_a_terminal_and_prints_a_line_a_minute_in_a_log():
    from mnas.trainer.progress import Progress

    now = [0.0]
    terminal = _Stream(tty=True)
    bar = Progress(10, stream=terminal, width=10, clock=lambda: now[0])
    bar.start("epoch 1/3")
    bar.update(1, "loss 2.3")         # too soon after start: not drawn
    now[0] = 1.0
    bar.update(5, "loss 2.0")
    assert terminal.text == "\repoch 1/3 [=====>....] 5/10 loss 2.0 eta 1s "
    bar.update(6)                     # within 0.2 s of the last redraw
    bar.update(10)                    # the last step is always drawn
    assert terminal.text.endswith("[==========] 10/10  eta 0s ")
    bar.finish()
    assert terminal.text.endswith("\r\033[K")  # cleared for the summary line

    now[0] = 0.0
    log = _Stream(tty=False)
    lines = Progress(100, stream=log, clock=lambda: now[0])
    lines.start("evaluate")
    for step in range(1, 101):
        now[0] = step * 2.0           # 2 s a step: a line at 60 s and at 120 s, none at the end
        lines.update(step)
    lines.finish()
    assert log.text.splitlines() == ["evaluate step 30/100  (60s, eta 140s)", "evaluate step 60/100  (120s, eta 80s)",
                                     "evaluate step 90/100  (180s, eta 20s)"]
    assert "\r" not in log.text


def test_device_and_cluster_options_reach_the_config_and_the_help(tiny):
    from mnas.commands.train import build_config

    parse = cli.build_parser().parse_args
    config, _ = build_config(parse(["train", "--arch", tiny[0], "--mixed-precision", "--sync-bn"]))
    assert config.mixed_precision is True and config.sync_bn is True
    config, _ = build_config(parse(["train", "--arch", tiny[0]]))
    assert config.mixed_precision is False and config.sync_bn is False
    args = parse(["train", "--arch", tiny[0], "--workers", "4", "--devices", "2", "--address", "head:6379"])
    assert (args.workers, args.devices, args.address) == (4, 2, "head:6379")
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    for flag in ("--devices", "--workers", "--address", "--mixed-precision", "--sync-bn"):
        assert flag in help_text
    assert "the global batch (default 128)" in help_text
