"""SIGKILL the search driver at exact moments, resume each time: nothing lost, nothing twice.

The driver here is the real `SearchRun` with the real controller (LSTM + PPO) and results store; children are
scored by an arithmetic stand-in instead of Ray workers, so each process lives a few seconds. The kill points
are the moments that matter for consistency: before a child is stored, between the store and the state file
(the child is stored but not yet fed to the controller), right after a PPO update (the update exists only in
memory), and in the middle of writing the state file (the temporary file is written, not yet renamed).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import record_reliability

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES, BATCH = 12, 2

DRIVER = textwrap.dedent(f"""
    import os, sys, time
    sys.path.insert(0, {ROOT!r})
    from mnas.results.store import ResultStore
    from mnas.search.driver import SearchRun, STATE_FILE
    from mnas.search.registry import load_space
    from mnas.search.reward import Reward
    from mnas.search.strategy import make_strategy

    run_dir = sys.argv[1]
    space = load_space("mnasnet-small")
    strategy = make_strategy("mnas", space.choice_counts, seed=0, settings={{"batch_size": {BATCH}}})
    run = SearchRun(space, strategy, Reward.from_settings({{"preset": "soft", "target_ms": 75}}, ["pixel1"]),
                    ResultStore(run_dir), samples={SAMPLES}, run_dir=run_dir)
    if os.path.exists(os.path.join(run_dir, STATE_FILE)):
        run.load()
    else:
        run.save()
    print("ready", flush=True)
    pending, trial = [], 0
    while not (run.finished and not pending):
        while len(pending) < 2 and not run.finished:       # two children in flight, finishing in turn
            trial += 1
            tid = f"p{{os.getpid()}}-{{trial}}"
            run.next_config(tid)
            pending.append(tid)
        tid = pending.pop(0)
        indices = run.in_flight[tid]["indices"]
        time.sleep(float(os.environ.get("CHILD_SECONDS", "0")))
        accuracy = 0.5 + 0.4 * sum(indices) / (3 * len(indices))
        run.complete(tid, {{"accuracy": accuracy, "latencies": {{"pixel1": 20.0 + sum(indices)}},
                          "latency_source": "pixel1"}})
    print("finished", run.completed, run.strategy.step, flush=True)
""")


def start(run_dir, script, crash_at=None, child_seconds=0.0):
    env = dict(os.environ, CHILD_SECONDS=str(child_seconds))
    env.pop("MNAS_CRASH_AT", None)
    if crash_at:
        env["MNAS_CRASH_AT"] = crash_at
    return subprocess.Popen([sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def check_store(run_dir):
    from mnas.results.store import ResultStore

    with ResultStore(run_dir, readonly=True) as store:
        rows = store.records()
    samples = [r["sample"] for r in rows]
    assert len(samples) == len(set(samples)), "a child was evaluated twice"
    assert all(r["status"] == "ok" for r in rows)
    return sorted(samples)


def test_sigkill_at_named_moments_loses_nothing(tmp_path):
    """Every kill lands at a named crash point (`search.driver.crash_point`), each at a chosen pass: the same
    moments on every run, on a loaded machine or an idle one, where a sleep before a kill would land anywhere."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    run_dir = tmp_path / "run"
    kills = ["store:2", "feed:3", "update:1", "save:4", "feed:2", "save:3", "store:1"]
    seen_steps, stored = [], []
    for kill in kills:
        proc = start(run_dir, script, crash_at=kill)
        proc.wait(timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
        samples = check_store(run_dir)
        # children finish in sampling order here, so what is stored is always a prefix, and it only grows
        assert samples == list(range(len(samples)))
        assert len(samples) >= (stored[-1] if stored else 0)
        stored.append(len(samples))
        state = json.loads((run_dir / "searcher_state.json").read_text())
        seen_steps.append(state["strategy"]["step"])
        # a kill while the state is written may leave its temporary file; the next start removes it
    assert seen_steps == sorted(seen_steps), f"the controller's step went backwards: {seen_steps}"
    assert 0 < stored[-1] < SAMPLES

    proc = start(run_dir, script)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    assert check_store(run_dir) == list(range(SAMPLES))        # exactly the requested children, each once
    done, step = out.split()[-2:]
    assert int(done) == SAMPLES
    assert int(step) == SAMPLES // BATCH                        # every child fed to PPO exactly once
    assert not [f for f in os.listdir(run_dir) if f.startswith(".tmp-")]
    final = check_store(run_dir)
    record_reliability("driver_kill", kills=len(kills), moments=kills, resumes=len(kills), requested=SAMPLES,
                       stored=len(final), lost=len(set(range(SAMPLES)) - set(final)),
                       twice=len(final) - len(set(final)), step=int(step), expected_step=SAMPLES // BATCH)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="needs dataset-fashion-mnist")
def test_the_real_search_command_killed_in_a_ppo_update_and_while_storing_resumes(tmp_path):
    """`launch.py search` through Ray, SIGKILLed twice at exact moments, then resumed to the end."""
    import shutil
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="mk", dir="/tmp")
    run_dir = tmp_path / "run"
    base = [sys.executable, "launch.py", "search", "--config", "configs/smoke.yaml", "--out", str(run_dir),
            "--samples", "5", "--quiet"]
    try:
        crashes = ["update:1", "store:2", None]
        for attempt, crash_at in enumerate(crashes):
            env = dict(os.environ, MNAS_RAY_TMPDIR=ray_tmp)
            env.pop("MNAS_CRASH_AT", None)
            if crash_at:
                env["MNAS_CRASH_AT"] = crash_at
            argv = base + (["--resume"] if attempt else [])
            result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            expected = -signal.SIGKILL if crash_at else 0
            assert result.returncode == expected, result.stderr[-3000:]
            check_store(run_dir)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert check_store(run_dir) == [0, 1, 2, 3, 4]
    state = json.loads((run_dir / "searcher_state.json").read_text())
    assert state["strategy"]["step"] == 2 and state["in_flight"] == {}   # 5 children, PPO batches of 2
    final = check_store(run_dir)
    record_reliability("search_cli_kill", kills=len(crashes) - 1, moments=crashes[:-1], resumes=len(crashes) - 1,
                       requested=5, stored=len(final), lost=len(set(range(5)) - set(final)),
                       twice=len(final) - len(set(final)), step=state["strategy"]["step"], expected_step=2)
