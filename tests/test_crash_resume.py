"""Crash the search driver at exact moments, resume each time: nothing lost, nothing twice.

The driver here is the real `SearchRun` with the real controller (LSTM + PPO) and results store; children are
scored by an arithmetic stand-in instead of Ray workers. The crash points are the moments that matter for
consistency: before a child is stored, between the store and the state file (the child is stored but not yet fed
to the controller), right after a PPO update (the update exists only in memory), and in the middle of writing the
state file (the temporary file is written, not yet renamed). The first test crashes the driver in the test's own
process (MNAS_CRASH_MODE=raise: the crash point raises, the driver's objects are thrown away, a new driver resumes
from the files, as a new process would), at seven moments in a row. The real `launch.py search` through Ray is
SIGKILLed in its first PPO update and resumed in tests/test_search_cli.py (in the smoke search, which runs anyway).
"""

import json
import os

import pytest

from conftest import record_reliability
from mnas.search import driver as driver_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES, BATCH = 12, 2


def drive(run_dir, attempt: int) -> tuple[int, int]:
    """A search of SAMPLES children with two in flight, finishing in turn, resumed if `run_dir` holds one: what
    `commands/search` does through Ray, with an arithmetic accuracy; trial ids are new each `attempt` (Ray's are
    new each process). Returns (children completed, PPO step)."""
    from mnas.results.store import ResultStore
    from mnas.search.driver import STATE_FILE, SearchRun
    from mnas.search.registry import load_space
    from mnas.search.reward import Reward
    from mnas.search.strategy import make_strategy

    space = load_space("mnasnet-small")
    strategy = make_strategy("mnas", space.choice_counts, seed=0, settings={"batch_size": BATCH})
    store = ResultStore(str(run_dir))
    try:
        run = SearchRun(space, strategy, Reward.from_settings({"preset": "soft", "target_ms": 75}, ["pixel1"]),
                        store, samples=SAMPLES, run_dir=str(run_dir))
        if os.path.exists(os.path.join(run_dir, STATE_FILE)):
            run.load()
        else:
            run.save()
        pending, trial = [], 0
        while not (run.finished and not pending):
            while len(pending) < 2 and not run.finished:
                trial += 1
                tid = f"a{attempt}-{trial}"
                run.next_config(tid)
                pending.append(tid)
            tid = pending.pop(0)
            indices = run.in_flight[tid]["indices"]
            accuracy = 0.5 + 0.4 * sum(indices) / (3 * len(indices))
            run.complete(tid, {"accuracy": accuracy, "latencies": {"pixel1": 20.0 + sum(indices)},
                               "latency_source": "pixel1"})
        return run.completed, run.strategy.step
    finally:
        store.close()   # what the end of a killed process does to its connection


def check_store(run_dir):
    from mnas.results.store import ResultStore

    with ResultStore(run_dir, readonly=True) as store:
        rows = store.records()
    samples = [r["sample"] for r in rows]
    assert len(samples) == len(set(samples)), "a child was evaluated twice"
    assert all(r["status"] == "ok" for r in rows)
    return sorted(samples)


def test_crashes_at_named_moments_lose_nothing(tmp_path, monkeypatch):
    """Every crash lands at a named crash point (`search.driver.crash_point`), each at a chosen pass: the same
    moments on every run, on a loaded machine or an idle one, where a sleep before a kill would land anywhere."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setenv(driver_module.CRASH_MODE_ENV, "raise")
    kills = ["store:2", "feed:3", "update:1", "save:4", "feed:2", "save:3", "store:1"]
    seen_steps, stored = [], []
    for attempt, kill in enumerate(kills):
        monkeypatch.setenv(driver_module.CRASH_ENV, kill)
        monkeypatch.setattr(driver_module, "_crash_hits", {})     # a new process counts the passes from zero
        with pytest.raises(driver_module.SimulatedCrash):
            drive(run_dir, attempt)
        if kill.startswith("save:"):
            # SIGKILL here leaves the state's temporary file behind (an exception makes fileio remove it): put one
            # there as the kill would, for the next start to clear away.
            (run_dir / ".tmp-killed.part").write_text('{"half": ')
        samples = check_store(run_dir)
        # children finish in sampling order here, so what is stored is always a prefix, and it only grows
        assert samples == list(range(len(samples)))
        assert len(samples) >= (stored[-1] if stored else 0)
        stored.append(len(samples))
        state = json.loads((run_dir / "searcher_state.json").read_text())
        seen_steps.append(state["strategy"]["step"])
    assert seen_steps == sorted(seen_steps), f"the controller's step went backwards: {seen_steps}"
    assert 0 < stored[-1] < SAMPLES

    monkeypatch.delenv(driver_module.CRASH_ENV)
    done, step = drive(run_dir, len(kills))
    assert check_store(run_dir) == list(range(SAMPLES))        # exactly the requested children, each once
    assert done == SAMPLES
    assert step == SAMPLES // BATCH                              # every child fed to PPO exactly once
    assert not [f for f in os.listdir(run_dir) if f.startswith(".tmp-")]
    final = check_store(run_dir)
    record_reliability("driver_kill", how="in-process", kills=len(kills), moments=kills, resumes=len(kills), requested=SAMPLES,
                       stored=len(final), lost=len(set(range(SAMPLES)) - set(final)),
                       twice=len(final) - len(set(final)), step=step, expected_step=SAMPLES // BATCH)
