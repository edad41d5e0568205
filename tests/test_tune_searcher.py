"""The Ray Tune searcher adapter: Tune's calls map onto the run; save with a child in flight, restore, finish."""

import pytest

pytest.importorskip("ray")

from ray.tune.search import Searcher  # noqa: E402

from mnas.results.store import ResultStore  # noqa: E402
from mnas.search.reward import Reward  # noqa: E402
from mnas.search.driver import SearchRun  # noqa: E402
from mnas.search.registry import load_space  # noqa: E402
from mnas.search.strategy import make_strategy  # noqa: E402
from mnas.search.tune import MnasSearcher, _unflatten  # noqa: E402


def make_searcher(run_dir, strategy="mnas", samples=4, seed=0):
    space = load_space("mnasnet-small")
    run = SearchRun(space, make_strategy(strategy, space.choice_counts, seed=seed,
                                                  settings={"batch_size": 2} if strategy == "mnas" else None),
                    Reward.from_settings({"preset": "soft", "target_ms": 75}, ["pixel1"]),
                    ResultStore(str(run_dir / "results.sqlite")), samples=samples, run_dir=str(run_dir))
    return MnasSearcher(run)


def tune_result(accuracy, ms):
    """What Tune hands the searcher: nested metrics flattened with '/'."""
    return {"accuracy": accuracy, "latencies/pixel1": ms, "latency_source": "pixel1", "extra/steps": 3,
            "training_iteration": 1}


def test_unflatten():
    assert _unflatten({"latencies/pixel1": 3.0, "extra/a": 1, "config/x": 2, "accuracy": 0.5}) == {
        "latencies": {"pixel1": 3.0}, "extra": {"a": 1}, "config/x": 2, "accuracy": 0.5}


def test_save_with_a_child_in_flight_restore_and_complete_it(tmp_path):
    searcher = make_searcher(tmp_path)
    configs = {tid: searcher.suggest(tid) for tid in ("a", "b", "c")}
    searcher.on_trial_complete("a", tune_result(0.7, 60.0))
    searcher.on_trial_complete("c", tune_result(0.8, 80.0))
    checkpoint = tmp_path / "searcher.json"
    searcher.save(str(checkpoint))          # "b" is still running
    searcher.run.store.close()

    fresh = make_searcher(tmp_path, seed=123)
    fresh.restore(str(checkpoint))
    assert fresh.run.completed == 2
    redo = fresh.suggest("b2")               # the child in flight is proposed again, same genotype and sample
    assert redo["indices"] == configs["b"]["indices"] and redo["sample"] == configs["b"]["sample"]
    fresh.on_trial_complete("b2", tune_result(0.75, 70.0))
    last = fresh.suggest("d")
    assert last["sample"] == 3
    assert fresh.suggest("e") == Searcher.FINISHED
    fresh.on_trial_complete("d", tune_result(0.6, 50.0))
    rows = fresh.run.store.records()
    assert sorted(r["sample"] for r in rows) == [0, 1, 2, 3]
    assert all(r["status"] == "ok" and r["latency_ms"] > 0 for r in rows)
    assert fresh.run.strategy.step == 2      # two PPO updates of batch 2: the controller kept learning


def test_a_trial_error_is_a_recorded_failure(tmp_path):
    searcher = make_searcher(tmp_path, strategy="random", samples=2)
    searcher.suggest("a")
    searcher.on_trial_complete("a", None, error=True)
    row = searcher.run.store.child("a")
    assert row["status"] == "failed" and row["failure_code"] == "worker_error"
    assert row["reward"] == 0.0


def test_searcher_pickles_without_its_database(tmp_path):
    import pickle

    searcher = make_searcher(tmp_path, strategy="random")
    searcher.suggest("a")
    clone = pickle.loads(pickle.dumps(searcher))
    assert clone.run is None and clone.saved_state["issued"] == 1
