"""Export round trips (SavedModel, float32 and int8 TFLite run in LiteRT) and replaying a search's children."""

import json
import os

import numpy as np
import pytest

from test_train import run_cli, tiny, tiny_config  # noqa: F401 (tiny is a fixture)
from trainer.train import train


def test_export_round_trip_float_matches_keras_and_int8_reports_accuracy(tiny, tmp_path):
    import tensorflow as tf

    from trainer.export import export_model, run_tflite

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
    # The SavedModel serves the same function.
    served = tf.saved_model.load(str(out / "saved_model"))
    x = next(iter(inputs.evaluate(4)))[0]
    np.testing.assert_allclose(served.serve(x).numpy(), keras_logits[:4], atol=1e-4)


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
    code, _, err = run_cli(["export", "--checkpoint", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "no such run directory" in err
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
    from results.store import ResultStore

    run = tmp_path / "runs" / "mini"
    with ResultStore(run) as store:
        for trial, blocks, accuracy, latency, reward, status in CHILDREN:
            record = {"trial_id": trial, "arch": blocks, "status": status, "accuracy": accuracy,
                      "latency_ms": latency, "reward": reward}
            if status == "failed":
                record["failure_reason"] = "nan_loss"
            store.add_child(record)
    (run / "config.json").write_text(json.dumps({"space": "mnasnet-small", "deploy": {"resolution": 192}}))
    return str(run)


def test_rank_and_pareto_resolve_as_the_dashboard_numbers_them(search_run):
    from results.pareto import pareto_front
    from results.store import ResultStore
    from trainer.replay import resolve_arch

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


@pytest.mark.parametrize("suffix, message", [
    (":5", "has 4 ok children, rank 5 is out of range"),
    (":0", "rank must be a positive integer"),
    (":pareto:4", "Pareto front has 3 children"),
    (":pareto:x", "Pareto index must be a positive integer"),
])
def test_bad_child_references_exit_2_naming_the_problem(search_run, suffix, message, tmp_path, capsys):
    code, _, err = run_cli(["train", "--arch", search_run + suffix, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_litert_falls_back_to_builtin_kernels_when_xnnpack_cannot_prepare(tiny, monkeypatch):
    import ai_edge_litert.interpreter as litert

    from trainer.export import convert, run_tflite
    from trainer.train import build, open_data

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
