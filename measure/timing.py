"""Timing TFLite models with LiteRT on this host: rounds, passes, and the fastest least-disturbed reading.

Shared by the host backend (`measure.host`) and the host layer tables (`measure.layers`).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from typing import Callable, Mapping

from mnas.search.latency.base import Measurement, Progress
from mnas.trainer.tflite import quiet

def time_tflite(flatbuffer: bytes, num_threads: int = 1, warmup: int = 5, runs: int = 30,
                min_seconds: float = 0.0, rounds: int = 3, max_rounds: int = 8, agree: float = 0.03,
                pause_s: float = 0.1) -> Measurement:
    """Times `invoke()` of a TFLite model in LiteRT: warm-up, then rounds of `runs` timed calls each.

    Each round's median is one reading; the latency is the lowest reading. Another process taking the core only
    ever slows a round down, so the fastest round is the least disturbed one (a single median on this shared
    machine once read 11.6 ms for a network that times 5.9 ms in a quiet moment). Rounds continue past
    `rounds`, up to `max_rounds`, until the two lowest readings agree within `agree` (relative), so that one
    lucky or unlucky round cannot decide alone; `round_spread` records how far apart they were. Inputs are
    random: latency of these networks does not depend on the values.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    if rounds < 1 or max_rounds < rounds or runs < 1:
        raise ValueError("need runs >= 1 and 1 <= rounds <= max_rounds")
    start = time.perf_counter()
    with quiet():                  # LiteRT announces its XNNPACK delegate on stderr, once a model
        interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
        interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            value = rng.random(detail["shape"]).astype(dtype)
        else:
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, size=detail["shape"], endpoint=True).astype(dtype)
        interpreter.set_tensor(detail["index"], value)
    for _ in range(warmup):
        interpreter.invoke()
    readings: list[list[float]] = []
    while True:
        times: list[float] = []
        began = time.perf_counter()
        while len(times) < runs or time.perf_counter() - began < min_seconds:
            tick = time.perf_counter()
            interpreter.invoke()
            times.append((time.perf_counter() - tick) * 1e3)
        readings.append(times)
        medians = sorted(statistics.median(r) for r in readings)
        settled = len(medians) >= 2 and medians[1] <= medians[0] * (1 + agree)
        if len(readings) >= max_rounds or (len(readings) >= rounds and (settled or rounds == 1)):
            break
        time.sleep(pause_s)
    best = min(readings, key=statistics.median)
    return Measurement(ms=statistics.median(best), mean_ms=statistics.fmean(best), std_ms=statistics.pstdev(best),
                       min_ms=min(best), max_ms=max(best), runs=len(best), measure_s=time.perf_counter() - start,
                       rounds=len(readings),
                       round_spread=(medians[1] / medians[0] - 1) if len(medians) > 1 else 0.0)


def fastest_pass(passes: list[Measurement]) -> Measurement:
    """One measurement from separate timings of the same model: the fastest pass, with every pass's rounds and
    timing counted and `pass_spread` saying how far the slowest pass was from it."""
    if not passes:
        raise ValueError("no passes to combine")
    best = min(passes, key=lambda m: m.ms)
    return dataclasses.replace(best, passes=len(passes), rounds=sum(m.rounds for m in passes),
                               measure_s=sum(m.measure_s for m in passes),
                               pass_spread=max(m.ms for m in passes) / best.ms - 1)


def measure_in_passes(models: Mapping[str, Callable[[], bytes]], passes: int, what: str = "model",
                      progress: bool = False, between: Callable[[int], None] | None = None,
                      **timing) -> dict[str, Measurement]:
    """Converts each model (name -> a callable returning its flatbuffer) into a scratch folder, one after
    another, then times them all in `passes` passes; each keeps its fastest pass, with its conversion time.

    On a machine shared with other tenants, their load comes and goes over seconds, and a network slows by up
    to a quarter while it lasts (BENCHMARKS.md): rounds taken back to back (`time_tflite`) all fall in the same
    moment, passes over a batch fall in different ones, and the fastest is the least disturbed. A load that lasts
    minutes can cover every pass of a small batch: `between(done)` is called after each pass but the last, with
    the number of passes done, to do other work there and spread the passes over longer (the host benchmark
    measures its table's layers between the networks' passes). `timing` goes to `time_tflite`; `progress`
    prints a line a conversion and a timing, naming them `what`."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    converting = Progress(len(models), f"converted {what}", progress)
    timing_steps = Progress(len(models) * passes, f"timed {what}", progress)
    convert_s: dict[str, float] = {}
    readings: dict[str, list[Measurement]] = {name: [] for name in models}
    with tempfile.TemporaryDirectory(prefix="mnas-tflite-") as scratch:
        paths = {name: os.path.join(scratch, f"{i}.tflite") for i, name in enumerate(models)}
        for name, convert in models.items():
            start = time.perf_counter()
            flatbuffer = convert()
            with open(paths[name], "wb") as handle:
                handle.write(flatbuffer)
            convert_s[name] = time.perf_counter() - start
            converting.step(f"{name}, {convert_s[name]:.1f} s")
        for number in range(1, passes + 1):
            for name, path in paths.items():
                with open(path, "rb") as handle:
                    readings[name].append(time_tflite(handle.read(), **timing))
                timing_steps.step(f"{readings[name][-1].ms:.3f} ms (pass {number} of {passes})")
            if between is not None and number < passes:
                between(number)
    return {name: dataclasses.replace(fastest_pass(found), convert_s=convert_s[name])
            for name, found in readings.items()}
