"""Progress of long loops -- a training epoch, an evaluation, a LiteRT run over the evaluation set: a redrawn bar
on a terminal, an occasional plain line in a log file.

An ImageNet epoch on a CPU lasts hours and its evaluation minutes, so a per-epoch line is not enough; but a log
captured to a file (or a Ray worker's output) must not fill with carriage-return redraws. On a terminal the bar
is redrawn at most 5 times a second; elsewhere a line is printed every `every_seconds` (default 60).
"""

from __future__ import annotations

import sys
import time


class Progress:
    """Reports `step` of `total` with a caller-supplied status text."""

    def __init__(self, total: int, stream=None, every_seconds: float = 60.0, width: int = 30,
                 clock=time.perf_counter):
        self.total = max(1, int(total))
        self.clock = clock
        self.stream = stream or sys.stdout
        self.every = every_seconds
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = ""
        self._started = self._last = 0.0
        self._drawn = False

    def start(self, label: str) -> None:
        self.label = label
        self._started = self._last = self.clock()
        self._drawn = False

    def update(self, step: int, status: str = "") -> None:
        if step >= self.total and not self.tty:
            return  # the epoch's summary line follows at once
        now = self.clock()
        if now - self._last < (0.2 if self.tty else self.every) and step < self.total:
            return
        self._last = now
        elapsed = now - self._started
        eta = elapsed / max(step, 1) * (self.total - step)
        if self.tty:
            done = int(self.width * step / self.total)
            bar = "=" * done + (">" if done < self.width else "") + "." * max(0, self.width - done - 1)
            self.stream.write(f"\r{self.label} [{bar}] {step}/{self.total} {status} eta {eta:.0f}s ")
            self._drawn = True
        else:
            self.stream.write(f"{self.label} step {step}/{self.total} {status} ({elapsed:.0f}s, eta {eta:.0f}s)\n")
        self.stream.flush()

    def finish(self) -> None:
        """Clears the bar so that the epoch's summary line starts on a clean line."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
        self._drawn = False
