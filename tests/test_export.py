"""Export round trips (SavedModel, float32 and int8 TFLite run in LiteRT) and replaying a search's children."""

import json
import os
import re

import numpy as np
import pytest

from conftest import run_cli, tiny_config
from mnas.trainer.train import train


def test_export_round_trip_float_matches_keras_and_int8_reports_accuracy(tiny, tmp_path):
    import tensorflow as tf

    from mnas.trainer.export import export_model, run_tflite

    summary = train(tiny_config(tiny, epochs=1), tmp_path / "run", threads=1, log=lambda _: None)
    model, ema, inputs = summary["model"], summary["ema"], summary["data"]
    lines = []
    with ema.swapped():
        report = export_model(model, inputs, tmp_path / "export", ("float32", "int8", "dynamic"),
                              representative=16, threads=1, log=lines.append)
        keras_logits = np.concatenate([model(x, training=False).numpy() for x, _ in inputs.evaluate(32)])
    out = tmp_path / "export"
    assert sorted(os.listdir(out)) == ["export.json", "model_dynamic.tflite", "model_float32.tflite",
                                       "model_int8.tflite", "saved_model"]
    assert [f for f in os.listdir(tmp_path) if "partial" in f] == []
    rows = {row["format"]: row for row in report["formats"]}
    # Float TFLite computes the same function: logits within float rounding, identical classes.
    assert rows["float32"]["max_abs_diff"] < 1e-4 and rows["float32"]["agreement"] == 1.0
    assert rows["float32"]["top1"] == report["keras"]["top1"]
    logits, labels = run_tflite((out / "model_float32.tflite").read_bytes(), inputs, batch_size=7, threads=1)
    np.testing.assert_allclose(logits, keras_logits, atol=1e-4)  # padding of the last batch changes nothing
    # The int8 model runs end to end on int8 inputs and its accuracy is reported beside Keras'.
    assert 0 <= rows["int8"]["top1"] <= 1 and rows["int8"]["bytes"] < rows["float32"]["bytes"]
    assert rows["int8"]["agreement"] >= 0.5
    assert json.loads((out / "export.json").read_text())["formats"][1]["format"] == "int8"
    assert any("model_int8.tflite" in line for line in lines)
    assert report["representative_images"] == 16
    # The SavedModel serves the same function.
    served = tf.saved_model.load(str(out / "saved_model"))
    x = next(iter(inputs.evaluate(4)))[0]
    np.testing.assert_allclose(served.serve(x).numpy(), keras_logits[:4], atol=1e-4)


def test_a_checkpoint_reloads_averaged_or_raw_weights_and_exports_only_into_its_own_folders(tiny, tmp_path):
    from mnas.trainer.export import check_export_dir, export_model
    from mnas.trainer.train import load_trained

    summary = train(tiny_config(tiny, epochs=1), tmp_path / "run", threads=1, log=lambda _: None)
    model, ema = summary["model"], summary["ema"]
    raw = [v.numpy() for v in model.variables]
    with ema.swapped():
        averaged = [v.numpy() for v in model.variables]
    assert any(not np.array_equal(a, b) for a, b in zip(raw, averaged))
    for weights, expected in ((True, averaged), (False, raw)):
        loaded, saved, _ = load_trained(tmp_path / "run", averaged=weights, threads=1)
        assert saved["model"]["image_shape"] == [28, 28, 1]
        for variable, value in zip(loaded.variables, expected):
            np.testing.assert_array_equal(variable.numpy(), value)
    # An export replaces only a previous export: never the run directory, a file, or a folder of other files.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for target, message in ((tmp_path / "run", "holds other files (checkpoint.npz, config.json"),
                            (tmp_path / "mine", "holds other files (notes.txt)"),
                            (tmp_path / "mine" / "notes.txt", "is a file")):
        with pytest.raises(ValueError, match=re.escape(message)):
            export_model(loaded, summary["data"], target, ("float32",), threads=1, log=lambda _: None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me" and (tmp_path / "run" / "config.json").exists()
    assert check_export_dir(tmp_path / "new") == (tmp_path / "new").absolute()


def test_cli_train_then_export_checkpoint(tiny, tmp_path, capsys):
    arch_file, data_dir = tiny
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "--arch", arch_file, "--data-dir", data_dir, "--epochs", "1",
                              "--batch-size", "16", "--out", str(run), "--threads", "1", "--ema-decay", "0"], capsys)
    assert code == 0, err
    assert "epoch 1/1" in out and "eval (raw) top-1" in out and (run / "checkpoint.npz").exists()
    code, out, err = run_cli(["export", "--checkpoint", str(run), "--no-int8", "--threads", "1"], capsys)
    assert code == 0, err
    assert "model_float32.tflite" in out and not (run / "export" / "model_int8.tflite").exists()
    # Again over the previous export, with the int8 model and the weight-only option.
    code, out, err = run_cli(["export", "--checkpoint", str(run), "--weight-only", "--representative", "8",
                              "--threads", "1"], capsys)
    assert code == 0, err
    report = json.loads((run / "export" / "export.json").read_text())
    assert [row["format"] for row in report["formats"]] == ["float32", "int8", "dynamic"]
    assert report["representative_images"] == 8 and report["num_eval"] == 32
    assert sorted(os.listdir(run / "export")) == ["export.json", "model_dynamic.tflite", "model_float32.tflite",
                                                  "model_int8.tflite", "saved_model"]
    assert report["formats"][2]["agreement"] >= 0.5
    for name in ("keras (saved_model/)", "model_float32.tflite", "model_int8.tflite", "model_dynamic.tflite"):
        assert f"  {name} " in out  # one line each, accuracy beside the Keras model's
    for argv, message in (([str(tmp_path / "nothing")], "no such run directory"),
                          ([str(tmp_path)], "not a training run (config.json missing)"),
                          ([str(run), "--export-dir", str(run)], "holds other files"),
                          ([str(run), "--representative", "0"], "--representative must be a positive integer")):
        code, _, err = run_cli(["export", "--checkpoint", *argv], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert (run / "checkpoint.npz").exists()
    code, out, err = run_cli(["train", "--arch", arch_file, "--data-dir", data_dir, "--epochs", "2",
                              "--batch-size", "16", "--out", str(run), "--threads", "1", "--ema-decay", "0",
                              "--resume"], capsys)
    assert code == 0 and "resuming" in out and "epoch 2/2" in out and "epoch 1/2" not in out


# -- replaying a search's children -------------------------------------------------------------------------------

CHILDREN = [  # trial, blocks, accuracy, latency, reward, status
    ("t1", "r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24", 0.80, 50.0, 0.78, "ok"),
    ("t2", "r1_k5_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24", 0.85, 80.0, 0.84, "ok"),
    ("t3", "r1_k3_s11_e1_i32_o16_noskip r1_k3_s22_e3_i16_o24", 0.70, 40.0, 0.72, "ok"),
    ("t4", "r1_k3_s11_e1_i32_o24_noskip r1_k3_s22_e3_i24_o24", None, 30.0, 0.0, "failed"),
    ("t5", "r1_k3_s11_e1_i32_o16_noskip r3_k3_s22_e6_i16_o24", 0.75, 60.0, 0.74, "ok"),  # dominated by t1
]


@pytest.fixture
def search_run(tmp_path):
    from mnas.results.store import ResultStore

    run = tmp_path / "runs" / "mini"
    with ResultStore(run) as store:
        for trial, blocks, accuracy, latency, reward, status in CHILDREN:
            record = {"trial_id": trial, "arch": blocks, "status": status, "accuracy": accuracy,
                      "latency_ms": latency, "reward": reward}
            if status == "failed":
                record["failure_code"] = "nan_loss"
            store.add_child(record)
    (run / "config.json").write_text(json.dumps({"space": "mnasnet-small", "deploy": {"resolution": 192}}))
    return str(run)


def test_rank_and_pareto_resolve_as_the_dashboard_numbers_them(search_run):
    from mnas.results.pareto import pareto_front
    from mnas.results.store import ResultStore
    from mnas.trainer.replay import resolve_arch

    by_reward = ["t2", "t1", "t5", "t3"]
    by_latency_on_front = ["t3", "t1", "t2"]
    with ResultStore(search_run, readonly=True) as store:  # the store's own orders, which the dashboard prints
        assert store.top(10)["trial_id"].tolist() == by_reward
        assert pareto_front(store.children())["trial_id"].tolist() == by_latency_on_front
    blocks = {trial: b for trial, b, *_ in CHILDREN}
    for rank, trial in enumerate(by_reward, 1):
        resolved = resolve_arch(f"{search_run}:{rank}")
        assert " ".join(resolved.arch.block_strings) == blocks[trial] and resolved.slug == f"mini-rank{rank}"
    for index, trial in enumerate(by_latency_on_front, 1):
        assert " ".join(resolve_arch(f"{search_run}:pareto:{index}").arch.block_strings) == blocks[trial]
    arch = resolve_arch(f"{search_run}:1").arch  # completed from the run's space and deployment settings
    assert (arch.stem_filters, arch.dropout, arch.resolution) == (8, 0.0, 192)
    assert resolve_arch("mnasnet-a1").slug == "mnasnet-a1"


def test_cli_trains_a_searchs_children_by_rank_and_by_pareto_position(search_run, tiny, tmp_path, capsys,
                                                                      monkeypatch):
    _, data_dir = tiny
    blocks = {trial: b for trial, b, *_ in CHILDREN}
    monkeypatch.chdir(tmp_path)  # the default run directory is runs/train/<run>-rank<R>-<dataset> (or -pareto<I>-)
    small = ["--data-dir", data_dir, "--epochs", "1", "--batch-size", "16", "--train-limit", "32", "--eval-limit",
             "16", "--threads", "1"]
    for spec, folder, trial, extra in ((f"{search_run}:2", "mini-rank2-fashion-mnist", "t1", []),
                                       (f"{search_run}:pareto:1", "mini-pareto1-fashion-mnist", "t3",
                                        ["--export-dir", "exported", "--no-int8", "--weight-only"])):
        code, out, err = run_cli(["train", "--arch", spec, *small, *extra], capsys)
        assert code == 0, err
        run = tmp_path / "runs" / "train" / folder
        assert f"training {spec} on fashion-mnist" in out and "top-5" in out
        config = json.loads((run / "config.json").read_text())
        assert config["arch_source"] == spec and " ".join(config["arch"]["blocks"]) == blocks[trial]
        assert (config["arch"]["stem_filters"], config["arch"]["resolution"]) == (8, 192)  # the run's space, deploy
        assert config["model"]["arch"]["resolution"] == 28 and (run / "checkpoint.npz").exists()
    report = json.loads((tmp_path / "exported" / "export.json").read_text())
    float32, dynamic = report["formats"]
    assert (float32["format"], dynamic["format"]) == ("float32", "dynamic") and float32["max_abs_diff"] < 1e-4
    # Weight-only quantization stores the large kernels (here the 1x1 head conv to 1280 filters) in int8; TFLite
    # leaves tensors under 1,024 weights in float, so a tiny model would not shrink.
    assert dynamic["bytes"] < float32["bytes"] / 2 and dynamic["agreement"] >= 0.5


@pytest.mark.parametrize("suffix, message", [
    (":5", "has 4 ok children, rank 5 is out of range"),
    (":0", "rank must be a positive integer"),
    (":pareto:4", "Pareto front has 3 children"),
    (":pareto:x", "Pareto index must be a positive integer"),
    (":", "rank must be a positive integer (1 = first), got ''"),
    (":pareto:", "Pareto index must be a positive integer"),
    ("/nothing:1", "no such run directory"),
])
def test_bad_child_references_exit_2_naming_the_problem(search_run, suffix, message, tmp_path, capsys):
    code, _, err = run_cli(["train", "--arch", search_run + suffix, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_litert_falls_back_to_builtin_kernels_when_xnnpack_cannot_prepare(tiny, monkeypatch):
    import ai_edge_litert.interpreter as litert

    from mnas.trainer.export import convert, run_tflite
    from mnas.trainer.train import build, open_data

    config = tiny_config(tiny)
    inputs = open_data(config)
    flatbuffer = convert(build(config, inputs), "float32")
    expected, _ = run_tflite(flatbuffer, inputs, threads=1)
    real = litert.Interpreter

    class FailingXnnpack(real):  # what LiteRT did once on a trained MnasNet-A1 export
        def __init__(self, *args, experimental_op_resolver_type=litert.OpResolverType.AUTO, **kwargs):
            super().__init__(*args, experimental_op_resolver_type=experimental_op_resolver_type, **kwargs)
            self.resolver = experimental_op_resolver_type

        def allocate_tensors(self):
            if self.resolver == litert.OpResolverType.AUTO:
                raise RuntimeError("Node number 100 (TfLiteXNNPackDelegate) failed to prepare.")
            return super().allocate_tensors()

    monkeypatch.setattr(litert, "Interpreter", FailingXnnpack)
    info = {}
    logits, _ = run_tflite(flatbuffer, inputs, threads=1, info=info)
    assert info == {"kernels": "builtin"}
    np.testing.assert_allclose(logits, expected, atol=1e-4)
