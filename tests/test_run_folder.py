"""A run folder cannot be overwritten, mixed or lost: one owner at a time, a search only in a new or empty folder,
a resume only of the same run with its children all there, nothing written before the checks pass, and
read-only access to a folder the reader may not write.

Searches here are scored by a surrogate (the session's `surrogate_model`), so each runs in process in seconds.
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile

import pytest

from conftest import record_reliability
from mnas.results.store import ResultStore
from mnas.search.runlock import LOCK_FILE, RunInUse, RunLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(folder, model, **changes):
    data = {"name": "folder", "space": "mnasnet", "strategy": "random", "samples": 6, "seed": 1,
            "latency": ["pixel1"], "reward": {"preset": "soft", "target_ms": 75}, "surrogate": {"model": str(model)}}
    data.update(changes)
    path = folder / f"config-{len(list(folder.glob('config-*')))}.yaml"
    path.write_text(json.dumps(data))
    return path


def _mnas(*argv, timeout=300):
    return subprocess.run([sys.executable, "launch.py", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=dict(os.environ, MNAS_RAY_TMPDIR="/nonexistent-no-ray"))


def _one_line_error(result, needle):
    assert result.returncode == 2, result.stdout + result.stderr
    assert needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def finished_run(tmp_path, surrogate_model):
    run = tmp_path / "run"
    result = _mnas("search", "--config", str(_config(tmp_path, surrogate_model)), "--out", str(run), "--quiet")
    assert result.returncode == 0, result.stderr
    return run


def _snapshot(run):
    """Every file of the run folder with its bytes (the store's WAL files and the lock file aside)."""
    return {name: (run / name).read_bytes() for name in sorted(os.listdir(run))
            if not name.startswith(LOCK_FILE) and not name.endswith(("-wal", "-shm"))}


def test_a_refused_resume_writes_nothing(tmp_path, surrogate_model, finished_run):
    before = _snapshot(finished_run)
    other = _config(tmp_path, surrogate_model, seed=2, reward={"preset": "hard", "target_ms": 75})
    result = _mnas("search", "--config", str(other), "--out", str(finished_run), "--resume")
    _one_line_error(result, "cannot resume")
    assert "seed: 1 -> 2" in result.stderr and "reward.preset: 'soft' -> 'hard'" in result.stderr
    assert _snapshot(finished_run) == before                     # config.json, store and state untouched
    record_reliability("run_folder", case="resume with another seed and reward", refused=1, written=0)


@pytest.mark.parametrize("change, needle", [
    ({"proxy": {"epochs": 2}}, "proxy.epochs: 1 -> 2"),
    ({"latency": ["host"]}, "latency: ['pixel1'] -> ['host']"),
    ({"space": "mnasnet-a1"}, "space"),                           # same choice counts, another space
    ({"strategy": "evolution"}, "strategy: 'random' -> 'evolution'"),
])
def test_resume_must_match_the_runs_fingerprint(tmp_path, surrogate_model, finished_run, change, needle):
    if change.get("space") == "mnasnet-a1":
        change["surrogate"] = {"model": str(surrogate_model)}     # (the surrogate refuses a1 only later)
    result = _mnas("search", "--config", str(_config(tmp_path, surrogate_model, **change)), "--out",
                   str(finished_run), "--resume")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert needle in result.stderr
    record_reliability("run_folder", case=f"resume with another {needle.split(':')[0]}", refused=1, written=0)


def test_resume_may_grow_samples_and_takes_the_runs_own_config(finished_run):
    result = _mnas("search", "--out", str(finished_run), "--resume", "--samples", "9", "--quiet")
    assert result.returncode == 0, result.stderr
    with ResultStore(finished_run, readonly=True) as store:
        assert store.count() == 9 and store.get_meta("config")["samples"] == 9
    assert json.loads((finished_run / "config.json").read_text())["samples"] == 9


def test_a_run_saved_before_the_split_setting_resumes_on_the_file_order_split(tmp_path, surrogate_model,
                                                                              finished_run):
    """A run saves the split it trains on; a run saved before `split` existed trained on the file-order slices,
    and a resume keeps them whatever ProxyConfig's default has become (or is refused if the config says otherwise)."""
    saved = json.loads((finished_run / "config.json").read_text())
    assert saved["proxy"]["split"] == "random"                    # written out, though the config did not say it
    # the same run as an older version saved it: no split anywhere
    del saved["proxy"]["split"]
    (finished_run / "config.json").write_text(json.dumps(saved))
    with ResultStore(finished_run) as store:
        store.set_meta("config", saved)
    result = _mnas("search", "--config", str(_config(tmp_path, surrogate_model)), "--out", str(finished_run),
                   "--resume")
    _one_line_error(result, "proxy.split: 'file-order' -> 'random'")
    result = _mnas("search", "--out", str(finished_run), "--resume", "--samples", "7", "--quiet")
    assert result.returncode == 0, result.stderr                 # its own config: the split it ran on
    assert json.loads((finished_run / "config.json").read_text())["proxy"]["split"] == "file-order"


def test_a_search_starts_only_in_a_new_or_empty_folder(tmp_path, surrogate_model, finished_run):
    config = str(_config(tmp_path, surrogate_model))
    _one_line_error(_mnas("search", "--config", config, "--out", str(finished_run)), "already holds a search")
    training = tmp_path / "trained"
    training.mkdir()
    (training / "config.json").write_text('{"arch": "r1_k3_s11_e1_i32_o16"}')
    _one_line_error(_mnas("search", "--config", config, "--out", str(training)), "is not empty (config.json)")
    assert (training / "config.json").read_text() == '{"arch": "r1_k3_s11_e1_i32_o16"}'
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    _one_line_error(_mnas("search", "--config", config, "--out", str(a_file)), "is a file, not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _mnas("search", "--config", config, "--out", str(empty), "--quiet").returncode == 0
    record_reliability("run_folder", case="a new search over a run, a training run's folder and a file", refused=3,
                       written=0)


def test_one_owner_at_a_time_and_the_lock_dies_with_its_process(tmp_path, surrogate_model, finished_run):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]);"
         "from mnas.search.runlock import RunLock; RunLock(sys.argv[1]).acquire(); print('locked', flush=True);"
         "time.sleep(600)", str(finished_run), ROOT], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"       # the event, not a sleep
        result = _mnas("search", "--out", str(finished_run), "--resume", "--samples", "8")
        _one_line_error(result, f"is in use by process {holder.pid}")
        with pytest.raises(RunInUse, match=str(holder.pid)):
            RunLock(str(finished_run)).acquire()
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        with RunLock(str(fresh)):                                   # a new folder being started by someone else
            _one_line_error(_mnas("search", "--config", str(_config(tmp_path, surrogate_model)), "--out",
                                  str(fresh)), "is in use by process")
        assert sorted(os.listdir(fresh)) == [LOCK_FILE]             # the refused search wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(str(finished_run)):                                # released by the kernel on SIGKILL
        pass
    with ResultStore(finished_run, readonly=True) as store:
        assert store.count() == 6                                   # the refused resume evaluated nothing
    record_reliability("run_folder", case="a second owner (search and resume) beside a live one; the lock after "
                       "SIGKILL", refused=2, written=0)


def test_resume_refuses_a_store_that_lost_children(finished_run):
    with sqlite3.connect(finished_run / "results.sqlite") as conn:
        conn.execute("DELETE FROM children WHERE sample IN (1, 4)")
    before = _snapshot(finished_run)
    _one_line_error(_mnas("search", "--out", str(finished_run), "--resume"),
                    "its store lacks 2 of the 6 children the search state counts as proposed and done (samples 1, 4)")
    assert _snapshot(finished_run) == before
    (finished_run / "results.sqlite").unlink()
    for leftover in ("results.sqlite-wal", "results.sqlite-shm"):
        (finished_run / leftover).unlink(missing_ok=True)
    _one_line_error(_mnas("search", "--out", str(finished_run), "--resume"), "results store (results.sqlite) is missing")
    assert not (finished_run / "results.sqlite").exists()           # and no empty store was created
    record_reliability("run_folder", case="resume after 2 children were deleted from the store, and after the "
                       "store was deleted", refused=2, written=0)


@pytest.mark.parametrize("state, needle", [
    ([], "is not a search state"),
    ({"version": 1, "issued": 2, "in_flight": {"t1": {"indices": [0]}}, "retry": []}, "lacks its 'sample'"),
])
def test_resume_refuses_a_malformed_state(finished_run, state, needle):
    (finished_run / "searcher_state.json").write_text(json.dumps(state))
    _one_line_error(_mnas("search", "--out", str(finished_run), "--resume"), needle)
    record_reliability("run_folder", case=f"resume from a malformed state ({needle})", refused=1, written=0)


def test_a_store_with_garbage_in_its_middle_pages_is_named_corrupt(finished_run):
    path = finished_run / "results.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'children'").fetchone()[0]
    assert pages > root
    data = bytearray(path.read_bytes())
    start = (root - 1) * page                                       # the children table's pages: not the header's
    data[start:start + page] = b"\x5a" * page
    path.write_bytes(bytes(data))
    result = _mnas("results", str(finished_run))
    _one_line_error(result, "is corrupt")
    assert "integrity_check" in result.stderr
    record_reliability("run_folder", case="a store with a garbage page", refused=1, written=0)


_SETPRIV = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _unprivileged(command):
    """`command` as a user who may not write the folders root made (root itself may write anywhere); skips when
    that user cannot run this checkout's interpreter or read its code (a clone in a private home folder)."""
    if os.geteuid() != 0:
        return command
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot act as an unprivileged user")
    probe = subprocess.run([*_SETPRIV, sys.executable, "-c", "open('launch.py').close()"], cwd=ROOT,
                           capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("the unprivileged user cannot run this checkout's Python or read its code")
    return [*_SETPRIV, *command]


def _shared_folder():
    base = tempfile.mkdtemp(prefix="mnas-perm-")
    os.chmod(base, 0o755)
    return base


def test_a_store_or_folder_without_permission_is_one_line(surrogate_model):
    base = _shared_folder()
    try:
        run = os.path.join(base, "run")
        config = os.path.join(base, "config.yaml")
        model = shutil.copy(surrogate_model, os.path.join(base, "surrogate.json"))   # readable by the other user
        os.chmod(model, 0o644)
        with open(config, "w") as handle:
            json.dump({"name": "perm", "strategy": "random", "samples": 3, "latency": ["pixel1"],
                       "reward": {"preset": "soft", "target_ms": 75}, "surrogate": {"model": model}}, handle)
        assert _mnas("search", "--config", config, "--out", run, "--quiet").returncode == 0
        os.chmod(run, 0o755)
        for name in os.listdir(run):
            os.chmod(os.path.join(run, name), 0o644)
        env = dict(os.environ, HOME=base, KERAS_HOME=os.path.join(base, "k"), MNAS_RAY_TMPDIR="/nonexistent-no-ray")
        resume = subprocess.run(_unprivileged([sys.executable, "launch.py", "search", "--out", run, "--resume",
                                               "--samples", "5"]), capture_output=True, text=True, cwd=ROOT,
                                timeout=300, env=env)
        _one_line_error(resume, "cannot take the run folder")
        os.chmod(os.path.join(run, "results.sqlite"), 0o000)
        listed = subprocess.run(_unprivileged([sys.executable, "launch.py", "results", run]), capture_output=True,
                                text=True, cwd=ROOT, timeout=120, env=env)
        _one_line_error(listed, "no permission to read it")
        record_reliability("run_folder", case="a resume in a folder the user may not write; a store the user may not "
                           "read", refused=2, written=0)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_full_disk_stops_the_search_with_resume_advice(tmp_path, surrogate_model, monkeypatch, capsys):
    """ENOSPC while storing a child: one line that says the disk is full and that --resume continues."""
    import errno

    from mnas import cli
    from mnas.results import store as store_module

    real = store_module.ResultStore.add_child
    calls = []

    def full_after_two(self, record):
        calls.append(record["sample"])
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real(self, record)

    run = tmp_path / "run"
    config = str(_config(tmp_path, surrogate_model))
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(store_module.ResultStore, "add_child", full_after_two)
    assert cli.main(["search", "--config", config, "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mnas search: error: the disk is full") and "--resume" in err[-1]
    monkeypatch.setattr(store_module.ResultStore, "add_child", real)          # space freed
    assert cli.main(["search", "--out", str(run), "--resume", "--quiet"]) == 0
    with ResultStore(run, readonly=True) as store:
        assert sorted(store.children()["sample"]) == list(range(6))           # nothing lost, nothing twice
    record_reliability("run_folder", case="the disk full while storing a child, then --resume", refused=1,
                       written=0)


def test_a_run_in_a_folder_the_reader_cannot_write_can_be_read(surrogate_model):
    """WAL readers create a -shm file beside the store; where they may not, the store is read as immutable."""
    base = tempfile.mkdtemp(prefix="mnas-ro-")
    try:
        os.chmod(base, 0o755)
        run = os.path.join(base, "run")
        config = os.path.join(base, "config.yaml")
        with open(config, "w") as handle:
            json.dump({"name": "ro", "strategy": "random", "samples": 4, "latency": ["pixel1"],
                       "reward": {"preset": "soft", "target_ms": 75}, "surrogate": {"model": str(surrogate_model)}},
                      handle)
        assert _mnas("search", "--config", config, "--out", run, "--quiet").returncode == 0
        for name in os.listdir(run):
            os.chmod(os.path.join(run, name), 0o644)
        os.chmod(run, 0o555)
        reader = _unprivileged([sys.executable, "launch.py", "results", run, "--json"])   # root writes anywhere
        env = dict(os.environ, HOME=base, KERAS_HOME=os.path.join(base, "k"), MPLCONFIGDIR=os.path.join(base, "m"))
        result = subprocess.run(reader, capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)) == 4
        record_reliability("run_folder", case="a run read by a user who may not write its folder", refused=0,
                           written=0)
        assert sorted(os.listdir(run)) == sorted([".lock", "config.json", "results.sqlite", "searcher_state.json"])
    finally:
        os.chmod(os.path.join(base, "run"), 0o755) if os.path.isdir(os.path.join(base, "run")) else None
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="needs the proxy data set")
def test_a_ray_folder_that_cannot_hold_ray_stops_the_search_before_any_write(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "launch.py", "search", "--config", "configs/smoke.yaml", "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env=dict(os.environ, MNAS_RAY_TMPDIR=str(a_file)))
    _one_line_error(result, "cannot hold Ray's session")
    assert not out.exists()


def test_an_out_folder_that_cannot_be_made_is_one_line(tmp_path, surrogate_model, monkeypatch, capsys):
    """--out with a component over 255 characters, or on a read-only file system: one line, nothing written."""
    import errno

    from mnas import cli

    monkeypatch.chdir(ROOT)
    config = str(_config(tmp_path, surrogate_model))
    too_long = tmp_path / ("x" * 300)
    assert cli.main(["search", "--config", config, "--out", str(too_long)]) == 2
    assert "cannot create the run folder" in capsys.readouterr().err
    real = os.makedirs

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", read_only)
    assert cli.main(["search", "--config", config, "--out", str(tmp_path / "ro" / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Read-only file system" in err[0] and not (tmp_path / "ro").exists()
    record_reliability("run_folder", case="--out too long a name, or on a read-only file system", refused=2,
                       written=0)
