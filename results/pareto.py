"""The accuracy-latency Pareto frontier of a search, and its 2-D hypervolume.

MnasNet's search is multi-objective at heart: the reward ``ACC * (LAT / T) ** w`` folds two objectives into one
number, and the paper reports the resulting models as points on an accuracy-latency frontier (Figures 1 and 7).
These functions find that frontier among evaluated children and measure it (hypervolume), which is how two search
strategies -- or two reward settings -- are compared fairly, independently of any one target latency T.

Higher accuracy is better, lower latency is better. A point is on the frontier when no other point is at least as
good on both and strictly better on one. Ties: two children with exactly the same (accuracy, latency) do not dominate
each other, so both stay on the frontier -- neither is arbitrarily dropped, and the result does not depend on the
input order (only its row order does: ties keep input order).

Pure Python; pandas is needed only by pareto_front(), which takes a DataFrame. No TensorFlow, no Ray.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Sequence

Point = Sequence[float]  # (accuracy, latency)


def _pairs(points: Iterable[Point]) -> list[tuple[float, float]]:
    pairs = []
    for i, point in enumerate(points):
        try:
            accuracy, latency = point
        except (TypeError, ValueError):
            raise ValueError(f"point {i} must be an (accuracy, latency) pair, got {point!r}") from None
        for value in (accuracy, latency):
            if value is not None and not (isinstance(value, numbers.Real) and not isinstance(value, bool)):
                raise ValueError(f"point {i} must hold numbers, got {point!r}")
        pairs.append((math.nan if accuracy is None else float(accuracy),
                      math.nan if latency is None else float(latency)))
    return pairs


def is_pareto_efficient(points: Iterable[Point]) -> list[bool]:
    """For each (accuracy, latency) point: is it on the frontier? O(n log n).

    Points with a missing (None or NaN) coordinate are never efficient -- a child without a measurement cannot be
    compared. Equal points are all efficient (see the module docstring).

    Sweep by increasing latency: a point is efficient iff it has the best accuracy among points of its latency and
    that accuracy beats every point of strictly lower latency.
    """
    pairs = _pairs(points)
    mask = [False] * len(pairs)
    valid = [i for i, (acc, lat) in enumerate(pairs) if not (math.isnan(acc) or math.isnan(lat))]
    valid.sort(key=lambda i: (pairs[i][1], -pairs[i][0]))
    best_faster = -math.inf  # best accuracy among points of strictly lower latency
    start = 0
    while start < len(valid):
        latency = pairs[valid[start]][1]
        end = start
        while end < len(valid) and pairs[valid[end]][1] == latency:
            end += 1
        group_best = pairs[valid[start]][0]  # sorted by descending accuracy within a latency
        if group_best > best_faster:
            for i in valid[start:end]:
                if pairs[i][0] == group_best:
                    mask[i] = True
            best_faster = group_best
        start = end
    return mask


def pareto_front(df, accuracy: str = "accuracy", latency: str = "latency_ms"):
    """The rows of `df` on the accuracy-latency frontier, sorted by latency (then accuracy, best first).

    Only children with status 'ok' count when `df` has a status column: a failed or pruned child's numbers are not
    a finished evaluation. Rows missing either value are left out. The original index is kept, so the result can
    be joined back to `df`.

    Raises:
        ValueError: a named column is missing.
    """
    for name in (accuracy, latency):
        if name not in df.columns:
            raise ValueError(f"no column {name!r} to compute a Pareto front on (columns: {', '.join(df.columns)})")
    candidates = df[df["status"] == "ok"] if "status" in df.columns else df
    mask = is_pareto_efficient(zip(candidates[accuracy].astype("float64"), candidates[latency].astype("float64")))
    front = candidates.iloc[[i for i, keep in enumerate(mask) if keep]]
    latencies, accuracies = front[latency].tolist(), front[accuracy].tolist()
    order = sorted(range(len(front)), key=lambda i: (latencies[i], -accuracies[i]))  # stable: ties keep input order
    return front.iloc[order]


def hypervolume(points: Iterable[Point], reference: Point) -> float:
    """Area of the accuracy-latency region the points dominate, bounded by `reference`.

    `reference` = (accuracy, latency) is the worst corner that still counts, e.g. (0.0, 200.0): only the part of
    each point's dominated box with accuracy above the reference accuracy and latency below the reference latency
    counts, so points not better than the reference on both contribute nothing. Units are accuracy x milliseconds;
    compare hypervolumes only under the same reference. O(n log n).
    """
    (ref_accuracy, ref_latency), = _pairs([reference])
    if math.isnan(ref_accuracy) or math.isnan(ref_latency):
        raise ValueError(f"reference must be a finite (accuracy, latency) pair, got {reference!r}")
    pairs = [(acc, lat) for acc, lat in _pairs(points)
             if acc > ref_accuracy and lat < ref_latency]  # False for NaN as well
    front = sorted({pairs[i] for i, keep in enumerate(is_pareto_efficient(pairs)) if keep}, key=lambda p: p[1])
    # Along the front, latency and accuracy both increase; between two front latencies, the faster point is the best
    # one available, so the area is a sum of rectangles.
    area = 0.0
    for i, (acc, lat) in enumerate(front):
        next_latency = front[i + 1][1] if i + 1 < len(front) else ref_latency
        area += (acc - ref_accuracy) * (next_latency - lat)
    return area
