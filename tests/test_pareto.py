"""Pareto frontier and hypervolume: hand-made cases, the definition checked by brute force, no pandas needed."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from mnas.results.pareto import hypervolume, is_pareto_efficient, pareto_front

REPO = Path(__file__).resolve().parents[1]


def dominates(a, b) -> bool:
    """The definition: a is at least as accurate and as fast as b, and strictly better on one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def test_hand_made_points():
    points = [
        (0.70, 50.0),   # 0 efficient
        (0.60, 60.0),   # 1 dominated by 0 (less accurate and slower)
        (0.75, 80.0),   # 2 efficient
        (0.75, 90.0),   # 3 dominated by 2 (same accuracy, slower)
        (0.65, 50.0),   # 4 dominated by 0 (same latency, less accurate)
        (0.70, 50.0),   # 5 equal to 0: both kept
        (0.50, 20.0),   # 6 efficient: the fastest
        (math.nan, 10.0),  # 7 missing accuracy: never efficient
        (0.99, None),   # 8 missing latency: never efficient
    ]
    assert is_pareto_efficient(points) == [True, False, True, False, False, True, True, False, False]


def test_empty_and_single():
    assert is_pareto_efficient([]) == []
    assert is_pareto_efficient([(0.1, 5)]) == [True]


@pytest.mark.parametrize("bad", [[(0.5,)], [(0.5, 1.0, 2.0)], [("0.5", 1.0)], [0.5]])
def test_bad_points_are_refused(bad):
    with pytest.raises(ValueError, match="point 0"):
        is_pareto_efficient(bad)


# Small integer grids make ties (equal accuracy, equal latency, equal points) common.
grid_points = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(grid_points)
def test_matches_the_definition(points):
    expected = [not any(dominates(other, point) for other in points) for point in points]
    assert is_pareto_efficient(points) == expected


@settings(max_examples=100, deadline=None)
@given(grid_points)
def test_does_not_depend_on_order(points):
    mask = is_pareto_efficient(points)
    reversed_mask = is_pareto_efficient(points[::-1])
    assert mask == reversed_mask[::-1]


@pytest.fixture
def children():
    return pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e", "f", "g"],
        "accuracy": [0.70, 0.60, 0.75, 0.99, 0.50, 0.70, float("nan")],
        "latency_ms": [50.0, 60.0, 80.0, 1.0, 20.0, 50.0, 5.0],
        "status": ["ok", "ok", "ok", "failed", "ok", "ok", "ok"],
    })


def test_pareto_front_of_a_frame(children):
    front = pareto_front(children)
    # d would dominate everything but failed; g has no accuracy; a and f tie and both stay, in input order.
    assert list(front["trial_id"]) == ["e", "a", "f", "c"]
    assert list(front.index) == [4, 0, 5, 2]  # the original index, to join back
    assert list(front["latency_ms"]) == sorted(front["latency_ms"])


def test_pareto_front_without_status_column_and_custom_columns(children):
    frame = children.drop(columns="status").rename(columns={"accuracy": "top1", "latency_ms": "host_ms"})
    assert list(pareto_front(frame, accuracy="top1", latency="host_ms")["trial_id"]) == ["d"]
    with pytest.raises(ValueError, match="no column 'accuracy'"):
        pareto_front(frame)


def test_pareto_front_of_an_empty_frame(children):
    front = pareto_front(children.iloc[:0])
    assert front.empty and list(front.columns) == list(children.columns)


def test_hypervolume_known_case():
    points = [(0.5, 10.0), (0.7, 20.0)]
    # Rectangles: accuracy 0.5 over latency [10, 20), accuracy 0.7 over [20, 30).
    assert hypervolume(points, (0.0, 30.0)) == pytest.approx(0.5 * 10 + 0.7 * 10)
    # Dominated, duplicate and worse-than-reference points add nothing.
    more = points + [(0.4, 25.0), (0.7, 20.0), (0.9, 40.0), (-0.1, 5.0), (math.nan, 1.0)]
    assert hypervolume(more, (0.0, 30.0)) == pytest.approx(12.0)
    assert hypervolume([], (0.0, 30.0)) == 0.0
    assert hypervolume(points, (0.6, 15.0)) == 0.0  # nothing is better than this reference on both


@settings(max_examples=100, deadline=None)
@given(grid_points)
def test_hypervolume_counts_dominated_unit_cells(points):
    reference = (0, 7)
    cells = sum(1 for acc in range(0, 7) for lat in range(0, 7)
                if any(a >= acc + 1 and l <= lat for a, l in points))  # cell [acc, acc+1] x [lat, lat+1]
    assert hypervolume(points, reference) == pytest.approx(cells)


def test_hypervolume_refuses_a_bad_reference():
    with pytest.raises(ValueError, match="reference"):
        hypervolume([(0.5, 1.0)], (None, 10.0))


def test_is_pareto_efficient_runs_without_pandas():
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        sys.modules["pandas"] = None
        from mnas.results.pareto import is_pareto_efficient, hypervolume
        print(is_pareto_efficient([(0.7, 50), (0.6, 60)]), hypervolume([(0.5, 10)], (0, 20)))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True, False] 5.0"


def test_scales_to_many_points():
    n = 200_000
    points = [(i / n, float(i)) for i in range(n)]  # every point efficient: the worst case for a naive O(n^2)
    assert all(is_pareto_efficient(points))
