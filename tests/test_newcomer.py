"""What a new user meets (issue 23): commands printed as they work, one meaning of rank, every ARCH form in every
command, a quiet start, a replay and an export that say what their numbers mean, typed Parquet columns."""

from __future__ import annotations

import argparse
import ast
import io
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mnas import cli
from mnas.results import views
from mnas.results.export import export_frame, read_export
from mnas.results.store import ResultStore

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


# -- printed commands ----------------------------------------------------------------------------------------------


@pytest.fixture
def fake_venv(tmp_path, monkeypatch):
    """A checkout-like folder whose .venv/bin holds a `python` and an executable `mnas`; we run as that python."""
    bin_dir = tmp_path / "checkout" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "mnas"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    return bin_dir


def test_printed_commands_use_the_venvs_mnas_as_it_runs_from_the_current_folder(fake_venv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "checkout")
    assert views.mnas_prefix() == ".venv/bin/mnas"  # not `python launch.py`: outside the venv that has no pandas
    assert views.replay_command("runs/a b", rank=2) == ".venv/bin/mnas train --arch 'runs/a b:2'"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # outside the checkout: the script's absolute path
    assert views.mnas_prefix() == shlex.quote(str(fake_venv / "mnas"))
    monkeypatch.setenv("PATH", f"{fake_venv}:/usr/bin:/bin")  # `source .venv/bin/activate`
    assert views.mnas_prefix() == "mnas"
    assert views.replay_command("runs/x", pareto=1) == "mnas train --arch runs/x:pareto:1"


def test_without_the_console_script_the_interpreter_runs_launch_py(fake_venv, tmp_path, monkeypatch):
    (fake_venv / "mnas").unlink()
    monkeypatch.chdir(tmp_path / "checkout")
    python, script = shlex.split(views.mnas_prefix())
    assert python == ".venv/bin/python" and Path(script).samefile(ROOT / "launch.py")


def _search_args(**given):
    fields = dict(config=None, out=None, samples=None, workers=None, target_ms=None, reward=None, latency=None,
                  strategy=None, seed=None, scheduler=None, address=None, quiet=False, resume=False)
    fields.update(given)
    return argparse.Namespace(**fields)


def test_the_resume_hint_under_make_is_the_make_form(monkeypatch, tmp_path):
    from mnas.commands.search import _resume_command

    monkeypatch.chdir(tmp_path)
    run_dir = str(tmp_path / "runs" / "default")
    monkeypatch.setenv("MNAS_VIA_MAKE", "1")  # what the Makefile's search line sets
    assert _resume_command(_search_args(config="configs/default.yaml"), run_dir) == \
        "make search SEARCH_ARGS=--resume"
    # the user's own SEARCH_ARGS come again (make passes configs/default.yaml, and the overrides must match)
    assert _resume_command(_search_args(config="configs/default.yaml", samples=10, out="runs/try", target_ms=22.5),
                           run_dir) == "make search SEARCH_ARGS='--out runs/try --samples 10 --target-ms 22.5 --resume'"
    monkeypatch.delenv("MNAS_VIA_MAKE")
    assert _resume_command(_search_args(), run_dir) == \
        f"{views.mnas_prefix()} search --out runs/default --resume"


def test_a_search_started_again_by_make_says_how_make_continues_it(monkeypatch, tmp_path, capsys):
    run = tmp_path / "run"
    ResultStore(run).close()  # a folder that already holds a search
    monkeypatch.setenv("MNAS_VIA_MAKE", "1")
    code, out, err = run_cli(["search", "--config", ROOT / "configs" / "smoke.yaml", "--out", run], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    expected = shlex.quote(f"--config {ROOT / 'configs' / 'smoke.yaml'} --out {run} --resume")
    assert f"continue it with make search SEARCH_ARGS={expected}, or choose another --out" in err


def test_the_makefile_tells_the_search_it_runs_under_make():
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "launch.py search" in line)
    assert line.strip().startswith("MNAS_VIA_MAKE=1 ")


# -- one meaning of rank, every ARCH form ----------------------------------------------------------------------------

BLOCKS = {  # trial -> (accuracy, latency, reward); each its own architecture
    "fast": (0.60, 20.0, 0.65, "r1_k3_s11_e1_i32_o16_noskip r1_k3_s22_e3_i16_o24"),
    "mid": (0.72, 60.0, 0.73, "r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24"),
    "best": (0.76, 78.0, 0.758, "r1_k5_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24"),
    "dominated": (0.70, 90.0, 0.69, "r1_k3_s11_e1_i32_o16_noskip r3_k3_s22_e6_i16_o24"),
    "stopped": (0.40, 30.0, 0.42, "r1_k3_s11_e1_i32_o24_noskip r1_k3_s22_e3_i24_o24"),
}


@pytest.fixture
def search_run(tmp_path):
    run = tmp_path / "runs" / "mini"
    with ResultStore(run) as store:
        for i, (trial, (accuracy, latency, reward, blocks)) in enumerate(BLOCKS.items()):
            store.add_child({"trial_id": trial, "sample": i, "arch": blocks, "accuracy": accuracy,
                             "latency_ms": latency, "reward": reward, "indices": [i, i + 1, 0],
                             "latencies": {"pixel1": latency, "host": latency / 4},
                             "status": "pruned" if trial == "stopped" else "ok"})
    (run / "config.json").write_text(json.dumps({"space": "mnasnet-small", "deploy": {"resolution": 192}}))
    return run


def _table(out: str) -> tuple[str, list[list[str]]]:
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["rank", "pareto", "trial"]
    return lines[0], [line.split() for line in lines[2:-1]]


@pytest.mark.parametrize("argv", [[], ["--pareto"], ["--sort", "latency_ms"], ["--status", "ok", "--top", "2"]])
def test_the_results_table_names_each_child_as_train_takes_it(search_run, capsys, argv):
    from mnas.trainer.replay import resolve_arch

    code, out, _ = run_cli(["results", search_run, *argv], capsys)
    assert code == 0
    legend, rows = _table(out)
    key = "pareto:I" if argv == ["--pareto"] else "RANK"
    assert legend == (f"# rank = {search_run}:RANK (the 'ok' children by reward, best first), pareto = "
                      f"{search_run}:pareto:I (the Pareto front by latency, fastest first); replay: "
                      f"{views.mnas_prefix()} train --arch {search_run}:{key}")
    assert rows
    for rank, pareto, trial, *_ in rows:
        blocks = BLOCKS[trial][3]
        if rank != "-":
            assert " ".join(resolve_arch(f"{search_run}:{rank}").arch.block_strings) == blocks
        if pareto != "-":
            assert " ".join(resolve_arch(f"{search_run}:pareto:{pareto}").arch.block_strings) == blocks
    if argv == ["--pareto"]:  # the front's own order: pareto 1..N, ranks by reward beside them
        assert [row[:3] for row in rows] == [["4", "1", "fast"], ["2", "2", "mid"], ["1", "3", "best"]]


@pytest.mark.parametrize("form", [":1", ":pareto:1", ":3"])
def test_describe_and_latency_take_every_arch_form_train_takes(search_run, capsys, form):
    from mnas.trainer.replay import resolve_arch

    spec = f"{search_run}{form}"
    arch = resolve_arch(spec).arch
    code, out, err = run_cli(["describe", spec, "--json"], capsys)
    assert code == 0, err
    described = json.loads(out)
    assert described["blocks"] == list(arch.block_strings) and described["resolution"] == 192
    code, out, err = run_cli(["latency", spec, "--json"], capsys)
    assert code == 0, err
    measured = json.loads(out)
    assert measured["blocks"] == list(arch.block_strings) and measured["resolution"] == 192


@pytest.mark.parametrize("command", ["describe", "latency"])
def test_a_bad_child_reference_is_one_line_and_status_2(search_run, capsys, command):
    code, out, err = run_cli([command, f"{search_run}:pareto:9"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "Pareto front has 3 children" in err


# -- Parquet export --------------------------------------------------------------------------------------------------


def test_parquet_export_types_indices_and_latencies_as_arrow_list_and_map(search_run, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with ResultStore(search_run, readonly=True) as store:
        children = store.children()
    path = export_frame(children, tmp_path / "children.parquet")
    schema = pq.read_schema(path)
    assert schema.field("indices").type == pa.list_(pa.int64())
    assert schema.field("latencies").type == pa.map_(pa.string(), pa.float64())
    raw = pd.read_parquet(path)
    assert list(raw["indices"].iloc[0]) == [0, 1, 0] and dict(raw["latencies"].iloc[0]) == {"pixel1": 20.0,
                                                                                          "host": 5.0}
    pd.testing.assert_frame_equal(read_export(path), children)  # and back to lists and dicts
    assert isinstance(read_export(path)["indices"].iloc[0], list)


# -- a quiet start ----------------------------------------------------------------------------------------------------

LIBRARY_NOISE = re.compile(r"^[IWE]\d{4} |absl::InitializeLog|oneDNN|cuInit|cuda drivers|Token authentication",
                           re.MULTILINE)


def _mnas(*argv) -> subprocess.CompletedProcess:
    """launch.py in a fresh process, with none of the log settings the test session exported."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MNAS_VERBOSE")}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_measured_latency_starts_quietly_and_its_progress_counts_passes():
    done = _mnas("latency", "mnasnet-small", "--backend", "host", "--resolution", "96", "--runs", "2",
                 "--passes", "2", "--no-cache")
    assert done.returncode == 0, done.stderr
    assert not LIBRARY_NOISE.search(done.stderr), done.stderr
    # one network timed in 2 passes reads as such, not as "timed network 1/2"
    assert re.search(r"^timed 1 network, pass 1/2$", done.stderr, re.MULTILINE), done.stderr
    assert re.search(r"^timed 1 network, pass 2/2: fastest [0-9.]+ ms$", done.stderr, re.MULTILINE)


@pytest.mark.slow
def test_a_short_training_starts_quietly_warns_and_verbose_shows_the_libraries(tmp_path):
    from conftest import TINY_ARCH, write_tiny_fashion

    (tmp_path / "tiny.arch").write_text(TINY_ARCH)
    argv = ["train", "--arch", tmp_path / "tiny.arch", "--data-dir", write_tiny_fashion(tmp_path / "fm"),
            "--epochs", "1", "--batch-size", "16", "--threads", "1"]
    quiet = _mnas(*argv, "--out", tmp_path / "quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert not LIBRARY_NOISE.search(quiet.stderr + quiet.stdout), quiet.stderr
    assert "done after 1 epoch (4 steps)" in quiet.stdout and "too short a run for either" in quiet.stdout
    assert "warning: 4 steps is too short to measure a model" in quiet.stdout and "--epochs 250 here" in quiet.stdout
    loud = _mnas("--verbose", *argv, "--out", tmp_path / "loud")
    assert loud.returncode == 0 and re.search(r"^[IWE]\d{4} ", loud.stderr, re.MULTILINE), loud.stderr


def test_the_quiet_defaults_keep_what_the_user_set_and_leave_rays_auth_mode_to_ray(monkeypatch, caplog):
    for name in ("TF_CPP_MIN_LOG_LEVEL", "RAY_AUTH_MODE", "MNAS_VERBOSE"):
        monkeypatch.delenv(name, raising=False)
    auth = logging.getLogger(cli.RAY_AUTH_LOGGER)
    monkeypatch.setattr(auth, "level", auth.level)
    cli.quiet_libraries(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3" and "RAY_AUTH_MODE" not in os.environ
    from ray._private.authentication.authentication_token_setup import enable_token_auth_by_default

    with caplog.at_level(logging.WARNING):
        assert enable_token_auth_by_default() is True  # Ray's local default, token auth, without its warning
    assert not [r for r in caplog.records if "Token authentication" in r.getMessage()]
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    cli.quiet_libraries(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # the user's own choice is kept
    cli.quiet_libraries(verbose=True)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" and os.environ["MNAS_VERBOSE"] == "1"
    monkeypatch.setenv("MNAS_VERBOSE", "0")


def test_verbose_is_accepted_before_and_after_the_command():
    parser = cli.build_parser()
    assert parser.parse_args(["--verbose", "describe", "mnasnet-a1"]).verbose is True
    assert parser.parse_args(["describe", "mnasnet-a1", "--verbose"]).verbose is True
    assert parser.parse_args(["describe", "mnasnet-a1"]).verbose is False
    assert parser.parse_args(["latency", "mnasnet-a1", "--verbose"]).verbose is True  # a command's subcommands too
    assert parser.parse_args(["latency", "build-lut", "-o", "t.json", "--verbose"]).verbose is True


def _options_without_help(parser: argparse.ArgumentParser, path: str = "mnas") -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _options_without_help(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_of_every_command_line_says_what_it_does():
    """`--help` explains each option: of `mnas` (walked at run time) and of every script (read from the source)."""
    assert _options_without_help(cli.build_parser()) == []
    missing, sources = [], []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in {"tests", "build", "runs"}]
        sources += [Path(folder, name) for name in files if name.endswith(".py")]
    assert len(sources) > 50                                      # the walk found the project's code
    for source in sorted(sources):
        relative = source.relative_to(ROOT)
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
                    and not any(keyword.arg in ("help", None) for keyword in node.keywords)):
                missing.append(f"{relative}:{node.lineno}")
    assert missing == []


# -- a replay that explains itself -----------------------------------------------------------------------------------


def _summary(steps, epochs, averaged=0.508, raw=0.425, classes=10, seconds=60.0):
    final = {"eval_top1": averaged, "eval_top5": 0.9, "raw_eval_top1": raw, "train_seconds": seconds,
             "eval_seconds": 0.0}
    return {"steps": steps, "epochs": epochs, "final": final, "num_classes": classes}


def _config(**recipe):
    from mnas.search.registry import load_architecture
    from mnas.trainer.recipe import Recipe
    from mnas.trainer.train import TrainConfig

    return TrainConfig(arch=load_architecture("mnasnet-small"), recipe=Recipe(**recipe),
                       arch_source="runs/default:1")


def test_a_short_run_says_neither_score_is_the_architectures_and_what_budget_would_be():
    from mnas.trainer.train import reading

    headline, warning, note = reading(_summary(469, 1), _config())  # the run: 1 epoch of Fashion-MNIST
    assert headline.startswith("done after 1 epoch (469 steps): eval top-1 50.80% with the averaged weights, "
                               "42.50% with the raw ones -- too short a run")
    assert warning.startswith("warning: 469 steps is too short to measure a model")
    assert "(here the two scores differ by 8.3 points)" in warning and "about its last 53 steps" in warning
    assert "train at least 1,000 steps: --epochs 3 here, about 3 minutes at this run's pace" in warning
    assert note.startswith("note: the search's accuracy for this child came from its proxy task")


def test_a_long_enough_run_names_the_number_to_read():
    from mnas.trainer.train import reading

    lines = reading(_summary(1407, 3, averaged=0.853, raw=0.83), _config())
    assert lines[0] == ("done after 3 epochs (1,407 steps): eval top-1 85.30%, top-5 90.00% with the averaged "
                        "weights, the number to read (the paper evaluates them, --export-dir exports them; raw "
                        "weights 83.00%)")
    assert not [line for line in lines if line.startswith("warning")]
    three = reading(_summary(1407, 3, classes=3), _config())[0]
    assert "top-5" not in three  # top-5 of 3 classes is every image
    raw_only = reading(_summary(1407, 3), _config(ema_decay=0.0))[0]
    assert raw_only == "done after 3 epochs (1,407 steps): eval top-1 50.80%, top-5 90.00% (raw weights: " \
                       "--ema-decay 0 keeps no average)"


def test_an_epoch_of_a_three_class_dataset_reports_no_top5(tmp_path):
    from mnas.search.registry import load_architecture
    from mnas.trainer.pipelines import _array_input
    from mnas.trainer.train import TrainConfig, train

    rng = np.random.default_rng(0)
    arrays = argparse.Namespace(x_train=rng.integers(0, 255, (32, 28, 28, 1), dtype=np.uint8),
                                y_train=rng.integers(0, 3, 32), x_test=rng.integers(0, 255, (16, 28, 28, 1),
                                                                                    dtype=np.uint8),
                                y_test=rng.integers(0, 3, 16))
    data = _array_input("three", arrays, 3, None, "resize", None, None)
    arch = load_architecture("r1_k3_s11_e1_i8_o8_noskip r1_k3_s22_e3_i8_o16").replace(stem_filters=8,
                                                                                    head_filters=32)
    lines = []
    train(TrainConfig(arch=arch, epochs=1, batch_size=16), tmp_path / "run", threads=1, log=lines.append, data=data)
    assert lines[0].startswith("epoch 1/1") and "eval (averaged) top-1" in lines[0] and "top-5" not in lines[0]


def test_an_export_that_disagrees_with_keras_says_so_with_the_figure_and_the_likely_reason():
    from mnas.trainer.export import agreement_warnings

    def report(int8_agreement, representative=256, float_agreement=1.0):
        return {"keras": {"top1": 0.508}, "num_eval": 10_000, "representative_images": representative,
                "formats": [{"format": "float32", "file": "model_float32.tflite", "agreement": float_agreement,
                             "max_abs_diff": 1e-5},
                            {"format": "int8", "file": "model_int8.tflite", "agreement": int8_agreement,
                             "max_abs_diff": 3.0}]}

    assert agreement_warnings(report(0.987)) == []  # a trained model's int8 export (BENCHMARKS.md)
    [line] = agreement_warnings(report(0.307))
    assert line.startswith("warning: model_int8.tflite predicts the Keras model's class on only 30.7% of the "
                           "10,000 evaluation images: likely a model not trained far enough (Keras top-1 50.8%)")
    [line] = agreement_warnings(report(0.5, representative=8))
    assert "likely too few calibration images (8;" in line
    [line] = agreement_warnings(report(0.99, float_agreement=0.9))
    assert line.startswith("warning: model_float32.tflite") and "converter problem" in line


def test_two_trainings_of_one_child_on_two_datasets_get_two_folders(search_run, capsys, tmp_path, monkeypatch):
    folders = []

    def stop(config, out, **kwargs):  # the folder is all this test needs: no training
        folders.append(out)
        raise KeyboardInterrupt

    data = argparse.Namespace(name="data", num_train=1, num_eval=1, image_shape=(28, 28, 1))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("mnas.trainer.train.open_data", lambda config: data)
    monkeypatch.setattr("mnas.trainer.train.train", stop)
    monkeypatch.setattr("mnas.trainer.train.set_up_tensorflow",
                        lambda threads=0, mixed_precision=False: __import__("tensorflow"))
    for dataset in ("fashion-mnist", "cifar"):
        code, _, err = run_cli(["train", "--arch", f"{search_run}:1", "--dataset", dataset], capsys)
        assert code == 130, err
    assert folders == [os.path.join("runs", "train", "mini-rank1-fashion-mnist"),
                       os.path.join("runs", "train", "mini-rank1-cifar")]


# -- the plot says what was measured -----------------------------------------------------------------------------------


def test_the_plot_axes_name_the_runs_proxy_task_and_latency_backend(search_run):
    from mnas.results.figures import scatter_figure

    with ResultStore(search_run, readonly=True) as store:
        children = store.children()

    def snapshot(config, label="mini"):
        return views.RunSnapshot(label=label, run_dir=str(search_run), children=children,
                                 stats=pd.DataFrame(), config=config)

    default = snapshot({"latency": ["pixel1"], "proxy": {"epochs": 1, "train_subset": 20000}})
    layout = scatter_figure([default]).layout
    assert layout.xaxis.title.text == "latency (ms, predicted Pixel 1)"
    assert layout.yaxis.title.text == "proxy accuracy (Fashion-MNIST, 1 epoch)"
    other = snapshot({"latency": ["host", "pixel1"], "proxy": {"dataset": "cifar", "steps": 300}}, "other")
    assert views.axis_titles([other]) == ("latency (ms, measured on this host)", "proxy accuracy (CIFAR-10, 300 steps)")
    assert views.axis_titles([default, other]) == ("latency (ms)", "accuracy")  # runs that differ: plain words


def test_the_eta_counts_what_a_child_costs_a_worker_not_the_start_up():
    """Five children of 60 s each on two workers, after a 90-second start-up: 35 left, two of them already half
    done, take (35 - 1) x 60 / 2 = 17 minutes; a rate since the start (5 children in 240 s) would say 28."""
    from mnas.commands.search import Progress, eta_seconds

    assert eta_seconds(35, [60.0] * 5, workers=2, in_flight=2) == pytest.approx(34 * 60 / 2)
    assert eta_seconds(35, [], workers=2) is None and eta_seconds(0, [60.0], workers=2) == 0.0
    assert eta_seconds(10, [10.0] * 20 + [500.0], workers=1) == pytest.approx(100.0)  # one straggler: the median
    stream = io.StringIO()
    progress = Progress(stream=stream, workers=2)
    for done in range(1, 6):
        record = {"status": "ok", "reward": 0.8, "accuracy": 0.8, "latency_ms": 70.0, "total_seconds": 60.0}
        progress(record, {"done": done, "samples": 40, "best_reward": 0.8, "entropy": 1.0, "step": 1,
                          "elapsed": 90.0 + 30 * done, "in_flight": 2})
    assert stream.getvalue().splitlines()[-1].endswith("ETA 17m00s")
