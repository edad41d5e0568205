"""Bad input across the command line, configs, block strings, search spaces, datasets and latency files.

Every case must end with exit status 2, one error line naming what was wrong (argparse may print its usage
line before it), no traceback, and nothing left behind in the working folder but the inputs the case wrote.
The cases run in-process through `launch.main` (fast); the search cases stop before Ray starts.
"""

import gzip
import os
import struct

import pytest

import launch
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
    # search: config files and options (all stop before Ray)
    ("config-missing", lambda t: ["search", "--config", str(t / "nope.yaml"), "--out", str(t / "r")], "not found"),
    ("config-yaml-error", lambda t: ["search", "--config", write(t / "c.yaml", "samples: [1,\n"),
                                     "--out", str(t / "r")], "not valid YAML"),
    ("config-unknown-key", lambda t: ["search", "--config", smoke_with(t, {"colour": 1}), "--out", str(t / "r")],
     "unknown setting(s) colour"),
    ("config-unknown-proxy-key", lambda t: ["search", "--config", smoke_with(t, {"proxy": {"epochz": 1}}),
                                            "--out", str(t / "r")], "epochz"),
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
    # results, dashboard, report
    ("results-missing-dir", lambda t: ["results", str(t / "nowhere")], "nowhere"),
    ("results-not-a-run", lambda t: ["results", str(t)], "is it a run directory"),
    ("results-not-sqlite", lambda t: ["results", os.path.dirname(write(t / "results.sqlite", "garbage" * 100))],
     "results.sqlite"),
    ("report-not-html", lambda t: ["report", str(t / "x"), "--out", str(t / "r.txt")], "error"),
    ("dashboard-bad-port", lambda t: ["dashboard", str(t / "x"), "--port", "70000"], "error"),
    # latency files
    ("latency-unknown-backend-cli", lambda t: ["latency", "mnasnet-a1", "--backend", "abacus"], "abacus"),
    ("latency-lut-corrupt", lambda t: ["latency", "mnasnet-a1", "--backend",
                                       "lut:" + write(t / "lut.json", "{not json")], "lut.json"),
    ("latency-calibrate-bad-csv", lambda t: ["latency", "calibrate", write(t / "m.csv", "a,b\n1,2\n"),
                                             "--output", str(t / "out.json")], "m.csv"),
    # search: the early-stopping scheduler (config section and option)
    ("scheduler-unknown-name", lambda t: ["search", "--config", smoke_with(t, {"scheduler": {"name": "hyperband"}}),
                                          "--out", str(t / "r")], "scheduler: name must be one of none, asha"),
    ("scheduler-asha-one-rung", lambda t: ["search", "--config", smoke_with(t, {"scheduler": {"rungs": 1}}),
                                           "--scheduler", "asha", "--out", str(t / "r")],
     "scheduler.rungs must be at least 2"),
    ("scheduler-option-unknown", lambda t: ["search", "--config", SMOKE, "--scheduler", "median",
                                            "--out", str(t / "r")], "invalid choice: 'median'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_and_status_2(case, tmp_path, monkeypatch, capsys):
    name, argv, needle = case
    monkeypatch.chdir(tmp_path)
    args = argv(tmp_path)
    inputs = set(os.listdir(tmp_path))
    try:
        status = launch.main(args)
    except SystemExit as exit_:          # argparse's own errors
        status = exit_.code
    captured = capsys.readouterr()
    assert status == 2, (name, captured.err)
    assert "Traceback" not in captured.err
    error_lines = [line for line in captured.err.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1, (name, captured.err)
    assert needle in error_lines[0], (name, captured.err)
    assert set(os.listdir(tmp_path)) == inputs, f"{name} left {set(os.listdir(tmp_path)) - inputs}"
    record_reliability("bad_input", case=name, status=status, error_lines=len(error_lines),
                       left_behind=len(set(os.listdir(tmp_path)) - inputs))


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30
