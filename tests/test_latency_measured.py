"""Measured latency: this host (one tiny model through TFLite/LiteRT) and a phone over a stand-in `adb`."""

import json
import os
import subprocess
import sys

import pytest

from mnas import cli
from mnas.measure import get_latency_model
from mnas.measure.adb import AdbDevice, DeviceError, parse_benchmark_output
from mnas.search.arch import Architecture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_ADB_DIR = os.path.join(ROOT, "tests", "fake_adb")
TINY = Architecture.from_strings(["r1_k3_s11_e1_i8_o8", "r1_k3_s22_e3_i8_o16_se0.25"], stem_filters=8,
                                 head_filters=32, resolution=32)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("MNAS_LATENCY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_host_measures_once_then_serves_the_cache(isolated):
    model = get_latency_model("host", runs=10, warmup=2, num_classes=10)
    assert model.name == "host-tflite"
    first = model.measure(TINY)
    assert first.ms > 0 and first.runs == 10 and first.convert_s > 0 and first.min_ms <= first.ms <= first.max_ms
    assert first.passes == 5 and first.rounds == 5 and first.pass_spread >= 0
    assert model.measured == 1
    files = os.listdir(isolated / "cache")
    assert len(files) == 1 and files[0].endswith(".json")
    # A fresh model object (another worker) finds it on disk and does not convert again.
    again = get_latency_model("host", runs=10, warmup=2, num_classes=10)
    assert again.predict([TINY]) == [first.ms]
    assert again.measured == 0 and again.cache.hits == 1
    # Different settings are a different key.
    other = get_latency_model("host", runs=11, warmup=2, num_classes=10)
    assert other.cache.get(__import__("mnas.search.latency.cache", fromlist=["x"]).arch_key(
        TINY, 32, other.settings())) is None


# --- the phone path, against tests/fake_adb/adb placed first on PATH

@pytest.fixture
def fake_adb(isolated, monkeypatch):
    monkeypatch.setenv("PATH", FAKE_ADB_DIR + os.pathsep + os.environ["PATH"])
    log = isolated / "adb.log"
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_STATE", "device")
    return log


def test_parse_benchmark_output():
    text = ("count=56 first=18010 curr=17899 min=17522 max=18420 avg=17850.3 std=178\n"
            "Inference timings in us: Init: 5685, First inference: 18535, Warmup (avg): 17906.5, "
            "Inference (avg): 17850.3\n")
    result = parse_benchmark_output(text)
    assert result.ms == pytest.approx(17.8503) and result.std_ms == pytest.approx(0.178) and result.runs == 56
    with pytest.raises(DeviceError, match="no 'Inference timings'"):
        parse_benchmark_output("Segmentation fault")


def test_adb_success_pushes_runs_pinned_and_cleans_up(fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_US", "23200")
    device = AdbDevice(taskset="f0", num_runs=50)
    result = device.time_tflite(b"not really a model", "m")
    assert result.ms == pytest.approx(23.2) and device.serial == "FA6AB0301234"
    calls = fake_adb.read_text().splitlines()
    assert calls[0] == "devices"
    push = next(c for c in calls if " push " in f" {c} ")
    assert push.startswith("-s FA6AB0301234 push ") and push.endswith(".tflite")
    run = next(c for c in calls if "--graph=" in c)
    assert "taskset f0 /data/local/tmp/benchmark_model" in run and "--num_threads=1" in run
    assert "--num_runs=50" in run and "--use_gpu=false" in run
    assert "rm -f" in calls[-1]


def test_adb_model_through_the_interface_and_cache(fake_adb, monkeypatch):
    import mnas.measure.adb as adb_module

    converted = []
    monkeypatch.setattr(adb_module, "arch_to_tflite", lambda *a, **k: converted.append(a) or b"tflite")
    model = get_latency_model("adb:FA6AB0301234")
    assert model.predict([TINY, TINY]) == [pytest.approx(17.8503)] * 2
    assert model.name == "adb-FA6AB0301234" and model.measured == 1 and len(converted) == 1


@pytest.mark.parametrize("state, message", [
    ("none", "no device connected"),
    ("unauthorized", "unauthorized: accept the USB debugging prompt"),
    ("notool", "benchmark_model not found on FA6AB0301234"),
])
def test_adb_failures_are_clear(fake_adb, monkeypatch, state, message):
    monkeypatch.setenv("FAKE_ADB_STATE", state)
    with pytest.raises(DeviceError, match=message):
        AdbDevice().time_tflite(b"x")
    done = subprocess.run([sys.executable, "launch.py", "latency", "mnasnet-small", "--backend", "adb"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1 and message in done.stderr


def test_adb_wrong_serial_and_missing_adb(fake_adb, monkeypatch):
    with pytest.raises(DeviceError, match="'NOPE' is not connected"):
        AdbDevice(serial="NOPE").check()
    with pytest.raises(DeviceError, match="adb not found"):
        AdbDevice(adb=str(fake_adb.parent / "no-adb-here")).check()


def test_cli_host_json(isolated, capsys):
    assert cli.main(["latency", "r1_k3_s11_e1_i8_o8 r1_k3_s22_e3_i8_o16_se0.25", "--backend", "host",
                        "--resolution", "32", "--runs", "5", "--passes", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "host-tflite" and data["latency_ms"] > 0 and data["resolution"] == 32
    assert data["measurement"]["runs"] == 5 and data["measurement"]["convert_s"] > 0
    assert data["measurement"]["passes"] == 2 and data["model"]["passes"] == 2
    assert cli.main(["latency", "mnasnet-a1", "--backend", "adb", "--passes", "2"]) == 2
    assert "--passes is for the host backend" in capsys.readouterr().err


def test_host_batch_is_timed_in_interleaved_passes_and_keeps_each_networks_fastest(isolated, monkeypatch):
    """Three networks, two passes: every network is converted once, then timed A B C A B C (a burst of load
    lasts seconds, so the passes meet different moments), with the caller's work between the passes; each keeps
    its fastest pass, and the cache serves the batch afterwards without converting, timing or that work."""
    import mnas.measure.host as host
    import mnas.measure.timing as timing
    from mnas.search.latency.base import Measurement

    space = __import__("mnas.search.registry", fromlist=["x"]).load_space("mnasnet")
    archs = [space.sample(i).replace(resolution=32) for i in range(3)]
    names = {a.block_strings: name for a, name in zip(archs, "ABC")}
    converted, timed = [], []
    script = {"A": [5.0, 2.0], "B": [3.0, 3.3], "C": [4.0, 4.0]}     # A was disturbed in the first pass

    def convert(arch, resolution, quantize, num_classes):
        converted.append(names[arch.block_strings])
        return converted[-1].encode()

    def time_it(flatbuffer, *args, **kwargs):
        name = flatbuffer.decode()
        timed.append(name)
        ms = script[name][sum(t == name for t in timed) - 1]
        return Measurement(ms, ms, 0.0, ms, ms, 30, measure_s=1.0, rounds=3)

    monkeypatch.setattr(host, "arch_to_tflite", convert)
    monkeypatch.setattr(timing, "time_tflite", time_it)
    model = host.HostTFLite(passes=2, num_classes=10)
    result = model.measure_many(archs + archs[:1], between=lambda done: timed.append(f"after pass {done}"))
    # a repeated network is measured once; the work between passes comes after the first and not after the last
    assert converted == ["A", "B", "C"] and timed == ["A", "B", "C", "after pass 1", "A", "B", "C"]
    assert [r.ms for r in result] == [2.0, 3.0, 4.0, 2.0]
    assert result[0].passes == 2 and result[0].rounds == 6 and result[0].measure_s == 2.0
    assert result[0].pass_spread == pytest.approx(1.5) and result[2].pass_spread == 0.0
    assert model.measured == 3
    again = host.HostTFLite(passes=2, num_classes=10)
    cached = again.measure_many(archs, between=lambda done: timed.append("again"))
    assert [r.ms for r in cached] == [2.0, 3.0, 4.0] and len(timed) == 7 and again.measured == 0
    with pytest.raises(ValueError, match="passes"):
        host.HostTFLite(passes=0)


class ScriptedClock:
    """Stands in for the `time` module of mnas.measure.timing: a clock that only the scripted invokes move, so the
    timings are exactly the script's however loaded the machine is (a busy-wait of 2 ms got preempted under load)."""

    now = 0.0

    @classmethod
    def perf_counter(cls) -> float:
        return cls.now

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


class ScriptedInterpreter:
    """Stands in for LiteRT's Interpreter: each invoke() takes the next duration of a script (seconds), on
    ScriptedClock."""

    script: list = []

    def __init__(self, model_content=None, num_threads=1):
        self.durations = iter(type(self).script)

    def allocate_tensors(self):
        pass

    def get_input_details(self):
        import numpy as np

        return [{"index": 0, "shape": (1, 4), "dtype": np.float32}]

    def set_tensor(self, index, value):
        pass

    def invoke(self):
        ScriptedClock.now += next(self.durations, 0.001)


def test_timing_takes_the_fastest_of_agreeing_rounds(monkeypatch):
    import ai_edge_litert.interpreter as litert

    from mnas.measure.timing import time_tflite

    from mnas.measure import timing

    monkeypatch.setattr(litert, "Interpreter", ScriptedInterpreter)
    monkeypatch.setattr(timing, "time", ScriptedClock)
    # warm-up 1 call, then rounds of 5: the first round is disturbed (another process took the core), the
    # second and third agree; the latency is theirs, not the median of all calls and not the disturbed round's
    ScriptedInterpreter.script = [0.001] + [0.006] * 5 + [0.002] * 10
    result = time_tflite(b"", warmup=1, runs=5, rounds=3, pause_s=0)
    assert result.rounds == 3 and result.runs == 5
    assert 1.9 < result.ms < 2.6 and result.round_spread < 0.03
    # Rounds that keep disagreeing go on until two agree (here the fourth), at most max_rounds
    ScriptedInterpreter.script = [0.001] + [0.004] * 5 + [0.002] * 5 + [0.003] * 5 + [0.002] * 5
    result = time_tflite(b"", warmup=1, runs=5, rounds=3, max_rounds=6, pause_s=0)
    assert result.rounds == 4 and 1.9 < result.ms < 2.6
    ScriptedInterpreter.script = [0.001] + [0.002, 0.002, 0.002, 0.002, 0.002] + [0.004] * 100
    result = time_tflite(b"", warmup=1, runs=5, rounds=2, max_rounds=3, pause_s=0)
    assert result.rounds == 3 and result.round_spread > 0.5    # gave up: the spread says how far to trust it
    with pytest.raises(ValueError):
        time_tflite(b"", rounds=4, max_rounds=3)


def test_layers_for_a_table_are_converted_then_timed_in_passes(isolated):
    """The host's layer measurer, for real on two tiny layers: each converted once and timed in two passes;
    through `build_lut` it fills the table with both."""
    from mnas.measure.layers import host_layer_measurer
    from mnas.search.latency.lut import build_lut, layer_keys

    keys = layer_keys([TINY], num_classes=10)[:2]
    measure = host_layer_measurer(runs=5, warmup=1, passes=2)
    ms = measure(keys)
    assert len(ms) == 2 and all(0 < m < 50 for m in ms)
    table = build_lut([TINY], measure, num_classes=10)
    assert set(table.layers) == set(layer_keys([TINY], num_classes=10)) and all(v > 0 for v in table.layers.values())
