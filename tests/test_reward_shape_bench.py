"""The pieces of benchmarks/reward_shape.py that its numbers rest on: the synthetic accuracy, the bins, the loop.

No controller runs here (that is the benchmark); random search stands in for it where a strategy is needed.
"""

import pytest

from conftest import load_benchmark

from mnas.search.counts import count
from mnas.measure import get_latency_model
from mnas.search.registry import load_architecture, load_space
from mnas.search.reward import Reward
from mnas.search.strategy import make_strategy

@pytest.fixture(scope="module")
def bench():
    return load_benchmark("reward_shape")


@pytest.fixture(scope="module")
def space():
    return load_space("mnasnet")


def test_capacity_term_is_anchored_on_a1_and_grows_with_width(bench, space):
    world = bench.SyntheticAccuracy(space, seed=1000)
    a1 = load_architecture("mnasnet-a1")
    assert world.capacity(count(a1, resolution=224).madds) == pytest.approx(0.752)
    scaled = [world.capacity(count(a1.replace(depth_multiplier=m), resolution=224).madds)
              for m in (0.5, 0.75, 1.0, 1.4)]
    assert scaled == sorted(scaled) and len(set(scaled)) == 4
    # diminishing returns: equal steps in ln(madds) give equal gains, so equal steps in madds give shrinking ones
    assert world.capacity(400e6) - world.capacity(300e6) > world.capacity(500e6) - world.capacity(400e6)
    # the MobileNetV2 ladder's slope is about 5 points per e-fold (see the benchmark's docstring)
    assert 0.045 < world.slope < 0.06


def test_architecture_terms_are_zero_mean_and_add_at_most_the_stated_gain(bench, space):
    world = bench.SyntheticAccuracy(space, seed=1001)
    assert len(world.table) == len(space.choice_counts)
    for terms, n in zip(world.table, space.choice_counts):
        assert len(terms) == n and sum(terms) == pytest.approx(0.0, abs=1e-12)
    best = [max(range(len(t)), key=t.__getitem__) for t in world.table]
    assert world.architecture_term(best) == pytest.approx(bench.ARCH_GAIN)
    assert bench.SyntheticAccuracy(space, seed=1001).table == world.table          # seeded
    assert bench.SyntheticAccuracy(space, seed=1002).table != world.table


def test_clip_bounds_accuracy_and_says_so(bench, space):
    world = bench.SyntheticAccuracy(space, seed=1000, clip=(0.6, 0.78))
    genotype = [0] * len(space.choice_counts)
    assert world(genotype, 5e9) == (0.78, True)
    assert world(genotype, 1e6) == (0.6, True)
    value, clipped = world(genotype, 312e6)
    assert 0.6 < value < 0.78 and not clipped


def test_hard_reward_is_the_accuracy_at_or_below_target_and_soft_is_not():
    def preset(name):
        reward = Reward.from_settings({"preset": name, "target_ms": 75.0}, ["pixel1"])
        return lambda accuracy, latency: reward(accuracy, {"pixel1": latency})

    hard, soft = preset("hard"), preset("soft")
    for latency in (30.0, 60.0, 75.0):
        assert hard(0.75, latency) == 0.75
    assert hard(0.75, 90.0) == pytest.approx(0.75 * 75 / 90)
    assert soft(0.75, 60.0) > 0.75 > soft(0.75, 90.0)
    # the soft reward halves or doubles latency for about 5% of reward, the trade-off the benchmark reports against
    assert soft(0.75, 150.0) / soft(0.75, 75.0) == pytest.approx(2 ** -0.07)


def test_summary_bins_put_the_target_below_it(bench):
    records = [(75.0, 0.7, False), (30.0, 0.7, False), (80.0, 0.7, False), (200.0, 0.7, False)]
    s = bench.summarize(records, 75.0)
    assert s["hist"].sum() == pytest.approx(1.0)
    assert list(s["hist"]) == [0.25, 0, 0, 0.25, 0.25, 0, 0.25]   # 30 | 75 in (0.9, 1.0] T | 80 in (1, 1.1] T | 200
    assert s["below"] == 0.5 and s["near"] == 0.5


def test_run_evaluates_exactly_the_requested_children(bench, space):
    evaluate = bench.Evaluator(space, bench.SyntheticAccuracy(space, seed=1000), get_latency_model("pixel1"))
    records = bench.run(make_strategy("random", space.choice_counts, seed=0), evaluate, None, samples=7)
    assert len(records) == 7
    assert all(lat > 0 and 0.6 <= acc <= 0.8 for lat, acc, _ in records)
