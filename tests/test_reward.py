"""The MNAS reward: hand-computed values of the paper's presets, several targets, failures, bad input.

Everything goes through the one API production uses: `Reward.from_settings(config's reward section, backends)`.
"""

import math
import os
import subprocess

import pytest

from mnas.search.reward import PRESETS, LatencyTerm, Reward

# 2 ** 0.07 and 2 ** -0.07, worked out by hand (exp(+-0.07 * ln 2)): being 2x faster or slower than T under the
# soft constraint changes the reward by about 5%.
TWO_POW_007 = 1.0497167
TWO_POW_MINUS_007 = 0.9526380


def one_target(latency_ms: float, accuracy: float = 0.75, **section) -> float:
    """The reward of a config's `reward` section for one child on one backend, as the search computes it."""
    return Reward.from_settings(section, ["pixel1"])(accuracy, {"pixel1": latency_ms})


@pytest.mark.parametrize("latency, expected", [
    (75.0, 0.75),                      # at T: the accuracy itself
    (37.5, 0.75 * TWO_POW_007),        # 2x faster: a small bonus (0.7873)
    (150.0, 0.75 * TWO_POW_MINUS_007),  # 2x slower: a small penalty (0.7145)
])
def test_soft_preset_spreads_around_the_target(latency, expected):
    term, = Reward.from_settings({"preset": "soft", "target_ms": 75}, ["pixel1"]).terms
    assert (term.source, term.alpha, term.beta) == ("pixel1", -0.07, -0.07)
    assert one_target(latency, preset="soft", target_ms=75) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("latency, expected", [
    (37.5, 0.75),   # below T: accuracy only, no bonus for being faster
    (75.0, 0.75),   # at T: still accuracy only
    (150.0, 0.375),  # 2x over T: reward halved (beta = -1)
])
def test_hard_preset_pushes_below_the_target(latency, expected):
    assert one_target(latency, preset="hard", target_ms=75) == pytest.approx(expected, rel=1e-12)


def test_custom_exponents_pick_alpha_below_and_beta_above():
    section = {"target_ms": 100, "alpha": -0.1, "beta": -0.5}
    assert one_target(50, 1.0, **section) == pytest.approx(1.0717735, rel=1e-6)  # 0.5 ** -0.1
    assert one_target(400, 1.0, **section) == pytest.approx(0.5, rel=1e-12)      # 4 ** -0.5
    # explicit exponents override a preset's
    assert one_target(400, 1.0, preset="soft", **section) == pytest.approx(0.5, rel=1e-12)


def test_multi_target_reward_is_the_product_of_latency_terms():
    reward = Reward.from_settings({"preset": "soft", "target_ms": 75,
                                   "extra_targets": [{"latency": "host", "target_ms": 20, "preset": "hard"}]},
                                  ["pixel1", "host", "unused"])
    value = reward(0.8, {"pixel1": 150.0, "host": 40.0, "unused": 1.0})  # sources without a term are ignored
    assert value == pytest.approx(0.8 * TWO_POW_MINUS_007 * 0.5, rel=1e-6)  # 0.38106
    assert reward.sources == ("pixel1", "host")
    assert reward.describe() == "(pixel1/75ms)^(-0.07|-0.07) * (host/20ms)^(0|-1)"


def test_failed_reward_comes_from_the_section():
    section = {"preset": "soft", "target_ms": 75, "failed_reward": -0.5}
    assert Reward.from_settings(section, ["pixel1"]).failed_reward == -0.5


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


@pytest.mark.parametrize("accuracy, latency", [
    (float("nan"), 70.0), (float("inf"), 70.0), (-0.1, 70.0), (75.2, 70.0),  # 75.2: a percentage
    (0.7, float("nan")), (0.7, float("inf")), (0.7, -3.0), (0.7, 0.0), (True, 70.0),
])
def test_bad_numbers_raise_value_error(accuracy, latency):
    with pytest.raises(ValueError):
        Reward([("pixel1", 75, -0.07, -0.07)])(accuracy, {"pixel1": latency})


@pytest.mark.parametrize("section, words", [
    (dict(target_ms=0, alpha=-0.07, beta=-0.07), "reward: .*target"),
    (dict(target_ms=-75, alpha=-0.07, beta=-0.07), "reward: .*target"),
    (dict(target_ms=float("nan"), alpha=-0.07, beta=-0.07), "reward: .*target"),
    (dict(target_ms="75", preset="soft"), "reward: target_ms, alpha and beta must be numbers"),
    (dict(alpha=-0.07, beta=-0.07), "reward: target_ms is required"),
    (dict(target_ms=75, alpha=0.07, beta=-0.07), "reward: .*alpha"),
    (dict(target_ms=75, alpha=0.0, beta=float("nan")), "reward: .*beta"),
    (dict(target_ms=75, alpha=0.0), "reward: give a preset"),
    (dict(target_ms=75, alpha=0.0, beta=-1.0, failed_reward=float("inf")), "failed_reward"),
    (dict(target_ms=75, preset="soft", tarjet=3), "reward: unknown setting.*'tarjet'"),
    (dict(target_ms=75, preset="soft", extra_targets=[{"latency": "host", "preset": "soft"}]),
     r"reward.extra_targets\[1\]: 'latency' must name one of"),
    (dict(target_ms=75, preset="soft", extra_targets=[{"latency": "pixel1", "preset": "soft"}]),
     r"reward.extra_targets\[1\]: target_ms is required"),
])
def test_bad_section_raises_one_clear_sentence_naming_the_setting(section, words):
    with pytest.raises(ValueError, match=words):
        Reward.from_settings(section, ["pixel1"])


def test_unknown_preset_names_itself_and_the_known_ones():
    with pytest.raises(ValueError) as err:
        Reward.from_settings({"preset": "medium", "target_ms": 75}, ["pixel1"])
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


def test_terms_are_frozen():
    term, = Reward.from_settings({"preset": "hard", "target_ms": 75}, ["pixel1"]).terms
    with pytest.raises(AttributeError):
        term.target_ms = 50  # type: ignore[misc]


def test_imports_without_tensorflow_or_ray(python):
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['ray'] = None\n"
            "import mnas.search.reward as r\n"
            "reward = r.Reward.from_settings({'preset': 'hard', 'target_ms': 75}, ['pixel1'])\n"
            "assert reward(0.5, {'pixel1': 150}) == 0.25\n"
            "print('ok')")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, cwd=root)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_presets_match_the_paper():
    assert PRESETS == {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}
    assert math.isclose(2 ** 0.07, TWO_POW_007, rel_tol=1e-6)
