"""The search loop without Ray: proposals, records, failures, save with children in flight, resume."""

import json
import os

import pytest

from mnas.results.store import ResultStore
from mnas.search import fileio
from mnas.search.counts import count
from mnas.search.driver import STATE_FILE, Deployment, SearchRun
from mnas.search.failures import Failure
from mnas.search.registry import load_space
from mnas.search.arch import Architecture
from mnas.search.strategy import RandomStrategy


class ToyReward:
    """Accuracy times a latency term, enough to exercise the loop."""

    failed_reward = 0.0

    def __call__(self, accuracy, latencies):
        if accuracy is None or not 0 <= accuracy <= 1:
            raise ValueError(f"bad accuracy {accuracy!r}")
        return accuracy * (latencies["pixel1"] / 75.0) ** -0.07


def make_run(tmp_path, samples=6, seed=0):
    space = load_space("mnasnet-small")
    store = ResultStore(str(tmp_path / "results.sqlite"))
    run = SearchRun(space, RandomStrategy(space.choice_counts, seed=seed), ToyReward(), store, samples=samples,
                    run_dir=str(tmp_path))
    return run, store


def ok(accuracy=0.8, ms=70.0):
    return {"accuracy": accuracy, "latencies": {"pixel1": ms}, "latency_source": "pixel1", "train_seconds": 1.0}


def test_loop_records_every_child_and_stops_at_the_budget(tmp_path):
    run, store = make_run(tmp_path, samples=3)
    configs = [run.next_config(f"t{i}") for i in range(4)]
    assert configs[3] is None and run.finished
    assert [c["sample"] for c in configs[:3]] == [0, 1, 2]
    for i in range(3):
        record = run.complete(f"t{i}", ok(0.5 + i / 10))
        assert record["status"] == "ok" and record["reward"] > 0
    frame = store.children()
    assert len(frame) == 3 and set(frame["trial_id"]) == {"t0", "t1", "t2"}
    row = store.child("t1")
    assert row["arch"] == " ".join(run.space.decode(row["indices"]).block_strings)
    assert row["params"] > 0 and row["madds"] > 0
    assert run.complete("unknown", ok()) is None


def test_failures_get_the_documented_reward_and_a_code(tmp_path):
    run, store = make_run(tmp_path, samples=4)
    for i in range(4):
        run.next_config(f"t{i}")
    run.complete("t0", {"status": "failed", "failure_code": "nan_loss", "failure_detail": "loss nan at step 3"})
    run.complete("t1", None, error=(Failure.WORKER_ERROR, "died"))
    run.complete("t2", {"accuracy": 7.0, "latencies": {"pixel1": 70.0}})   # a result the reward rejects
    run.complete("t3", {"status": "failed", "failure_code": "tired", "failure_detail": "of it"})  # not a code
    rows = {r["trial_id"]: r for r in store.records()}
    assert (rows["t0"]["status"], rows["t0"]["failure_code"], rows["t0"]["failure_detail"]) == \
        ("failed", "nan_loss", "loss nan at step 3")
    assert (rows["t1"]["failure_code"], rows["t1"]["failure_detail"]) == ("worker_error", "died")
    assert rows["t2"]["failure_code"] == "bad_result" and "accuracy" in rows["t2"]["failure_detail"]
    assert (rows["t3"]["failure_code"], rows["t3"]["failure_detail"]) == ("unexpected_error", "tired: of it")
    assert all(r["reward"] == 0.0 for r in rows.values())
    assert run.best_reward is None


def test_a_search_stops_after_consecutive_failures_and_a_resume_tries_again(tmp_path):
    space = load_space("mnasnet-small")
    store = ResultStore(str(tmp_path / "results.sqlite"))
    run = SearchRun(space, RandomStrategy(space.choice_counts, seed=0), ToyReward(), store, samples=20,
                    run_dir=str(tmp_path), max_consecutive_failures=3)
    failed = {"status": "failed", "failure_code": "data_error", "failure_detail": "no dataset"}
    outcomes = [ok(), failed, failed, ok(), failed, failed, failed]   # the ok child resets the count
    for i, outcome in enumerate(outcomes):
        assert not run.finished, f"stopped before child {i}"
        run.next_config(f"t{i}")
        run.complete(f"t{i}", outcome)
    assert run.finished and run.next_config("t7") is None
    assert run.summary()["stopped"].startswith("the last 3 children all failed (the last: data_error: no dataset)")
    assert store.count() == 7 and run.issued == 7
    resumed = SearchRun(space, RandomStrategy(space.choice_counts, seed=0), ToyReward(), store, samples=20,
                        run_dir=str(tmp_path), max_consecutive_failures=3)
    resumed.load()
    assert not resumed.finished and resumed.next_config("t7")["sample"] == 7


def test_the_child_is_built_once_with_the_deployment_settings(tmp_path):
    """The child sent to the worker is the one recorded: at deploy.resolution, not the space's resolution."""
    space = load_space("mnasnet")
    store = ResultStore(str(tmp_path / "results.sqlite"))
    run = SearchRun(space, RandomStrategy(space.choice_counts, seed=0), ToyReward(), store, samples=1,
                    deployment=Deployment(resolution=192, num_classes=10))
    config = run.next_config("t0")
    sent = Architecture.from_dict(config["arch"])
    assert sent.resolution == 192 and space.decode(config["indices"]).resolution == 224
    record = run.complete("t0", ok())
    assert (record["params"], record["madds"]) == (count(sent, 10).params, count(sent, 10).madds)
    assert record["madds"] < count(space.decode(config["indices"]), 10).madds * 0.8   # (192/224)^2 = 0.73


def test_state_is_saved_after_each_child(tmp_path):
    run, _ = make_run(tmp_path)
    run.next_config("a")
    run.next_config("b")
    run.complete("a", ok())
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["issued"] == 2 and list(state["in_flight"]) == ["b"]


def test_resume_with_a_child_in_flight_redoes_it_and_loses_nothing(tmp_path):
    run, store = make_run(tmp_path, samples=4)
    first = [run.next_config(f"t{i}") for i in range(3)]
    run.complete("t0", ok())
    run.complete("t2", ok())
    # the driver dies here with t1 in flight
    store.close()
    resumed, store2 = make_run(tmp_path, samples=4, seed=99)   # a different seed: the state must win
    resumed.load()
    assert resumed.completed == 2
    redo = resumed.next_config("new-1")
    assert redo["indices"] == first[1]["indices"] and redo["sample"] == 1
    fresh = resumed.next_config("new-2")
    assert fresh["sample"] == 3
    assert resumed.next_config("new-3") is None
    resumed.complete("new-1", ok())
    resumed.complete("new-2", ok())
    samples = sorted(r["sample"] for r in store2.records())
    assert samples == [0, 1, 2, 3]          # each sample exactly once


def test_resume_continues_the_strategy_exactly(tmp_path):
    uninterrupted, _ = make_run(tmp_path / "a", samples=6)
    interrupted, store = make_run(tmp_path / "b", samples=6)
    for run in (uninterrupted, interrupted):
        for i in range(3):
            run.next_config(f"t{i}")
            run.complete(f"t{i}", ok())
    store.close()
    resumed, _ = make_run(tmp_path / "b", samples=6, seed=5)
    resumed.load()
    for i in range(3, 6):
        assert resumed.next_config(f"t{i}")["indices"] == uninterrupted.next_config(f"t{i}")["indices"]


def test_replays_a_child_stored_but_not_yet_in_the_state(tmp_path):
    run, store = make_run(tmp_path, samples=2)
    run.next_config("t0")
    run.save()                                   # state says t0 is in flight
    saved = (tmp_path / STATE_FILE).read_text()
    run.complete("t0", ok())                     # stored ...
    (tmp_path / STATE_FILE).write_text(saved)    # ... but the driver died before saving the state
    store.close()
    resumed, _ = make_run(tmp_path, samples=2)
    resumed.load()
    assert resumed.retry == [] and resumed.best_reward is not None
    assert resumed.next_config("t1")["sample"] == 1
    assert resumed.next_config("t2") is None


def test_resume_errors_are_clear(tmp_path):
    run, _ = make_run(tmp_path)
    with pytest.raises(ValueError, match="cannot resume: no searcher_state.json"):
        run.load()
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        run.load()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_a_child_without_its_latency_is_a_recorded_failure(tmp_path):
    run, store = make_run(tmp_path, samples=1)
    run.next_config("t0")
    run.complete("t0", {"accuracy": 0.9, "latencies": {}, "latency_source": "pixel1"})
    row = store.child("t0")
    assert row["status"] == "failed" and row["failure_code"] == "no_latency"


def test_summary_accounts_for_the_drivers_own_time(tmp_path, monkeypatch):
    """On a clock that only the work moves: proposing costs 2 ticks, observing 3, each store write 5 and each
    state write 7, so every second the driver spends is accounted to the right part, exactly."""
    now = [0.0]

    class TimedStrategy(RandomStrategy):
        def propose(self):
            now[0] += 2
            return super().propose()

        def observe(self, proposal, reward):
            now[0] += 3
            return super().observe(proposal, reward)

    class TimedStore(ResultStore):
        def add_child(self, record):
            now[0] += 5
            return super().add_child(record)

    space = load_space("mnasnet-small")
    run = SearchRun(space, TimedStrategy(space.choice_counts, seed=0), ToyReward(),
                    TimedStore(str(tmp_path / "results.sqlite")), samples=3, run_dir=str(tmp_path),
                    clock=lambda: now[0])
    saves = []
    real_save = fileio.atomic_write

    def timed_write(path, data, before_replace=None):
        now[0] += 7
        saves.append(path)
        real_save(path, data, before_replace)

    monkeypatch.setattr(fileio, "atomic_write", timed_write)
    for i in range(3):
        run.next_config(f"t{i}")
        run.complete(f"t{i}", ok())
    assert run.summary()["timings"] == {"propose": 3 * 2, "observe": 3 * 3, "store": 3 * 5,
                                        "state": len(saves) * 7}
    assert len(saves) == 6                      # a write-ahead save at each proposal, one after each child
