"""An on-disk cache of measurements, so that nothing is measured twice.

Converting a network costs seconds (about 10 s for a 224x224 MnasNet on this project's 2-core machine, see
BENCHMARKS.md), so every measured backend looks here first. One small JSON file per key: concurrent workers
can share a cache directory without a lock, because each entry is written to a temporary file and renamed
into place (readers see the whole entry or none).

The key hashes everything that changes the number: block strings, stem, head, stem stride, resolution, depth
multiplier, classes, and the backend's settings (device, threads, quantization, runs, tool versions).
"""

from __future__ import annotations

import hashlib
import json
import os

from mnas.search.latency.base import Measurement
from mnas.search.fileio import write_json_atomic
from mnas.search.arch import Architecture

ENV = "MNAS_LATENCY_CACHE"


def default_cache_dir() -> str:
    """$MNAS_LATENCY_CACHE, else $XDG_CACHE_HOME/mnas/latency, else ~/.cache/mnas/latency."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mnas", "latency")


def arch_key(arch: Architecture, resolution: int, settings: dict) -> dict:
    return {"blocks": list(arch.block_strings), "stem": arch.stem_filters, "head": arch.head_filters,
            "stem_stride": arch.stem_stride, "resolution": resolution, "depth_multiplier": arch.depth_multiplier,
            "backend": settings}


class MeasurementCache:
    """Measurements by key; `directory=None` disables caching (every call measures)."""

    def __init__(self, directory: str | None):
        self.directory = directory
        self.hits = 0

    @staticmethod
    def digest(key: dict) -> str:
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]

    def _path(self, key: dict) -> str:
        return os.path.join(self.directory, f"{self.digest(key)}.json")

    def get(self, key: dict) -> Measurement | None:
        if self.directory is None:
            return None
        try:
            with open(self._path(key), encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        if data.get("key") != key:  # a hash collision or a stale format: measure again
            return None
        self.hits += 1
        return Measurement.from_dict(data["measurement"])

    def put(self, key: dict, measurement: Measurement) -> None:
        if self.directory is not None:
            write_json_atomic(self._path(key), {"key": key, "measurement": measurement.to_dict()}, indent=1)
