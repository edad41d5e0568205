"""Bad input across the command line, configs, block strings, search spaces, datasets and latency files.

Every case must end with exit status 2, one error line naming what was wrong (argparse may print its usage
line before it), no traceback, and nothing left behind in the working folder but the inputs the case wrote.
The cases run in-process through `cli.main` (fast); the search cases stop before Ray starts.
"""

import gzip
import os
import struct

import pytest

from mnas import cli
from conftest import record_reliability

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")


def write(path, text, mode="w"):
    with open(path, mode) as handle:
        handle.write(text)
    return str(path)


def smoke_with(tmp, extra):
    """The smoke config with some lines appended (later keys win in YAML mappings? no: we rewrite keys)."""
    import yaml

    with open(SMOKE) as handle:
        config = yaml.safe_load(handle)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return write(tmp / "config.yaml", yaml.safe_dump(config))


def smoke_choices(**changes):
    """The smoke space's choice lists with some replaced (smoke_with replaces a nested mapping whole)."""
    import yaml

    with open(SMOKE) as handle:
        return {**yaml.safe_load(handle)["space"]["choices"], **changes}


def finished_run(tmp):
    """A run folder whose store holds one finished child (what `train --arch RUN:RANK` reads)."""
    from mnas.results.store import ResultStore

    with ResultStore(tmp / "run") as store:
        store.add_child({"trial_id": "t0", "sample": 0, "arch": "r1_k3_s11_e1_i32_o16", "status": "ok",
                         "reward": 0.5, "accuracy": 0.5, "latency_ms": 10.0})
    return str(tmp / "run")


def truncated_fashion_mnist(tmp):
    folder = tmp / "fmnist"
    folder.mkdir()
    header = struct.pack(">IIII", 0x00000803, 60000, 28, 28)
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(header + b"\0" * 1000)            # far fewer bytes than 60000 images
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(struct.pack(">II", 0x00000801, 60000) + b"\0" * 60000)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(folder / name, "wb") as handle:
            handle.write(b"")
    return str(folder)


# (id, argv builder(tmp) -> list, expected text in the error line)
CASES = [
    # describe: names, block strings, architecture files
    ("unknown-arch", lambda t: ["describe", "mnasnet-z9"], "unknown architecture 'mnasnet-z9'"),
    ("bad-token", lambda t: ["describe", "r1_k3_s11_e1_i32_o16_x9"], "unknown token 'x9'"),
    ("bad-strides", lambda t: ["describe", "r1_k3_s2_e1_i32_o16"], "'s2'"),
    ("missing-token", lambda t: ["describe", "r1_k3_s11_e1_i32"], "missing token(s) o"),
    ("noskip-and-poolskip", lambda t: ["describe", "r1_k3_s11_e1_i32_o16_noskip_poolskip"], "exclude each other"),
    ("conv-with-expansion", lambda t: ["describe", "r1_k3_s11_e6_i32_o16_conv"], "needs e1"),
    ("se-out-of-range", lambda t: ["describe", "r1_k3_s11_e1_i32_o16_se2"], "'se2'"),
    ("arch-file-bad-line", lambda t: ["describe", write(t / "a.txt", "stem: 32\nr1_k3_s11_e1_i32_o16\nr2_k3_q\n")],
     "a.txt:3"),
    ("arch-file-empty", lambda t: ["describe", write(t / "empty.txt", "# nothing\n")], "no block strings"),
    ("arch-file-unknown-setting", lambda t: ["describe", write(t / "c.txt", "colour: 3\nr1_k3_s11_e1_i32_o16\n")],
     "unknown setting 'colour'"),
    ("arch-file-binary", lambda t: ["describe", write(t / "b.txt", b"\xff\xfe\x00r1", "wb")], "cannot read"),
    ("arch-path-is-dir", lambda t: ["describe", str(t)], "not a file"),
    ("resolution-zero", lambda t: ["describe", "mnasnet-a1", "--resolution", "0"], "--resolution must be"),
    ("depth-multiplier-negative", lambda t: ["describe", "mnasnet-a1", "--depth-multiplier", "-1"], "positive"),
    ("resolution-not-int", lambda t: ["describe", "mnasnet-a1", "--resolution", "big"], "invalid int value"),
    # numbers that pass `> 0` and overflow later (issue 20)
    ("depth-multiplier-inf", lambda t: ["describe", "mnasnet-a1", "--depth-multiplier", "inf"],
     "--depth-multiplier must be positive and at most 10"),
    ("depth-multiplier-1e300", lambda t: ["describe", "mnasnet-a1", "--depth-multiplier", "1e300"],
     "--depth-multiplier must be positive and at most 10"),
    ("latency-depth-multiplier-inf", lambda t: ["latency", "mnasnet-a1", "--depth-multiplier", "inf"],
     "--depth-multiplier must be positive"),
    ("latency-depth-multiplier-1e300", lambda t: ["latency", "mnasnet-a1", "--depth-multiplier", "1e300"],
     "--depth-multiplier must be positive"),
    ("arch-file-depth-multiplier-inf", lambda t: ["describe", write(t / "inf.txt", "depth_multiplier: inf\n"
                                                                   "r1_k3_s11_e1_i32_o16\n")],
     "inf.txt: depth multiplier must be positive and at most 10"),
    ("arch-file-10mb-token", lambda t: ["describe", write(t / "big.txt", "r1_k3_s11_e1_i32_o16_" + "x" * 10**7)],
     "(10,000,000 characters)"),
    ("arch-file-10mb-number", lambda t: ["describe", write(t / "num.txt", "r1_k3_s11_e1_i32_o" + "9" * 10**7)],
     "(10,000,001 characters)"),
    ("block-even-kernel", lambda t: ["describe", "r1_k4_s11_e1_i32_o16"], "'k4' (kernel must be odd"),
    ("block-too-many-layers", lambda t: ["describe", "r1000000000000_k3_s11_e1_i32_o16"], "'r1000000000000'"),
    # search: config files and options (all stop before Ray)
    ("config-missing", lambda t: ["search", "--config", str(t / "nope.yaml"), "--out", str(t / "r")], "not found"),
    ("config-yaml-error", lambda t: ["search", "--config", write(t / "c.yaml", "samples: [1,\n"),
                                     "--out", str(t / "r")], "not valid YAML"),
    ("config-unknown-key", lambda t: ["search", "--config", smoke_with(t, {"colour": 1}), "--out", str(t / "r")],
     "unknown setting(s) colour"),
    ("config-unknown-proxy-key", lambda t: ["search", "--config", smoke_with(t, {"proxy": {"epochz": 1}}),
                                            "--out", str(t / "r")], "epochz"),
    ("config-unknown-proxy-dataset", lambda t: ["search", "--config",
                                                smoke_with(t, {"proxy": {"dataset": "mnist-9"}}), "--out",
                                                str(t / "r")], "unknown dataset 'mnist-9'"),
    ("config-unknown-controller-key", lambda t: ["search", "--config", smoke_with(t, {"controller": {"lr": 1}}),
                                                 "--out", str(t / "r")], "setting(s) lr"),
    ("reward-unknown-preset", lambda t: ["search", "--config", smoke_with(t, {"reward": {"preset": "mild"}}),
                                         "--out", str(t / "r")], "unknown reward preset 'mild'"),
    ("reward-positive-beta", lambda t: ["search", "--config", smoke_with(
        t, {"reward": {"preset": None, "alpha": 0, "beta": 1.0, "target_ms": 10}}), "--out", str(t / "r")], "beta"),
    ("samples-zero", lambda t: ["search", "--config", SMOKE, "--samples", "0", "--out", str(t / "r")],
     "samples must be a positive integer"),
    ("target-negative", lambda t: ["search", "--config", SMOKE, "--target-ms", "-5", "--out", str(t / "r")],
     "target"),
    ("latency-unknown-backend", lambda t: ["search", "--config", SMOKE, "--latency", "sundial",
                                           "--out", str(t / "r")], "sundial"),
    ("latency-lut-missing", lambda t: ["search", "--config", SMOKE, "--latency", f"lut:{t}/none.json",
                                       "--out", str(t / "r")], "none.json"),
    ("strategy-unknown", lambda t: ["search", "--config", SMOKE, "--strategy", "annealing"], "invalid choice"),
    ("space-file-missing", lambda t: ["search", "--config", smoke_with(t, {"space": str(t / "s.yaml")}),
                                      "--out", str(t / "r")], "unknown search space"),
    ("space-bad-kernel", lambda t: ["search", "--config", smoke_with(
        t, {"space": {"blocks": [{"filters": 16, "layers": 1, "stride": 1, "kernel": [4]}]}}),
        "--out", str(t / "r")], "bad option 4"),
    ("space-missing-stride", lambda t: ["search", "--config", smoke_with(
        t, {"space": {"blocks": [{"filters": 16, "layers": 1}]}}), "--out", str(t / "r")], "needs 'stride'"),
    ("dataset-missing", lambda t: ["search", "--config", smoke_with(t, {"proxy": {"data_dir": str(t / "nodata")}}),
                                   "--out", str(t / "r")], "dataset-fashion-mnist"),
    ("dataset-truncated", lambda t: ["search", "--config", smoke_with(
        t, {"proxy": {"data_dir": truncated_fashion_mnist(t)}}), "--out", str(t / "r")], "train-images"),
    ("dataset-too-small-for-split", lambda t: ["search", "--config", smoke_with(
        t, {"proxy": {"train_subset": 59000, "heldout": 5000}}), "--out", str(t / "r")], "training images"),
    ("faults-unknown-kind", lambda t: ["search", "--config", smoke_with(t, {"faults": {"rate": 0.1,
                                       "kinds": ["meteor"]}}), "--out", str(t / "r")], "meteor"),
    ("resume-without-run", lambda t: ["search", "--config", SMOKE, "--resume", "--out", str(t / "r")],
     "no search to continue"),
    # wrong types in a config: each crashed with a TypeError before (issue 20)
    ("config-extra-targets-int", lambda t: ["search", "--config", smoke_with(t, {"reward": {"extra_targets": 5}}),
                                            "--out", str(t / "r")], "reward: extra_targets must be a list"),
    ("config-failed-reward-list", lambda t: ["search", "--config", smoke_with(
        t, {"reward": {"failed_reward": [1]}}), "--out", str(t / "r")], "failed_reward must be a finite number"),
    ("config-data-dir-list", lambda t: ["search", "--config", smoke_with(t, {"proxy": {"data_dir": ["x"]}}),
                                        "--out", str(t / "r")], "proxy config: data_dir must be"),
    ("config-space-dropout-list", lambda t: ["search", "--config", smoke_with(t, {"space": {"dropout": [0.1]}}),
                                             "--out", str(t / "r")], "dropout must be a number in [0, 1)"),
    ("config-space-list", lambda t: ["search", "--config", smoke_with(t, {"space": ["mnasnet"]}),
                                     "--out", str(t / "r")], "space must be a preset name"),
    ("config-space-null", lambda t: ["search", "--config", smoke_with(t, {"space": None}), "--out", str(t / "r")],
     "space must be a preset name"),
    ("config-strategy-list", lambda t: ["search", "--config", smoke_with(t, {"strategy": ["mnas"]}),
                                        "--out", str(t / "r")], "strategy must be one of mnas, random, evolution"),
    ("config-name-int", lambda t: ["search", "--config", smoke_with(t, {"name": 5})], "name must be a non-empty"),
    # a run name is one folder under runs/ (no --out: the name decides where the run goes)
    ("config-name-escapes-runs", lambda t: ["search", "--config", smoke_with(t, {"name": "../../x"})],
     "name '../../x' is not a folder name"),
    ("config-name-empty", lambda t: ["search", "--config", smoke_with(t, {"name": ""})], "name must be a non-empty"),
    ("config-name-dot", lambda t: ["search", "--config", smoke_with(t, {"name": "."})], "is not a folder name"),
    # values that passed validation and failed only once Ray had started (issue 20)
    ("space-filter-multiplier-inf", lambda t: ["search", "--config", smoke_with(
        t, {"space": {"choices": smoke_choices(filter_multiplier=[float("inf")])}}), "--out", str(t / "r")],
     "filter_multiplier: bad option inf"),
    ("space-filter-multiplier-nan", lambda t: ["search", "--config", smoke_with(
        t, {"space": {"choices": smoke_choices(filter_multiplier=[1.0, float("nan")])}}), "--out", str(t / "r")],
     "filter_multiplier: bad option nan"),
    ("cpus-per-worker-nan", lambda t: ["search", "--config", smoke_with(t, {"cpus_per_worker": float("nan")}),
                                       "--out", str(t / "r")], "cpus_per_worker must be a positive number"),
    ("space-dropout-2", lambda t: ["search", "--config", smoke_with(t, {"space": {"dropout": 2}}),
                                   "--out", str(t / "r")], "dropout must be a number in [0, 1), got 2"),
    ("space-layers-huge", lambda t: ["search", "--config", smoke_with(
        t, {"space": {"blocks": [{"filters": 8, "layers": 10**12, "stride": 1}]}}), "--out", str(t / "r")],
     "blocks[1].layers must be an integer from 1 to 100"),
    ("space-layer-offset-huge", lambda t: ["search", "--config", smoke_with(
        t, {"space": {"choices": smoke_choices(layer_offset=[0, 10**12])}}), "--out", str(t / "r")],
     "layer_offset: bad option 1000000000000"),
    ("space-layers-plus-offset-too-many", lambda t: ["search", "--config", smoke_with(
        t, {"space": {"blocks": [{"filters": 8, "layers": 100, "stride": 1}]}}), "--out", str(t / "r")],
     "must be at most 100"),
    ("space-stride-10", lambda t: ["search", "--config", smoke_with(
        t, {"space": {"blocks": [{"filters": 8, "layers": 1, "stride": 10}]}}), "--out", str(t / "r")],
     "stride must be an integer from 1 to 9"),
    # train: a child of a run by rank
    ("train-rank-beyond-sqlite", lambda t: ["train", "--arch", finished_run(t) + ":99999999999999999999999"],
     "rank 99999999999999999999999 is out of range"),
    # results, dashboard, report
    ("results-missing-dir", lambda t: ["results", str(t / "nowhere")], "nowhere"),
    ("results-not-a-run", lambda t: ["results", str(t)], "is it a run directory"),
    ("results-not-sqlite", lambda t: ["results", os.path.dirname(write(t / "results.sqlite", "garbage" * 100))],
     "results.sqlite"),
    ("report-not-html", lambda t: ["report", str(t / "x"), "--out", str(t / "r.txt")],
     "the file name must end in .html"),
    ("dashboard-bad-port", lambda t: ["dashboard", str(t / "x"), "--port", "70000"],
     "invalid port 70000: must be 0-65535"),
    # latency files
    ("latency-unknown-backend-cli", lambda t: ["latency", "mnasnet-a1", "--backend", "abacus"], "abacus"),
    ("latency-lut-corrupt", lambda t: ["latency", "mnasnet-a1", "--backend",
                                       "lut:" + write(t / "lut.json", "{not json")], "lut.json"),
    ("latency-calibrate-bad-csv", lambda t: ["latency", "calibrate", write(t / "m.csv", "a,b\n1,2\n"),
                                             "--output", str(t / "out.json")], "m.csv"),
    # search: the early-stopping scheduler (config section and option)
    ("scheduler-unknown-name", lambda t: ["search", "--config", smoke_with(t, {"scheduler": {"name": "hyperband"}}),
                                          "--out", str(t / "r")], "scheduler.name must be one of none, asha"),
    ("scheduler-asha-one-rung", lambda t: ["search", "--config", smoke_with(t, {"scheduler": {"rungs": 1}}),
                                           "--scheduler", "asha", "--out", str(t / "r")],
     "scheduler.rungs must be at least 2"),
    ("scheduler-option-unknown", lambda t: ["search", "--config", SMOKE, "--scheduler", "median",
                                            "--out", str(t / "r")], "invalid choice: 'median'"),
    # search: resources no node of the (local) Ray cluster has: refused once Ray is up, before anything is written
    ("gpus-no-node-has", lambda t: ["search", "--config", SMOKE, "--gpus-per-worker", "1", "--out", str(t / "r")],
     "no node of the Ray cluster can run a child that needs 1 CPU(s) and 1 GPU(s)"),
    # train on several devices or Ray Train workers (issue 19): refused before data is read or Ray starts
    ("train-devices-beyond-machine", lambda t: ["train", "--arch", "mnasnet-small", "--devices", "64"],
     "--devices 64: this machine has"),
    ("train-workers-beyond-machine", lambda t: ["train", "--arch", "mnasnet-small", "--workers", "1000"],
     "--workers 1000: this machine can place at most"),
    ("train-workers-zero", lambda t: ["train", "--arch", "mnasnet-small", "--workers", "0"],
     "--workers must be a positive integer, got 0"),
    ("train-address-without-workers", lambda t: ["train", "--arch", "mnasnet-small", "--address", "auto"],
     "--address joins a Ray cluster for a multi-worker run: give --workers N with it"),
    ("train-global-batch-uneven-over-workers", lambda t: ["train", "--arch", "mnasnet-small", "--workers", "2",
                                                          "--batch-size", "127"],
     "--batch-size 127 (the global batch) does not split evenly over 2 replicas"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_and_status_2(case, tmp_path, monkeypatch, capsys):
    name, argv, needle = case
    monkeypatch.chdir(tmp_path)
    args = argv(tmp_path)
    inputs = set(os.listdir(tmp_path))
    try:
        status = cli.main(args)
    except SystemExit as exit_:          # argparse's own errors
        status = exit_.code
    captured = capsys.readouterr()
    assert status == 2, (name, captured.err)
    assert "Traceback" not in captured.err
    error_lines = [line for line in captured.err.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1, (name, captured.err)
    assert needle in error_lines[0], (name, captured.err)
    assert len(error_lines[0]) < 500, f"{name}: an error line of {len(error_lines[0])} characters"
    assert set(os.listdir(tmp_path)) == inputs, f"{name} left {set(os.listdir(tmp_path)) - inputs}"
    record_reliability("bad_input", case=name, status=status, error_lines=len(error_lines),
                       left_behind=len(set(os.listdir(tmp_path)) - inputs))


# -- failures of the machine rather than of the input: still one line, exit 2, nothing half-written ----------------


def test_report_on_a_read_only_file_system_is_one_line(tmp_path, monkeypatch, capsys):
    """Root ignores a folder's mode, so the file system's refusal is played by the one atomic writer's mkstemp."""
    import errno

    from mnas.search import fileio

    run = finished_run(tmp_path)
    out = tmp_path / "ro"
    out.mkdir()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(out))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    status = cli.main(["report", run, "--out", str(out / "report.html")])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"mnas report: error: cannot write the report to {out / 'report.html'}: "
                          "Read-only file system")
    assert os.listdir(out) == []
    record_reliability("bad_input", case="report-read-only-file-system", status=status, error_lines=1,
                       left_behind=len(os.listdir(out)))


@pytest.mark.parametrize("make_value, needle", [
    (lambda t: write(t / "a-file", "not a folder"), "is a file, not a folder"),
    (lambda t: write(t / "a-file", "") + "/below", "is a file, not a folder"),
    (lambda t: "/tmp/" + "x" * 60, "too long a path for Ray's sockets"),
], ids=["a-file", "below-a-file", "too-long"])
def test_ray_temp_dir_that_cannot_hold_ray_is_refused_before_ray_starts(tmp_path, monkeypatch, make_value, needle):
    import ray

    from mnas.search.tune import init_ray

    def must_not_start(*args, **kwargs):
        raise AssertionError("ray.init was called with a temporary folder Ray cannot use")

    monkeypatch.setattr(ray, "init", must_not_start)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setenv("MNAS_RAY_TMPDIR", make_value(tmp_path))
    with pytest.raises(ValueError, match=needle) as err:
        init_ray(None, num_cpus=1)
    assert str(err.value).startswith("MNAS_RAY_TMPDIR ") and "\n" not in str(err.value)
    record_reliability("bad_input", case=f"ray-temp-dir: {needle}", status=2, error_lines=1, left_behind=0)


# -- the proxy's data (issue 19): checked before Ray starts, every case one line --------------------------------


def proxy_with(tmp, **proxy):
    """The smoke config with a small proxy over the given data (64 images to train, 16 held out)."""
    return smoke_with(tmp, {"proxy": {"train_subset": 64, "heldout": 16, "batch_size": 16, "image_size": 16,
                                      **proxy}})


def png_folder(tmp, corrupt=False, empty_class=False):
    from tiny_datasets import write_png_folder

    root = write_png_folder(tmp / "images", classes=2, per_class=50, side=8)
    if empty_class:
        os.makedirs(os.path.join(root, "c2"))
    if corrupt:
        write(os.path.join(root, "c1", "img00060.png"), "<html>not found</html>")
    return root


def imagenet_shards(tmp, truncate=False, label_beyond=False):
    from tiny_datasets import write_imagenet_shards

    root = write_imagenet_shards(tmp / "imagenet", train=100, shards=2, classes=5 if label_beyond else 4, side=8)
    if truncate:
        shard = os.path.join(root, "train-00001-of-00002")
        os.truncate(shard, os.path.getsize(shard) - 100)
    return root


def sorted_npz(tmp, classes=4):
    from tiny_datasets import write_npz

    return write_npz(tmp / "arrays.npz", 100, classes)


PROXY_DATA_CASES = [
    ("proxy-folder-missing", lambda t: ["search", "--config", proxy_with(t, dataset="folder", data_dir=str(
        t / "my-images")), "--out", str(t / "r")], "data folder {t}/my-images does not exist"),
    ("proxy-folder-empty-class", lambda t: ["search", "--config", proxy_with(t, dataset="folder", data_dir=png_folder(
        t, empty_class=True)), "--out", str(t / "r")], "images/c2: class folder has no .jpg/.jpeg/.png images"),
    ("proxy-folder-corrupt-image", lambda t: ["search", "--config", proxy_with(
        t, dataset="folder", data_dir=png_folder(t, corrupt=True), train_subset=80, heldout=10), "--out",
        str(t / "r")], "img00060.png: not a JPEG or PNG image"),
    ("proxy-imagenet-truncated-shard", lambda t: ["search", "--config", proxy_with(
        t, dataset="imagenet", num_classes=4, data_dir=imagenet_shards(t, truncate=True)), "--out", str(t / "r")],
     "train-00001-of-00002: not a complete TFRecord file"),
    ("proxy-imagenet-label-beyond-classes", lambda t: ["search", "--config", proxy_with(
        t, dataset="imagenet", num_classes=4, data_dir=imagenet_shards(t, label_beyond=True)), "--out",
        str(t / "r")], "held-out label 4 does not fit 4 classes"),
    ("proxy-npz-label-beyond-classes", lambda t: ["search", "--config", proxy_with(
        t, dataset="npz", num_classes=3, image_size=8, data_dir=sorted_npz(t)), "--out", str(t / "r")],
     "training label 3 does not fit 3 classes"),
    ("proxy-one-class-held-out", lambda t: ["search", "--config", proxy_with(
        t, dataset="npz", split="file-order", heldout=20, image_size=8, data_dir=sorted_npz(t)), "--out",
        str(t / "r")], "held-out images of npz"),
    ("proxy-npz-missing", lambda t: ["search", "--config", proxy_with(t, dataset="npz", data_dir=str(
        t / "mine.npz")), "--out", str(t / "r")], "mine.npz does not exist"),
    ("proxy-unknown-split", lambda t: ["search", "--config", proxy_with(t, split="shuffled"), "--out",
                                       str(t / "r")], "split must be one of random, file-order, got 'shuffled'"),
]


@pytest.mark.parametrize("case", PROXY_DATA_CASES, ids=[c[0] for c in PROXY_DATA_CASES])
def test_bad_proxy_data_gets_one_line_and_status_2(case, tmp_path, monkeypatch, capsys):
    name, argv, needle = case
    test_bad_input_gets_one_line_and_status_2((name, argv, needle.format(t=tmp_path)), tmp_path, monkeypatch,
                                              capsys)
