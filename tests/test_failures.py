"""Failing children: each kind of failure is recorded with its reason and the documented reward, and the search
carries on with the controller intact."""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

import pytest

from conftest import record_reliability, trial_settings
from conftest import TINY_ARCH
from mnas.search.arch import parse_arch_text
from mnas.search.registry import load_space
from mnas.workers.trial import FAULT_KINDS, check_faults, evaluate_child, injected_fault

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_DATA = os.path.isdir("/usr/share/datasets/fashion-mnist")
TINY_PROXY = {"train_subset": 128, "heldout": 64, "epochs": 1, "batch_size": 32, "width": 0.5}


def child_config(sample=0):
    arch = load_space("mnasnet-small").sample(sample)
    return {"arch": arch.to_dict(), "sample": sample}


def tiny_child(sample=0):
    """A child of two blocks (tests/test_train.py's): trains in a second, for the tests that really train one."""
    return {"arch": parse_arch_text(TINY_ARCH).to_dict(), "sample": sample}


def test_fault_choice_is_deterministic_and_near_the_rate():
    faults = {"rate": 0.3, "seed": 4}
    picks = [injected_fault(faults, s) for s in range(1000)]
    assert picks == [injected_fault(faults, s) for s in range(1000)]
    assert 0.25 < sum(p is not None for p in picks) / 1000 < 0.35
    assert {p for p in picks if p} == set(FAULT_KINDS)
    assert injected_fault({}, 3) is None and injected_fault({"rate": 0}, 3) is None
    with pytest.raises(ValueError, match="rate must be between 0 and 1"):
        check_faults({"rate": 2})


def test_too_large_is_refused_before_anything_is_built():
    metrics = evaluate_child(child_config(), trial_settings(TINY_PROXY, limits={"max_params": 1000}))
    assert metrics["status"] == "failed" and metrics["failure_code"] == "too_large"
    assert "parameters > limits.max_params 1,000" in metrics["failure_detail"]
    assert "accuracy" not in metrics
    record_reliability("child_failure", via="evaluate_child", injected={"too_large": 1},
                       recorded={metrics["failure_code"]: 1})


def test_injected_exception_and_conversion_error_are_recorded():
    faults = {"rate": 1.0, "kinds": ["exception"]}
    metrics = evaluate_child(child_config(), trial_settings(TINY_PROXY, faults=faults))
    assert metrics["status"] == "failed" and metrics["failure_code"] == "unexpected_error"
    assert "RuntimeError: injected fault (trial.py:" in metrics["failure_detail"]
    first = metrics["failure_code"]
    faults = {"rate": 1.0, "kinds": ["conversion_error"]}
    metrics = evaluate_child(child_config(), trial_settings(TINY_PROXY, faults=faults))
    assert metrics["failure_code"] == "latency_error"
    record_reliability("child_failure", via="evaluate_child", injected={"exception": 1, "conversion_error": 1},
                       recorded={first: 1, metrics["failure_code"]: 1})


@pytest.mark.skipif(not HAVE_DATA, reason="needs dataset-fashion-mnist")
def test_a_real_divergence_is_caught_as_nan_loss(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    metrics = evaluate_child(tiny_child(1), trial_settings(TINY_PROXY, faults={"rate": 1.0, "kinds": ["nan_loss"]}))
    assert metrics["status"] == "failed" and metrics["failure_code"] == "nan_loss", metrics
    healthy = evaluate_child(tiny_child(1), trial_settings(TINY_PROXY))
    assert healthy["status"] == "ok" and 0 <= healthy["accuracy"] <= 1 and healthy["latencies"]["pixel1"] > 0
    record_reliability("child_failure", via="evaluate_child (real training)", injected={"nan_loss": 1},
                       recorded={metrics["failure_code"]: 1}, healthy_ok=1)


SAMPLES = 6


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DATA, reason="needs dataset-fashion-mnist")
def test_search_through_ray_survives_injected_failures(tmp_path):
    """Failures injected at rate 0.7 (with seed 33: 5 of the 6 children, every kind, including a worker process
    that dies); the search finishes with each recorded."""
    import yaml

    with open(os.path.join(ROOT, "configs", "smoke.yaml")) as handle:
        config = yaml.safe_load(handle)
    config.update(samples=SAMPLES, faults={"rate": 0.7, "seed": 33})
    path = tmp_path / "faulty.yaml"
    path.write_text(yaml.safe_dump(config))
    ray_tmp = tempfile.mkdtemp(prefix="mf", dir="/tmp")
    try:
        result = subprocess.run([sys.executable, "launch.py", "search", "--config", str(path), "--out",
                                 str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=900,
                                env=dict(os.environ, MNAS_RAY_TMPDIR=ray_tmp))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    listing = subprocess.run([sys.executable, "launch.py", "results", str(tmp_path / "run"), "--json", "--status",
                              "all"], cwd=ROOT, capture_output=True, text=True, check=True)
    children = json.loads(listing.stdout)
    assert sorted(c["sample"] for c in children) == list(range(SAMPLES))
    expected = {s: injected_fault(config["faults"], s) for s in range(SAMPLES)}
    assert set(expected.values()) == {None, *FAULT_KINDS}           # every kind, and a healthy child
    for child in children:
        fault = expected[child["sample"]]
        if fault is None:
            assert child["status"] == "ok", child["failure_detail"]
        else:
            assert child["status"] == "failed" and child["reward"] == 0.0
            code = {"exception": "unexpected_error", "nan_loss": "nan_loss", "conversion_error": "latency_error",
                    "worker_death": "worker_error"}[fault]
            assert child["failure_code"] == code, (fault, child["failure_code"], child["failure_detail"])
    state = json.loads((tmp_path / "run" / "searcher_state.json").read_text())
    assert state["strategy"]["step"] == SAMPLES // 2            # every child, failed or not, fed to PPO
    assert all(math.isfinite(v) for v in state["last_stats"].values() if isinstance(v, float))
    samples = [c["sample"] for c in children]
    record_reliability(
        "child_failure", via="search through Ray", children=len(children),
        injected=dict(Counter(f for f in expected.values() if f)),
        recorded=dict(Counter(c["failure_code"] for c in children if c["status"] == "failed")),
        failed_rewards=sorted({c["reward"] for c in children if c["status"] == "failed"}),
        ok=sum(c["status"] == "ok" for c in children), step=state["strategy"]["step"], expected_step=SAMPLES // 2,
        lost=len(set(range(SAMPLES)) - set(samples)), twice=len(samples) - len(set(samples)))
