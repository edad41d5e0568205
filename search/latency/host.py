"""Latency measured on this host: Keras -> TFLite -> LiteRT, one thread, batch 1.

The MnasNet paper measured on a Pixel 1 with TFLite on one big core. This host is not a phone, but the same
pipeline (same converter, same kernels, one thread) ranks architectures the way a CPU does, needs no device,
and is the ground truth that the lookup table and the predictor are checked against in BENCHMARKS.md.
"""

from __future__ import annotations

import platform
import time
from typing import Sequence

from search.latency.base import LatencyModel, Measurement, Progress, check_resolution
from search.latency.cache import MeasurementCache, arch_key, default_cache_dir
from search.latency.tflite import QUANTIZATIONS, arch_to_tflite, time_tflite
from search.space import Architecture

_UNSET = object()


def cpu_model() -> str:
    """The CPU's model name ('AMD EPYC ...', 'Intel(R) Xeon(R) ...'): timings from different CPUs are different
    measurements (`platform.processor()` is empty on most Linux systems)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class HostTFLite(LatencyModel):
    """Measures each architecture once (conversion + timed runs) and caches the result on disk.

    Args:
        num_threads: LiteRT threads (the paper: 1).
        quantize: 'float32' or 'int8'.
        warmup, runs, min_seconds: invocations before timing, timed invocations a round, and a floor on a round's
            timed wall time.
        rounds: rounds of timed invocations at least (see `search.latency.tflite.time_tflite`: the latency is
            the fastest round's median, taken once two rounds agree within 3%).
        cache_dir: where measurements persist; default `default_cache_dir()`; None disables the cache.
        num_classes: classifier width of the built model.
        progress: print a line a measurement on stderr.
    """

    def __init__(self, num_threads: int = 1, quantize: str = "float32", warmup: int = 5, runs: int = 30,
                 min_seconds: float = 0.0, cache_dir=_UNSET, num_classes: int = 1000, progress: bool = False,
                 rounds: int = 3):
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {quantize!r} (known: {', '.join(QUANTIZATIONS)})")
        if num_threads < 1 or runs < 1 or warmup < 0 or rounds < 1:
            raise ValueError("num_threads, runs and rounds must be >= 1 and warmup >= 0")
        self.num_threads, self.quantize = num_threads, quantize
        self.warmup, self.runs, self.min_seconds, self.rounds = warmup, runs, min_seconds, rounds
        self.num_classes = num_classes
        self.progress = progress
        self.cache = MeasurementCache(default_cache_dir() if cache_dir is _UNSET else cache_dir)
        self.measured = 0  # measurements actually taken (not served from the cache)
        self.name = "host-tflite" if quantize == "float32" else f"host-tflite-{quantize}"

    def settings(self) -> dict:
        import importlib.metadata as md

        versions = {}
        for package in ("tensorflow", "ai-edge-litert"):
            try:
                versions[package] = md.version(package)
            except md.PackageNotFoundError:
                versions[package] = None
        return {"backend": "host", "machine": platform.machine(), "processor": platform.processor(), "cpu": cpu_model(),
                "threads": self.num_threads, "quantize": self.quantize, "warmup": self.warmup, "runs": self.runs,
                "min_seconds": self.min_seconds, "rounds": self.rounds, "classes": self.num_classes,
                "versions": versions}

    def measure(self, arch: Architecture, resolution: int | None = None) -> Measurement:
        """The full measurement of one architecture (from the cache when it has been measured before)."""
        size = check_resolution(resolution) or arch.resolution
        key = arch_key(arch, size, self.settings())
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        start = time.perf_counter()
        flatbuffer = arch_to_tflite(arch, size, self.quantize, self.num_classes)
        convert_s = time.perf_counter() - start
        result = time_tflite(flatbuffer, self.num_threads, self.warmup, self.runs, self.min_seconds,
                             rounds=self.rounds, max_rounds=max(8, self.rounds))
        result = Measurement(**{**result.__dict__, "convert_s": convert_s})
        self.measured += 1
        self.cache.put(key, result)
        return result

    def predict(self, archs: Sequence[Architecture], resolution: int | None = None) -> list[float]:
        check_resolution(resolution)
        progress = Progress(len(archs), "measured", self.progress and len(archs) > 1)
        out = []
        for arch in archs:
            result = self.measure(arch, resolution)
            out.append(result.ms)
            progress.step(f"{result.ms:.2f} ms")
        return out

    def describe(self) -> dict:
        return {"source": self.name, "kind": "measured on this host (TFLite via LiteRT)",
                "threads": self.num_threads, "quantize": self.quantize, "runs": self.runs,
                "cache_dir": self.cache.directory}
