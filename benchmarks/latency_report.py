"""Shared bits of the latency benchmarks: Spearman, the machine line, and updating BENCHMARKS.md in place."""

from __future__ import annotations

import os
import platform
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_MD = os.path.join(ROOT, "BENCHMARKS.md")


def spearman(a, b) -> float:
    """Spearman rank correlation with average ranks for ties (the phones' whole-millisecond readings tie a lot)."""
    import pandas as pd

    ra = pd.Series(np.asarray(a, float)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, float)).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def mape(pred, true) -> float:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    return float(np.mean(np.abs(pred / true - 1)) * 100)


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({platform.machine()}), {memory:.0f} GiB, no GPU, shared with other running "
            "work")


def update_section(tag: str, text: str) -> None:
    """Replaces the block between `<!-- latency:TAG -->` markers in BENCHMARKS.md (appends it if missing)."""
    begin, end = f"<!-- latency:{tag} -->", f"<!-- /latency:{tag} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    current = open(BENCHMARKS_MD, encoding="utf-8").read() if os.path.exists(BENCHMARKS_MD) else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: block, current)
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    with open(BENCHMARKS_MD + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(current)
    os.replace(BENCHMARKS_MD + ".tmp", BENCHMARKS_MD)
