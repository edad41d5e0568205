"""`launch.py search`: bad input fails fast with one line; a smoke search runs end to end through Ray, killed and
resumed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from conftest import record_reliability
from test_crash_resume import check_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_DATA = os.path.isdir("/usr/share/datasets/fashion-mnist")


def mnas(*argv, env_extra=None, timeout=600):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "launch.py", *argv], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


@pytest.mark.parametrize("argv, needle", [
    (["--config", "configs/nope.yaml"], "config file 'configs/nope.yaml' not found"),
    (["--config", "configs/smoke.yaml", "--samples", "0"], "samples must be a positive integer"),
    (["--config", "configs/smoke.yaml", "--latency", "sundial"], "sundial"),
    (["--config", "configs/smoke.yaml", "--target-ms", "-5"], "target"),
    (["--config", "configs/smoke.yaml", "--strategy", "annealing"], "invalid choice: 'annealing'"),
])
def test_bad_input_is_one_line_status_2_and_writes_nothing(tmp_path, argv, needle):
    out = tmp_path / "run"
    result = mnas("search", *argv, "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_bad_config_sections(tmp_path):
    for text, needle in [("samples: 3\ncolour: red\n", "unknown setting(s) colour"),
                         ("proxy: {epochz: 3}\n", "epochz"),
                         ("controller: {lstm_unitz: 3}\n", "lstm_unitz"),
                         ("reward: {target_ms: 75}\n", "give a preset"),
                         ("space: [1, 2\n", "not valid YAML")]:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        result = mnas("search", "--config", str(path), "--out", str(tmp_path / "run"))
        assert result.returncode == 2, (text, result.stderr)
        assert needle in result.stderr, (text, result.stderr)
        assert not (tmp_path / "run").exists()


def test_refuses_to_overwrite_a_run_and_resume_needs_one(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.sqlite").write_text("")
    result = mnas("search", "--config", "configs/smoke.yaml", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "already holds a search" in result.stderr
    result = mnas("search", "--config", "configs/smoke.yaml", "--out", str(tmp_path / "other"), "--resume")
    assert result.returncode == 2 and "no search to continue" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DATA, reason="needs Debian's dataset-fashion-mnist (make test installs it)")
def test_smoke_search_through_ray_survives_sigkill_resumes_extends_and_stops_on_ctrl_c(tmp_path):
    """The real `launch.py search` through Ray, three times on one folder: SIGKILLed in its first PPO update (two
    children stored, the update only in memory: the one real SIGKILL of the suite; test_crash_resume.py crashes the
    driver at every named moment in-process), resumed to the end, then resumed with a larger budget and stopped
    with Ctrl-C. Nothing lost, nothing twice, the first children kept as they were."""
    ray_tmp = tempfile.mkdtemp(prefix="mr", dir="/tmp")   # Ray's socket paths must stay short
    env = {"MNAS_RAY_TMPDIR": ray_tmp}
    run_dir = tmp_path / "run"
    try:
        killed = mnas("search", "--config", "configs/smoke.yaml", "--out", str(run_dir), "--samples", "3",
                      env_extra={**env, "MNAS_CRASH_AT": "update:1"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        assert check_store(run_dir) == [0, 1]          # both children of the update stored before it

        result = mnas("search", "--config", "configs/smoke.yaml", "--out", str(run_dir), "--samples", "3",
                      "--resume", env_extra=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "resuming" in result.stderr and "[   3/3]" in result.stderr and "results.sqlite" in result.stdout
        # where the dashboard is: at the start to watch the search live, at the end to look at its results
        # (as mnas_prefix() spells the command from here: tests/test_newcomer.py checks its forms)
        assert f"mnas dashboard {run_dir}" in result.stderr.split("[   3/3]")[0]
        assert f"mnas dashboard {run_dir}" in result.stdout and "http://127.0.0.1:8050" in result.stdout
        listing = mnas("results", str(run_dir), "--json")
        children = json.loads(listing.stdout)
        assert sorted(c["sample"] for c in children) == check_store(run_dir) == [0, 1, 2]
        assert all(c["status"] == "ok" and 0 <= c["accuracy"] <= 1 and c["latency_ms"] > 0 and c["reward"] > 0
                   for c in children)
        state = json.loads((run_dir / "searcher_state.json").read_text())
        # the killed update was redone from the stored children: each child fed to PPO once (3 children, batch 2)
        assert state["issued"] == 3 and state["in_flight"] == {} and state["strategy"]["step"] == 1

        # --resume with a larger budget continues the same search; Ctrl-C once a new child is in: the search says
        # how to continue it (our --resume, not Tune's Tuner.restore advice), and the first three are kept
        process = subprocess.Popen([sys.executable, "launch.py", "search", "--out", str(run_dir), "--samples", "40",
                                    "--resume"], cwd=ROOT, env=dict(os.environ, **env), text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   # a test run in the background inherits SIGINT ignored: give the search Ctrl-C
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            for line in process.stderr:              # the event: the first new child is in
                if "[   4/40]" in line:
                    break
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=300)   # Ray shuts its workers down; slow on a busy machine
        finally:
            process.kill()
        assert process.returncode == 130, err[-3000:]
        assert f"mnas search --out {run_dir} --resume" in err and "Tuner.restore" not in out + err
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    again = json.loads(mnas("results", str(run_dir), "--json", "--status", "all").stdout)
    samples = sorted(c["sample"] for c in again)
    # two children were in flight: whichever finished first is the fourth (the other is redone on --resume)
    assert samples[:3] == [0, 1, 2] and len(samples) >= 4 and len(samples) == len(set(samples))
    before = {c["trial_id"]: c for c in children}
    assert all(before[c["trial_id"]] == c for c in again if c["trial_id"] in before)
    assert sum(c["trial_id"] in before for c in again) == 3
    record_reliability("search_cli_kill", kills=1, moments=["update:1"], resumes=1, requested=3,
                       stored=len(children), lost=len({0, 1, 2} - {c["sample"] for c in children}),
                       twice=len(children) - len({c["sample"] for c in children}), step=state["strategy"]["step"],
                       expected_step=1)


def test_the_strategy_names_a_config_accepts_are_the_strategies_there_are():
    from mnas.search.config import STRATEGY_NAMES
    from mnas.search.strategy import STRATEGIES

    assert STRATEGY_NAMES == tuple(STRATEGIES)


def test_command_line_overrides_come_from_the_config_fields():
    """--samples, --workers, --strategy and --seed are derived from SearchConfig's fields: their types, choices
    and help come with them, and a value the command line gives wins over the file's."""
    import argparse

    from mnas.commands.search import add_arguments, load_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--config", "configs/smoke.yaml", "--samples", "7", "--strategy", "evolution",
                              "--seed", "3"])
    config = load_config(args)
    assert (config.samples, config.strategy, config.seed) == (7, "evolution", 3)
    assert load_config(parser.parse_args(["--config", "configs/smoke.yaml"])).workers == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--strategy", "annealing"])
    flags = {action.dest: action for action in parser._actions}
    assert flags["samples"].type is int and "children to evaluate" in flags["samples"].help
    assert flags["strategy"].choices == ("mnas", "random", "evolution")
