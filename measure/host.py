"""Latency measured on this host: Keras -> TFLite -> LiteRT, one thread, batch 1.

The MnasNet paper measured on a Pixel 1 with TFLite on one big core. This host is not a phone, but the same
pipeline (same converter, same kernels, one thread) ranks architectures the way a CPU does, needs no device,
and is the ground truth that the lookup table and the predictor are checked against in BENCHMARKS.md.
"""

from __future__ import annotations

import functools
import platform
import time
from typing import Callable, Sequence

from mnas.search.latency.base import LatencyModel, Measurement, Progress, check_resolution
from mnas.search.latency.cache import MeasurementCache, arch_key, default_cache_dir
from mnas.measure.timing import measure_in_passes
from mnas.search.arch import Architecture
from mnas.trainer.tflite import QUANTIZATIONS, arch_to_tflite

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
    """Measures each architecture once (conversion + timed passes) and caches the result on disk.

    A batch (`predict`, `measure_many`) is converted first, then timed in `passes` passes over all of it, and
    each network keeps its fastest pass (`measure.timing.measure_in_passes`). This machine is shared with
    other tenants whose load comes and goes over seconds; timed back to back, every round of a network falls in
    the same moment, while passes over a batch fall in different ones (BENCHMARKS.md: a network's passes
    differed by 9-24% at the median in four runs). A load can also last minutes: `measure_many(between=...)`
    runs other work between the passes to spread them further.

    Args:
        num_threads: LiteRT threads (the paper: 1).
        quantize: 'float32' or 'int8'.
        warmup, runs, min_seconds: invocations before timing, timed invocations a round, and a floor on a round's
            timed wall time.
        rounds: rounds of timed invocations a pass at least (`measure.timing.time_tflite`: more than one
            goes on until two agree within 3%; default 1, passes do that work better).
        passes: timings of each network, interleaved over a batch; the fastest counts (default 5).
        cache_dir: where measurements persist; default `default_cache_dir()`; None disables the cache.
        num_classes: classifier width of the built model.
        progress: print a line a conversion and a timing on stderr.
    """

    def __init__(self, num_threads: int = 1, quantize: str = "float32", warmup: int = 5, runs: int = 30,
                 min_seconds: float = 0.0, cache_dir=_UNSET, num_classes: int = 1000, progress: bool = False,
                 rounds: int = 1, passes: int = 5):
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {quantize!r} (known: {', '.join(QUANTIZATIONS)})")
        if num_threads < 1 or runs < 1 or warmup < 0 or rounds < 1 or passes < 1:
            raise ValueError("num_threads, runs, rounds and passes must be >= 1 and warmup >= 0")
        self.num_threads, self.quantize = num_threads, quantize
        self.warmup, self.runs, self.min_seconds, self.rounds, self.passes = warmup, runs, min_seconds, rounds, passes
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
                "min_seconds": self.min_seconds, "rounds": self.rounds, "passes": self.passes,
                "classes": self.num_classes,
                "versions": versions}

    def measure(self, arch: Architecture, resolution: int | None = None) -> Measurement:
        """The full measurement of one architecture (from the cache when it has been measured before)."""
        return self.measure_many([arch], resolution)[0]

    def measure_many(self, archs: Sequence[Architecture], resolution: int | None = None,
                     between: Callable[[int], None] | None = None) -> list[Measurement]:
        """The measurement of each architecture: the cached ones as they are; the others converted one after
        another into a scratch folder, then timed in `passes` passes over all of them, each keeping its fastest
        pass, and cached. `between(done)` runs after each pass but the last (`measure_in_passes`); it is not
        called when everything is cached."""
        check_resolution(resolution)
        settings = self.settings()
        keys = [arch_key(a, resolution or a.resolution, settings) for a in archs]
        digests = [MeasurementCache.digest(k) for k in keys]
        found = {d: self.cache.get(k) for d, k in zip(digests, keys)}
        todo = {d: (k, a) for d, k, a in zip(digests, keys, archs) if found[d] is None}
        if todo:
            # Progress in words that count what they say: conversions by network, timings by pass ("timed 1
            # network, pass 2/5"), not one counter of network x pass timings that reads as five networks.
            show = self.progress and (len(todo) > 1 or self.passes > 1)
            networks = f"{len(todo)} network{'s' if len(todo) > 1 else ''}"
            converting = Progress(len(todo), "converted network", show)
            timing = Progress(self.passes, f"timed {networks}, pass", show)

            def converted(convert):
                def run():
                    start = time.perf_counter()
                    flatbuffer = convert()
                    converting.step(f"{time.perf_counter() - start:.1f} s")
                    return flatbuffer
                return run

            def after_pass(done: int) -> None:
                timing.step()
                if between is not None:
                    between(done)

            timed = measure_in_passes(
                {d: converted(functools.partial(arch_to_tflite, a, resolution or a.resolution, self.quantize,
                                                self.num_classes))
                 for d, (_, a) in todo.items()},
                self.passes, "network", False,
                num_threads=self.num_threads, warmup=self.warmup, runs=self.runs, min_seconds=self.min_seconds,
                rounds=self.rounds, max_rounds=max(8, self.rounds), between=after_pass)
            timing.step(f"fastest {min(m.ms for m in timed.values()):.3f} ms" if len(todo) == 1 else "")
            for digest, (key, _) in todo.items():
                found[digest] = timed[digest]
                self.measured += 1
                self.cache.put(key, timed[digest])
        return [found[d] for d in digests]

    def predict(self, archs: Sequence[Architecture], resolution: int | None = None) -> list[float]:
        return [m.ms for m in self.measure_many(archs, resolution)]

    def describe(self) -> dict:
        return {"source": self.name, "kind": "measured on this host (TFLite via LiteRT)",
                "threads": self.num_threads, "quantize": self.quantize, "runs": self.runs, "passes": self.passes,
                "cache_dir": self.cache.directory}
