"""A search scored by a surrogate of the proxy: the normal command, store and views; no Ray, nothing trained.

The surrogate is fitted here on a made-up accuracy function, so the test needs neither the collection nor data.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mnas.results.dashboard import build_payload
from mnas.results.store import ResultStore
from mnas.results.views import read_run
from mnas.search.driver import _array, _jsonable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def surrogate_file(surrogate_model):
    return surrogate_model


def _config(tmp_path, model, **changes):
    text = {"name": "sur", "space": "mnasnet", "strategy": "evolution", "samples": 30, "seed": 3,
            "latency": ["pixel1"], "reward": {"preset": "soft", "target_ms": 75},
            "evolution": {"population": 8, "sample_size": 3}, "surrogate": {"model": str(model)}}
    text.update(changes)
    path = tmp_path / "sur.yaml"
    path.write_text(json.dumps(text))   # JSON is YAML
    return path


def _search(*argv):
    env = dict(os.environ, MNAS_RAY_TMPDIR="/nonexistent-ray-must-not-start")
    return subprocess.run([sys.executable, "launch.py", "search", *argv], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def test_a_surrogate_search_runs_in_process_and_says_what_it_predicted(tmp_path, surrogate_file):
    out = tmp_path / "run"
    result = _search("--config", str(_config(tmp_path, surrogate_file)), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "accuracies PREDICTED by surrogate:bench_surrogate.json" in result.stderr
    assert not (out / "tune").exists()                     # no Ray Tune experiment: nothing went to workers
    with ResultStore(out, readonly=True) as store:
        children = store.children()
        assert store.get_meta("surrogate")["children"] == 80
    assert len(children) == 30 and set(children["status"]) == {"ok"}
    assert set(children["accuracy_source"]) == {"surrogate:bench_surrogate.json"}
    assert children["latency_ms"].notna().all() and children["train_seconds"].isna().all()
    # the Pixel 1 predictor's own doubt about each child is stored beside its latency
    doubts = [extra["latency_uncertainty"]["pixel1"] for extra in children["extra"]]
    assert all(d["interval_ms"][0] < ms < d["interval_ms"][1] for d, ms in zip(doubts, children["latency_ms"]))
    assert all(d["extrapolating"] == (d["leverage_ratio"] > 1) for d in doubts)
    # one child, one score: a genotype proposed twice (evolution re-proposes) is scored alike
    by_genotype = children.groupby(children["indices"].map(tuple))["accuracy"].nunique()
    assert (by_genotype == 1).all()
    payload = build_payload([read_run(ResultStore(out, readonly=True), "sur", str(out))])
    assert payload["runs"][0]["predicted_by"] == ["surrogate:bench_surrogate.json"]
    listed = subprocess.run([sys.executable, "launch.py", "results", str(out), "--top", "3"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert "accuracies PREDICTED by surrogate:bench_surrogate.json: no child was trained" in listed.stdout
    # and it resumes like any search: more samples, the same first 30
    again = _search("--config", str(_config(tmp_path, surrogate_file)), "--out", str(out), "--samples", "40",
                    "--resume", "--quiet")
    assert again.returncode == 0, again.stderr
    with ResultStore(out, readonly=True) as store:
        grown = store.children()
    assert len(grown) == 40 and grown["trial_id"].is_unique
    assert grown.head(30)["accuracy"].tolist() == children["accuracy"].tolist()


@pytest.mark.parametrize("change, needle", [
    ({"surrogate": {"model": "/no/such/file.json"}}, "cannot read surrogate /no/such/file.json"),
    ({"surrogate": {"modle": "x"}}, "surrogate: unknown setting(s) modle"),
    ({"space": "mnasnet-small"}, "fitted on space 'mnasnet'"),
    ({"scheduler": {"name": "asha"}}, "scheduler must be none"),
])
def test_bad_surrogate_settings_are_one_line(tmp_path, surrogate_file, change, needle):
    out = tmp_path / "run"
    result = _search("--config", str(_config(tmp_path, surrogate_file, **change)), "--out", str(out))
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_state_arrays_round_trip_exactly_and_old_list_states_still_load():
    arrays = [np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32), np.arange(5, dtype=np.int64),
              np.zeros((0, 2)), np.array(7, np.int64), np.asfortranarray(np.arange(6.0).reshape(2, 3))]
    for array in arrays:
        encoded = json.loads(json.dumps(array, default=_jsonable))
        assert isinstance(encoded["__ndarray__"], str)
        back = _array(encoded)
        assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)
        back[...] = 1 if back.size else back   # a writable copy, not a view of the decoded bytes
    legacy = {"__ndarray__": [[1.5, 2.0]], "dtype": "float32"}
    assert np.array_equal(_array(legacy), np.array([[1.5, 2.0]], np.float32))
