"""The one interface every latency source implements: architectures (and an input size) in, milliseconds out.

The reward of the MnasNet search (Tan et al., CVPR 2019, Eq. 2) needs LAT(m) for every sampled child. Whether
that number comes from a phone, this host, a lookup table or a calibrated predictor, the search sees the same
two calls and records `name` beside the result, so a latency is never quoted without its source.
"""

from __future__ import annotations

import abc
import dataclasses
import sys
from typing import Sequence

from mnas.search.arch import Architecture


class LatencyModel(abc.ABC):
    """A source of latency in milliseconds (batch 1, the backend's threads)."""

    #: Recorded with every result, e.g. 'pixel1-predicted', 'host-tflite', 'lut-host', 'adb-<serial>'.
    name: str = "latency"

    @abc.abstractmethod
    def predict(self, archs: Sequence[Architecture], resolution: int | None = None) -> list[float]:
        """Latency of each architecture in ms, at `resolution` (default: each architecture's own)."""

    def latency_ms(self, arch: Architecture, resolution: int | None = None) -> float:
        """Latency of one architecture in ms."""
        return self.predict([arch], resolution)[0]

    def describe(self) -> dict:
        """Settings worth printing beside a figure (the CLI's --json adds them)."""
        return {"source": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One timed measurement of a model: `ms` is the latency, the rest says how far to trust it (the statistics
    are those of the round `ms` comes from)."""

    ms: float             # median of the timed invocations
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    runs: int
    convert_s: float = 0.0   # Keras -> TFLite conversion time (0 when served from the cache)
    measure_s: float = 0.0   # wall time of warm-up plus timed runs
    rounds: int = 1          # rounds of `runs` invocations taken; `ms` is the median of the fastest round
    round_spread: float = 0.0  # relative gap between the two fastest rounds' medians (0 with one round)
    passes: int = 1          # separate timings (`measure.host`), spread over a batch; `ms` is the fastest's
    pass_spread: float = 0.0   # relative gap between the slowest and the fastest pass (0 with one pass)

    @property
    def cv(self) -> float:
        """Coefficient of variation of the timed runs (std / mean)."""
        return self.std_ms / self.mean_ms if self.mean_ms > 0 else 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"cv": self.cv}

    @classmethod
    def from_dict(cls, data: dict) -> "Measurement":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def check_resolution(resolution: int | None) -> int | None:
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                   or resolution < 1):
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    return resolution


class Progress:
    """'measured 3/20 ...' lines on stderr for work that takes minutes; silent when disabled."""

    def __init__(self, total: int, what: str, enabled: bool = True, stream=None):
        self.total, self.what, self.enabled = total, what, enabled
        self.stream = stream or sys.stderr
        self.done = 0

    def step(self, detail: str = "") -> None:
        self.done += 1
        if self.enabled:
            print(f"{self.what} {self.done}/{self.total}{': ' + detail if detail else ''}", file=self.stream,
                  flush=True)
