"""Shared bits of the latency benchmarks: Spearman, MAPE, and their blocks of BENCHMARKS.md."""

from __future__ import annotations

import numpy as np

from benchmarks.common import machine, today, update_block  # noqa: F401 -- re-exported for the scripts


def spearman(a, b) -> float:
    """Spearman rank correlation with average ranks for ties (the phones' whole-millisecond readings tie a lot)."""
    import pandas as pd

    ra = pd.Series(np.asarray(a, float)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, float)).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def mape(pred, true) -> float:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    return float(np.mean(np.abs(pred / true - 1)) * 100)


def update_section(tag: str, text: str) -> None:
    """Replaces the block between `<!-- latency:TAG -->` markers in BENCHMARKS.md (appends it if missing)."""
    update_block(f"latency:{tag}", text)
