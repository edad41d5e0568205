"""What the benchmark scripts share: the machine line, today's date, and updating BENCHMARKS.md in place.

Each script owns one block of BENCHMARKS.md between `<!-- TAG -->` and `<!-- /TAG -->` markers and replaces only
that block (appending it the first time), so scripts can be re-run in any order without touching each other's
figures. The file is rewritten atomically.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:                      # benchmarks run as scripts from any folder
    sys.path.insert(0, ROOT)

from mnas.search.fileio import atomic_write  # noqa: E402

BENCHMARKS_MD = os.path.join(ROOT, "BENCHMARKS.md")


def machine(shared: bool = True) -> str:
    """'2 cores (x86_64, AMD EPYC), 24 GiB, no GPU' plus the core pinning, if any, and how busy the machine was.

    `shared=True` reports the 1-minute load average at the time of the call (a benchmark calls it when it reports,
    after its own work: a load near the benchmark's own worker count means nothing else ran); `shared=False` says
    that nothing else was running, for benchmarks whose author made sure of it."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    from mnas.measure.host import cpu_model   # no TensorFlow: host.py imports it only to measure

    line = f"{os.cpu_count()} cores ({platform.machine()}, {cpu_model()}), {memory:.0f} GiB, no GPU"
    pinned = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if pinned < (os.cpu_count() or pinned):
        line += f", run pinned to {pinned} core{'s' if pinned > 1 else ''}"
    if not shared:
        return line + ", nothing else running"
    return line + f", load average {os.getloadavg()[0]:.1f} at the end"


def today() -> str:
    return dt.date.today().isoformat()


def report(text: str, tag: str, write: bool) -> None:
    """Prints a benchmark's section and, with `write` (its --write), puts it between its markers in BENCHMARKS.md."""
    print(text)
    if write:
        update_block(tag, text)


def update_block(tag: str, text: str, path: str = BENCHMARKS_MD) -> None:
    """Replaces the block between `<!-- tag -->` and `<!-- /tag -->` in `path` (appends it when missing)."""
    begin, end = f"<!-- {tag} -->", f"<!-- /{tag} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    current = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: block, current)
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    atomic_write(path, current.encode("utf-8"))


def timed_fit(model, batches, steps: int, warmup: int, batch_size: int) -> float:
    """Training images per second of a compiled Keras `model.fit` over `warmup + steps` batches, timed by a
    callback from the end of the warm-up (tracing included in it) to the end of the last step."""
    import keras

    marks = {}

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == warmup - 1:
                marks["start"] = time.perf_counter()
            marks["end"] = time.perf_counter()

    model.fit(batches, epochs=1, steps_per_epoch=warmup + steps, verbose=0, shuffle=False, callbacks=[Timer()])
    return steps * batch_size / (marks["end"] - marks["start"])


def jsonable(value):
    """numpy scalars and arrays (and tuples) as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return value


def shown(path: str) -> str:
    """A path as a report names it: relative to the repository when inside it, else as given (absolute)."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path
