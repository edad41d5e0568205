"""Latency measured on an Android phone over adb with the TFLite `benchmark_model` tool.

This is how the MnasNet paper measured (Tan et al., CVPR 2019, Sec. 3: a Pixel 1, TFLite, one thread on a big
core, batch 1). The flow is the TFLite tool's documented one: push the .tflite file, run

    adb shell [taskset MASK] /data/local/tmp/benchmark_model --graph=FILE --num_threads=1 ...

and read the line `Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ..., Inference
(avg): ...` (with `std=` from the tool's last `count=` line). The tool itself must be on the phone already
(build it with bazel or take the prebuilt nightly `android_aarch64_benchmark_model`, then `adb push` it).

Device trouble is reported as `DeviceError` with what to do: no device, an unauthorized device (the USB
debugging prompt was not accepted), several devices without a serial, the tool missing, adb missing.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
import time
from typing import Sequence

from mnas.search.latency.base import LatencyModel, Measurement, Progress, check_resolution
from mnas.search.latency.cache import MeasurementCache, arch_key, default_cache_dir
from mnas.search.arch import Architecture
from mnas.trainer.tflite import QUANTIZATIONS, arch_to_tflite

_TIMINGS = re.compile(r"Inference timings in us:\s*Init:\s*([\d.]+),\s*First inference:\s*([\d.]+),\s*"
                      r"Warmup \(avg\):\s*([\d.eE+-]+),\s*Inference \(avg\):\s*([\d.eE+-]+)")
_COUNT = re.compile(r"count=(\d+)\s+first=([\d.]+)\s+curr=([\d.]+)\s+min=([\d.]+)\s+max=([\d.]+)\s+"
                    r"avg=([\d.eE+-]+)\s+std=([\d.]+)")
_UNSET = object()


class DeviceError(RuntimeError):
    """The phone cannot be used as asked; the message says what to do."""


def parse_benchmark_output(text: str) -> Measurement:
    """Reads `benchmark_model` output: the inference average (ms) and the spread of the timed runs."""
    timings = _TIMINGS.search(text)
    if not timings:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise DeviceError(f"benchmark_model printed no 'Inference timings' line (last output: {tail!r})")
    init_us, first_us, warmup_us, avg_us = (float(v) for v in timings.groups())
    runs = _COUNT.findall(text)
    if runs:  # the last `count=` line belongs to the timed runs
        count, _, _, low, high, mean, std = (float(v) for v in runs[-1])
    else:
        count, low, high, mean, std = 1, avg_us, avg_us, avg_us, 0.0
    return Measurement(ms=avg_us / 1e3, mean_ms=mean / 1e3, std_ms=std / 1e3, min_ms=low / 1e3,
                       max_ms=high / 1e3, runs=int(count), measure_s=(init_us + first_us) / 1e6)


class AdbDevice:
    """One phone reached through `adb`, running `benchmark_model` on TFLite flatbuffers.

    Args:
        serial: the device serial (`adb devices`); None uses the only connected device.
        adb: the adb executable.
        benchmark_binary: path of `benchmark_model` on the phone.
        device_dir: where model files are pushed.
        num_threads: --num_threads (the paper: 1).
        taskset: CPU mask for `taskset` to pin the big cores (e.g. 'f0' on most 4+4 SoCs, 'c' on a Pixel 1's
            Snapdragon 821); None runs unpinned.
        use_gpu, use_nnapi, use_xnnpack: the tool's delegate flags (None leaves the tool's default).
        warmup_runs, num_runs: the tool's --warmup_runs / --num_runs.
        timeout: seconds before an adb call is abandoned.
    """

    def __init__(self, serial: str | None = None, adb: str = "adb",
                 benchmark_binary: str = "/data/local/tmp/benchmark_model", device_dir: str = "/data/local/tmp",
                 num_threads: int = 1, taskset: str | None = None, use_gpu: bool = False, use_nnapi: bool = False,
                 use_xnnpack: bool | None = None, warmup_runs: int = 10, num_runs: int = 50, timeout: float = 600):
        self.serial, self.adb = serial or None, adb
        self.benchmark_binary, self.device_dir = benchmark_binary, device_dir
        self.num_threads, self.taskset = num_threads, taskset
        self.use_gpu, self.use_nnapi, self.use_xnnpack = use_gpu, use_nnapi, use_xnnpack
        self.warmup_runs, self.num_runs, self.timeout = warmup_runs, num_runs, timeout
        self._checked = False

    # -- adb plumbing
    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [self.adb] + (["-s", self.serial] if self.serial and args[0] != "devices" else []) + list(args)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout)
        except FileNotFoundError:
            raise DeviceError(f"adb not found ({self.adb!r}): install the Android platform tools or pass "
                              "adb=PATH") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"adb {' '.join(args[:2])} timed out after {self.timeout:g} s") from None
        if check and done.returncode != 0:
            message = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}")
            if "unauthorized" in message:
                raise DeviceError(f"device {self.serial or ''} is unauthorized: accept the USB debugging prompt "
                                  "on the phone (or run 'adb kill-server' and reconnect)".replace("  ", " "))
            if "no devices" in message or "not found" in message and "device" in message:
                raise DeviceError(f"no device: {message.splitlines()[0]}")
            raise DeviceError(f"adb {' '.join(args[:2])} failed: {message.splitlines()[-1]}")
        return done

    def check(self) -> str:
        """Checks that one authorized device is there and the tool is on it; returns its serial."""
        if self._checked:
            return self.serial
        listing = self._run("devices").stdout.splitlines()
        states = dict(line.split("\t", 1) for line in listing[1:] if "\t" in line)
        if not states:
            raise DeviceError("no device connected: plug in the phone with USB debugging on ('adb devices' "
                              "lists none)")
        if self.serial is None:
            if len(states) > 1:
                raise DeviceError(f"{len(states)} devices connected ({', '.join(states)}): choose one with "
                                  "adb:SERIAL")
            self.serial = next(iter(states))
        state = states.get(self.serial)
        if state is None:
            raise DeviceError(f"device {self.serial!r} is not connected (connected: {', '.join(states)})")
        if state.strip() == "unauthorized":
            raise DeviceError(f"device {self.serial} is unauthorized: accept the USB debugging prompt on the "
                              "phone (or run 'adb kill-server' and reconnect)")
        if state.strip() != "device":
            raise DeviceError(f"device {self.serial} is {state.strip()!r}, not ready")
        probe = self._run("shell", f"ls {shlex.quote(self.benchmark_binary)}", check=False)
        if probe.returncode != 0:
            raise DeviceError(f"benchmark_model not found on {self.serial} at {self.benchmark_binary}: build or "
                              "download the TFLite benchmark tool and 'adb push' it there (then chmod +x)")
        self._checked = True
        return self.serial

    def flags(self, remote: str) -> list[str]:
        flags = [f"--graph={remote}", f"--num_threads={self.num_threads}", f"--warmup_runs={self.warmup_runs}",
                 f"--num_runs={self.num_runs}", f"--use_gpu={str(self.use_gpu).lower()}",
                 f"--use_nnapi={str(self.use_nnapi).lower()}"]
        if self.use_xnnpack is not None:
            flags.append(f"--use_xnnpack={str(self.use_xnnpack).lower()}")
        return flags

    def time_tflite(self, flatbuffer: bytes, label: str = "model") -> Measurement:
        """Pushes a model, runs the benchmark tool on it, removes it, and returns the parsed timings."""
        self.check()
        remote = f"{self.device_dir.rstrip('/')}/mnas_{label}_{os.getpid()}.tflite"
        with tempfile.NamedTemporaryFile(suffix=".tflite") as local:
            local.write(flatbuffer)
            local.flush()
            self._run("push", local.name, remote)
        try:
            command = ([f"taskset {self.taskset}"] if self.taskset else []) + [shlex.quote(self.benchmark_binary)]
            command += [shlex.quote(f) for f in self.flags(remote)]
            done = self._run("shell", " ".join(command), check=False)
            output = done.stdout + "\n" + done.stderr
            if done.returncode != 0 and "Inference timings" not in output:
                if "not found" in output or done.returncode == 127:
                    raise DeviceError(f"benchmark_model not found on {self.serial} at {self.benchmark_binary}")
                raise DeviceError(f"benchmark_model failed on {self.serial}: {output.strip().splitlines()[-1]}")
            return parse_benchmark_output(output)
        finally:
            self._run("shell", f"rm -f {shlex.quote(remote)}", check=False)

    def settings(self) -> dict:
        return {"backend": "adb", "serial": self.serial, "binary": self.benchmark_binary,
                "threads": self.num_threads, "taskset": self.taskset, "gpu": self.use_gpu, "nnapi": self.use_nnapi,
                "xnnpack": self.use_xnnpack, "warmup": self.warmup_runs, "runs": self.num_runs}


class AdbLatency(LatencyModel):
    """LatencyModel over `AdbDevice`: converts on this host, measures on the phone, caches on disk."""

    def __init__(self, serial: str | None = None, quantize: str = "float32", cache_dir=_UNSET,
                 num_classes: int = 1000, progress: bool = False, **device_options):
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {quantize!r} (known: {', '.join(QUANTIZATIONS)})")
        self.device = AdbDevice(serial, **device_options)
        self.quantize, self.num_classes, self.progress = quantize, num_classes, progress
        self.cache = MeasurementCache(default_cache_dir() if cache_dir is _UNSET else cache_dir)
        self.measured = 0
        self.name = f"adb-{serial}" if serial else "adb"

    def measure(self, arch: Architecture, resolution: int | None = None) -> Measurement:
        size = check_resolution(resolution) or arch.resolution
        serial = self.device.check()
        self.name = f"adb-{serial}"
        key = arch_key(arch, size, {**self.device.settings(), "quantize": self.quantize, "classes": self.num_classes})
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        start = time.perf_counter()
        flatbuffer = arch_to_tflite(arch, size, self.quantize, self.num_classes)
        convert_s = time.perf_counter() - start
        result = self.device.time_tflite(flatbuffer, MeasurementCache.digest(key)[:12])
        result = Measurement(**{**result.__dict__, "convert_s": convert_s})
        self.measured += 1
        self.cache.put(key, result)
        return result

    def predict(self, archs: Sequence[Architecture], resolution: int | None = None) -> list[float]:
        progress = Progress(len(archs), "measured on phone", self.progress and len(archs) > 1)
        out = []
        for arch in archs:
            out.append(self.measure(arch, resolution).ms)
            progress.step(f"{out[-1]:.2f} ms")
        return out

    def describe(self) -> dict:
        return {"source": self.name, "kind": "measured on a phone over adb (TFLite benchmark_model)",
                **{k: v for k, v in self.device.settings().items() if k != "backend"}, "quantize": self.quantize}
