"""Golden counts: the analytic params and multiply-adds against the published MnasNet numbers."""

import csv
import os
import random
import time

import pytest

from mnas.search.counts import count, profile
from mnas.search.registry import ARCHITECTURES, load_space

SEED_TABLE = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "reference",
                          "mnasnet_a1_pixel1.csv")
# The seed's 25 rows, embedded so the test also runs where ../shared is absent (the file is checked below when
# present): (resolution, depth multiplier, params in M, multiply-adds in M).
SEED_ROWS = [
    (224, 1.4, 6.1, 591.5), (224, 1.0, 3.9, 315.2), (224, 0.75, 2.9, 226.7), (224, 0.5, 2.1, 105.2),
    (224, 0.35, 1.7, 63.2), (192, 1.4, 6.1, 435.1), (192, 1.0, 3.9, 232.0), (192, 0.75, 2.9, 166.9),
    (192, 0.5, 2.1, 77.6), (192, 0.35, 1.7, 46.8), (160, 1.4, 6.1, 302.8), (160, 1.0, 3.9, 161.6),
    (160, 0.75, 2.9, 116.4), (160, 0.5, 2.1, 54.4), (160, 0.35, 1.7, 32.9), (128, 1.4, 6.1, 194.5),
    (128, 1.0, 3.9, 104.1), (128, 0.75, 2.9, 75.0), (128, 0.5, 2.1, 35.3), (128, 0.35, 1.7, 21.6),
    (96, 1.4, 6.1, 110.3), (96, 1.0, 3.9, 59.3), (96, 0.75, 2.9, 42.9), (96, 0.5, 2.1, 20.5), (96, 0.35, 1.7, 12.7),
]


def test_embedded_rows_match_the_seed_csv():
    if not os.path.exists(SEED_TABLE):
        pytest.skip("../shared/reference is not beside this checkout")
    with open(SEED_TABLE) as handle:
        rows = [(int(r["input_size"]), float(r["depth_multiplier"]), float(r["params_m"]), float(r["madds_m"]))
                for r in csv.DictReader(handle)]
    assert rows == SEED_ROWS


def test_mnasnet_a1_headline():
    counts = count(ARCHITECTURES["mnasnet-a1"])
    assert round(counts.params / 1e6, 2) == 3.89
    assert counts.params == 3_887_038
    assert abs(counts.madds / 312e6 - 1) < 0.01  # the paper's 312M


@pytest.mark.parametrize("resolution, multiplier, params_m, madds_m", SEED_ROWS)
def test_every_seed_row(resolution, multiplier, params_m, madds_m):
    arch = ARCHITECTURES["mnasnet-a1"].replace(depth_multiplier=multiplier)
    counts = count(arch, resolution=resolution)
    assert abs(counts.params / 1e6 - params_m) <= 0.05
    assert abs(counts.madds / 1e6 / madds_m - 1) <= 0.03


def test_mnasnet_small_headline():
    counts = count(ARCHITECTURES["mnasnet-small"])
    assert abs(counts.params / 2.0e6 - 1) <= 0.03
    assert abs(counts.madds / 68e6 - 1) <= 0.03


def test_mobilenetv2_matches_its_paper():
    counts = count(ARCHITECTURES["mobilenetv2"])
    assert abs(counts.params / 3.4e6 - 1) <= 0.04   # MobileNetV2 paper: 3.4M
    assert abs(counts.madds / 300e6 - 1) <= 0.01    # 300M


def test_profile_shapes_follow_the_strides():
    rows = profile(ARCHITECTURES["mnasnet-a1"])
    assert [r.name for r in rows[:3]] == ["stem", "b1.1", "b2.1"]
    assert rows[0].in_hw == 224 and rows[0].out_hw == 112
    head = next(r for r in rows if r.name == "head")
    assert head.in_hw == 7 and head.in_filters == 320
    assert rows[-1].params == 1280 * 1000 + 1000
    # an odd input size rounds up ('same' padding): 225 -> 113 -> ... -> 8
    assert next(r for r in profile(ARCHITECTURES["mnasnet-a1"], resolution=225) if r.name == "head").in_hw == 8


def test_fast_enough_for_the_search_loop():
    space = load_space("mnasnet")
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(2000)]
    start = time.perf_counter()
    for arch in archs:
        count(arch)
    rate = len(archs) / (time.perf_counter() - start)
    assert rate >= 5_000, f"{rate:.0f} architectures/s"  # ~20k/s here; a loaded CI machine gets slack
