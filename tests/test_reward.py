"""The MNAS reward: hand-computed values of the paper's presets, several targets, failures, bad input."""

import math
import os
import subprocess

import pytest

from search.reward import PRESETS, LatencyTerm, Reward, RewardConfig

# 2 ** 0.07 and 2 ** -0.07, worked out by hand (exp(+-0.07 * ln 2)): being 2x faster or slower than T under the
# soft constraint changes the reward by about 5%.
TWO_POW_007 = 1.0497167
TWO_POW_MINUS_007 = 0.9526380


@pytest.mark.parametrize("latency, expected", [
    (75.0, 0.75),                      # at T: the accuracy itself
    (37.5, 0.75 * TWO_POW_007),        # 2x faster: a small bonus (0.7873)
    (150.0, 0.75 * TWO_POW_MINUS_007),  # 2x slower: a small penalty (0.7145)
])
def test_soft_preset_spreads_around_the_target(latency, expected):
    reward = RewardConfig.preset("soft", target_ms=75)
    assert (reward.alpha, reward.beta) == (-0.07, -0.07)
    assert reward(0.75, latency) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("latency, expected", [
    (37.5, 0.75),   # below T: accuracy only, no bonus for being faster
    (75.0, 0.75),   # at T: still accuracy only
    (150.0, 0.375),  # 2x over T: reward halved (beta = -1)
])
def test_hard_preset_pushes_below_the_target(latency, expected):
    assert RewardConfig.preset("hard", target_ms=75)(0.75, latency) == pytest.approx(expected, rel=1e-12)


def test_custom_exponents_pick_alpha_below_and_beta_above():
    reward = RewardConfig(target_ms=100, alpha=-0.1, beta=-0.5)
    assert reward(1.0, 50) == pytest.approx(1.0717735, rel=1e-6)  # 0.5 ** -0.1
    assert reward(1.0, 400) == pytest.approx(0.5, rel=1e-12)       # 4 ** -0.5


def test_multi_target_reward_is_the_product_of_latency_terms():
    reward = Reward([LatencyTerm.preset("pixel1", "soft", 75), ("host", 20.0, 0.0, -1.0)])
    value = reward(0.8, {"pixel1": 150.0, "host": 40.0, "unused": 1.0})  # extra sources are ignored
    assert value == pytest.approx(0.8 * TWO_POW_MINUS_007 * 0.5, rel=1e-6)  # 0.38106
    assert reward.sources == ("pixel1", "host")


def test_single_target_reward_equals_its_config():
    config = RewardConfig.preset("soft", 75, failed_reward=-0.5)
    reward = Reward.from_config(config, source="pixel1")
    assert reward(0.7, {"pixel1": 90.0}) == config(0.7, 90.0)
    assert reward.failed_reward == -0.5


def test_no_terms_means_accuracy_only():
    assert Reward([])(0.6, {}) == 0.6


def test_missing_latency_source_is_named():
    reward = Reward([("pixel1", 75, -0.07, -0.07), ("host", 20, 0, -1)])
    with pytest.raises(ValueError, match="'host'"):
        reward(0.7, {"pixel1": 70.0})


def test_failed_reward_is_below_every_working_child_by_default():
    reward = Reward([("pixel1", 75, 0.0, -1.0)])
    worst_working = reward(1e-6, {"pixel1": 1e6})
    assert reward.failed_reward == 0.0 < worst_working
    score = reward.score(None, None, failure="NaN loss at epoch 2")
    assert (score.reward, score.failed, score.failure) == (0.0, True, "NaN loss at epoch 2")


def test_score_turns_unusable_numbers_into_a_recorded_failure():
    reward = Reward([("pixel1", 75, -0.07, -0.07)], failed_reward=-1.0)
    nan = reward.score(float("nan"), {"pixel1": 70.0})
    assert nan.failed and nan.reward == -1.0 and "accuracy" in nan.failure
    missing = reward.score(0.7, {})
    assert missing.failed and "pixel1" in missing.failure
    ok = reward.score(0.7, {"pixel1": 75.0})
    assert not ok.failed and ok.reward == pytest.approx(0.7)


@pytest.mark.parametrize("accuracy, latency", [
    (float("nan"), 70.0), (float("inf"), 70.0), (-0.1, 70.0), (75.2, 70.0),  # 75.2: a percentage
    (0.7, float("nan")), (0.7, float("inf")), (0.7, -3.0), (0.7, 0.0), (True, 70.0),
])
def test_bad_numbers_raise_value_error(accuracy, latency):
    with pytest.raises(ValueError):
        RewardConfig.preset("soft", 75)(accuracy, latency)
    with pytest.raises(ValueError):
        Reward([("pixel1", 75, -0.07, -0.07)])(accuracy, {"pixel1": latency})


@pytest.mark.parametrize("kwargs, word", [
    (dict(target_ms=0, alpha=-0.07, beta=-0.07), "target"),
    (dict(target_ms=-75, alpha=-0.07, beta=-0.07), "target"),
    (dict(target_ms=float("nan"), alpha=-0.07, beta=-0.07), "target"),
    (dict(target_ms=75, alpha=0.07, beta=-0.07), "alpha"),
    (dict(target_ms=75, alpha=0.0, beta=float("nan")), "beta"),
    (dict(target_ms=75, alpha=0.0, beta=-1.0, failed_reward=float("inf")), "failed_reward"),
])
def test_bad_config_raises_one_clear_sentence(kwargs, word):
    with pytest.raises(ValueError, match=word):
        RewardConfig(**kwargs)


def test_unknown_preset_names_itself_and_the_known_ones():
    with pytest.raises(ValueError) as err:
        RewardConfig.preset("medium", 75)
    assert "'medium'" in str(err.value)
    assert all(name in str(err.value) for name in PRESETS)


def test_bad_terms_raise_value_error():
    with pytest.raises(ValueError, match="'pixel1'.*more than once"):
        Reward([("pixel1", 75, 0, -1), ("pixel1", 50, 0, -1)])
    with pytest.raises(ValueError, match="source, target_ms, alpha, beta"):
        Reward([("pixel1", 75)])
    with pytest.raises(ValueError, match="source name"):
        LatencyTerm("", 75, 0, -1)
    with pytest.raises(ValueError, match="mapping"):
        Reward([])(0.5, [70.0])


def test_configs_are_frozen():
    config = RewardConfig.preset("hard", 75)
    with pytest.raises(AttributeError):
        config.target_ms = 50  # type: ignore[misc]


def test_imports_without_tensorflow_or_ray(python):
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['ray'] = None\n"
            "import search.reward as r\n"
            "assert r.RewardConfig.preset('hard', 75)(0.5, 150) == 0.25\n"
            "print('ok')")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, cwd=root)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_presets_match_the_paper():
    assert PRESETS == {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}
    assert math.isclose(2 ** 0.07, TWO_POW_007, rel_tol=1e-6)
