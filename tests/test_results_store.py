"""The results store: round trips, the never-overwrite rule, bad input, export, and readers during writes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import record_reliability
from mnas.results.export import export_frame, read_export
from mnas.results.schema import COLUMN_NAMES, encode_child
from mnas.results.store import STORE_FILENAME, NoStoreError, ResultStore

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

A1 = ("r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24 r3_k5_s22_e3_i24_o40_se0.25 r4_k3_s22_e6_i40_o80 "
      "r2_k3_s11_e6_i80_o112_se0.25 r3_k5_s22_e6_i112_o160_se0.25 r1_k3_s11_e6_i160_o320")


def expected_child(i: int) -> dict:
    """A complete, valid child whose every field is derived from i: a reader can tell a torn row from a whole one.

    Also imported by the writer subprocesses below.
    """
    return {
        "trial_id": f"trial_{i:05d}", "sample": i, "controller_step": i // 4, "strategy": "mnas",
        "arch": f"r1_k3_s11_e1_i32_o{16 + i}_noskip r2_k5_s22_e6_i{16 + i}_o24_se0.25",
        "indices": [i % 4, i % 2, i % 3] * 3, "accuracy": (i % 997) / 1000, "latency_ms": 20.0 + i / 8,
        "latency_source": "pixel1-predicted", "latencies": {"pixel1-predicted": 20.0 + i / 8, "host-tflite": i / 3},
        "reward": (i % 997) / 1000 * 0.9, "params": 1_000_000 + i, "madds": 300_000_000 + 7 * i, "status": "ok",
        "failure_code": None, "train_seconds": 50.0 + i, "eval_seconds": 2.5, "latency_seconds": 0.25,
        "total_seconds": 53.0 + i, "started_at": "2025-01-01T00:00:00+00:00",
        "finished_at": "2025-01-01T00:01:00+00:00", "extra": {"log_prob": -float(i), "check": f"trial_{i:05d}"},
        "accuracy_source": "proxy", "failure_detail": None,
    }


def failed_child(i: int) -> dict:
    return {"trial_id": f"failed_{i}", "sample": i, "arch": A1, "status": "failed", "failure_code": "nan_loss",
            "failure_detail": "loss nan at step 7", "reward": -1.0}


@pytest.fixture
def store(tmp_path):
    with ResultStore(tmp_path / "run") as store:
        yield store


# -- round trips -----------------------------------------------------------------------------------------------


def test_child_round_trips_through_the_store(store):
    record = expected_child(3)
    assert store.add_child(record) is True
    assert store.child("trial_00003") == record
    assert store.records() == [record]
    row = store.children().iloc[0]
    assert list(store.children().columns) == list(COLUMN_NAMES)
    assert row["arch"] == record["arch"] and row["params"] == record["params"]
    assert row["accuracy"] == record["accuracy"] and row["latencies"] == record["latencies"]


def test_json_columns_decode_to_python_objects(store):
    record = expected_child(1)
    record.update(indices=np.array([3, 1, 2]), latencies={"pixel1-predicted": np.float32(12.5)},
                  extra={"proxy": {"epochs": 1, "resolution": 28}, "log_prob": np.float64(-3.5)})
    store.add_child(record)
    row = store.children().iloc[0]
    assert row["indices"] == [3, 1, 2] and all(type(i) is int for i in row["indices"])
    assert row["latencies"] == {"pixel1-predicted": 12.5}
    assert row["extra"] == {"proxy": {"epochs": 1, "resolution": 28}, "log_prob": -3.5}


def test_arch_may_be_a_list_of_block_strings(store):
    store.add_child({"trial_id": "t", "arch": A1.split(), "status": "pruned"})
    assert store.child("t")["arch"] == A1


def test_nan_numbers_are_stored_as_missing(store):
    store.add_child({**failed_child(0), "accuracy": float("nan"), "train_seconds": 12.0})
    frame = store.children()
    assert frame["accuracy"].isna().all() and store.child("failed_0")["accuracy"] is None
    assert frame["train_seconds"].iloc[0] == 12.0


def test_empty_store_gives_typed_empty_frame(store):
    frame = store.children()
    assert frame.empty and list(frame.columns) == list(COLUMN_NAMES)
    assert str(frame["params"].dtype) == "Int64" and frame["accuracy"].dtype == "float64"
    assert store.count() == 0 and store.top(3).empty


def test_count_and_status_filter(store):
    for i in range(3):
        store.add_child(expected_child(i))
    store.add_child(failed_child(9))
    store.add_child({"trial_id": "p", "arch": A1, "status": "pruned"})
    assert (store.count(), store.count("ok"), store.count("failed"), store.count("pruned")) == (5, 3, 1, 1)
    assert list(store.children("failed")["trial_id"]) == ["failed_9"]
    assert store.has_child("p") and not store.has_child("q")
    with pytest.raises(ValueError, match="status must be one of"):
        store.count("done")


def test_children_come_in_storage_order(store):
    for i in (5, 2, 7):
        store.add_child(expected_child(i))
    assert list(store.children()["sample"]) == [5, 2, 7]


def test_top_ranks_by_column_and_skips_failures(store):
    for i in (10, 500, 300):
        store.add_child(expected_child(i))
    store.add_child({**failed_child(1), "reward": 5.0})  # a failed child never tops the table
    assert list(store.top(2)["sample"]) == [500, 300]
    assert list(store.top(1, by="latency_ms")["sample"]) == [10]  # latency: lower is better
    assert list(store.top(5, status="all")["trial_id"])[0] == "failed_1"
    with pytest.raises(ValueError, match="cannot rank by 'arch'"):
        store.top(1, by="arch")
    with pytest.raises(ValueError, match="positive integer"):
        store.top(0)


# -- never evaluated twice, never overwritten ---------------------------------------------------------------------


def test_re_adding_the_same_child_is_a_no_op(store):
    assert store.add_child(expected_child(1)) is True
    assert store.add_child(expected_child(1)) is False
    assert store.count() == 1


def test_re_adding_a_trial_with_different_content_is_refused(store):
    store.add_child(expected_child(1))
    changed = {**expected_child(1), "accuracy": 0.99, "reward": 0.5}
    with pytest.raises(ValueError, match=r"trial 'trial_00001' is already stored with a different accuracy, reward"):
        store.add_child(changed)
    assert store.child("trial_00001") == expected_child(1)
    assert store.count() == 1
    assert store.add_child(expected_child(2)) is True  # the refused write was rolled back cleanly


@pytest.mark.parametrize("change, message", [
    ({"latency": 3.0}, r"unknown field 'latency' .*did you mean 'latency_ms'"),
    ({"trial_id": None}, r"missing required field\(s\): trial_id"),
    ({"arch": None}, r"missing required field\(s\): arch"),
    ({"status": None}, r"missing required field\(s\): status"),
    ({"status": "done"}, r"status must be one of ok, failed, pruned, got 'done'"),
    ({"trial_id": "  "}, r"field 'trial_id' must not be empty"),
    ({"params": 3.5e6}, r"field 'params' must be an integer"),
    ({"accuracy": "0.7"}, r"field 'accuracy' must be a number"),
    ({"accuracy": True}, r"field 'accuracy' must be a number"),
    ({"indices": [1, "2"]}, r"field 'indices' must hold integers only"),
    ({"indices": "1,2"}, r"field 'indices' must be a list of integers"),
    ({"latencies": [1.0]}, r"field 'latencies' must be a mapping"),
    ({"latencies": {"pixel1": "fast"}}, r"field 'latencies' must map source names"),
    ({"extra": {"x": object()}}, r"field 'extra' is not JSON-serializable"),
    ({"extra": {1: 2}}, r"field 'extra' must be a mapping with string keys"),
    ({"started_at": "yesterday"}, r"field 'started_at' must be an ISO-8601 time"),
    ({"arch": ""}, r"field 'arch' must hold at least one block string"),
    ({"arch": 7}, r"field 'arch' must be block strings"),
    ({"accuracy": None}, r"an 'ok' child needs accuracy"),
    ({"latency_ms": float("nan")}, r"an 'ok' child needs latency_ms"),
    ({"status": "failed", "failure_code": None}, r"a failed child needs a failure_code"),
    ({"status": "failed", "failure_code": "nan loss"}, r"failure_code must be one of nan_loss, "),
    ({"failure_code": "oom"}, r"only a failed child has a failure_code, not one with status 'ok'"),
])
def test_bad_records_are_refused_naming_the_field(store, change, message):
    with pytest.raises(ValueError, match=message):
        store.add_child({**expected_child(0), **change})
    assert store.count() == 0


def test_a_record_must_be_a_mapping(store):
    with pytest.raises(ValueError, match="must be a mapping"):
        store.add_child([("trial_id", "x")])


def test_times_accept_datetimes_and_z_suffix():
    from datetime import datetime, timedelta, timezone

    two_am_in_utc_plus_2 = datetime(2025, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    record = {**expected_child(0), "started_at": two_am_in_utc_plus_2, "finished_at": "2025-01-01T00:00:00Z"}
    row = dict(zip(COLUMN_NAMES, encode_child(record)))
    assert row["started_at"] == "2025-01-01T00:00:00+00:00" and row["finished_at"] == "2025-01-01T00:00:00Z"
    naive = dict(zip(COLUMN_NAMES, encode_child({**record, "started_at": datetime(2025, 1, 1, 5)})))
    assert naive["started_at"] == "2025-01-01T05:00:00+00:00"  # naive datetimes are taken as UTC


# -- meta and controller diagnostics ------------------------------------------------------------------------------


def test_meta_round_trips_and_persists(tmp_path):
    with ResultStore(tmp_path) as store:
        store.set_meta("config", {"samples": 8, "target_ms": 75.0})
        store.set_meta("config", {"samples": 9})
        assert store.get_meta("missing", "default") == "default"
        with pytest.raises(ValueError, match="schema_version"):
            store.set_meta("schema_version", 2)
        with pytest.raises(ValueError, match="not JSON-serializable"):
            store.set_meta("bad", {1, 2})
    with ResultStore(tmp_path, readonly=True) as reader:
        assert reader.get_meta("config") == {"samples": 9}
        assert reader.meta()["schema_version"] == 3 and "created_at" in reader.meta()


def test_controller_stats_are_idempotent_on_step(store):
    assert store.add_controller_stats(0, {"entropy": 1.5, "approx_kl": np.float32(0.25)}) is True
    assert store.add_controller_stats(0, {"entropy": 1.5, "approx_kl": 0.25}) is False
    store.add_controller_stats(2, {"entropy": 1.0, "clipfrac": 0.1})
    store.add_controller_stats(1, {"entropy": 1.2})
    store.add_controller_stats(1, {"entropy": 1.1})  # redone after a resume: the latest replaces it
    stats = store.controller_stats()
    assert list(stats["step"]) == [0, 1, 2]
    assert list(stats["entropy"]) == [1.5, 1.1, 1.0]
    assert stats["approx_kl"].iloc[0] == 0.25 and pd.isna(stats["clipfrac"].iloc[0])
    with pytest.raises(ValueError, match="non-negative integer"):
        store.add_controller_stats(-1, {})
    assert store.add_controller_stats(3, {"step": 3, "entropy": 0.9}) is True  # its own step, if it agrees
    assert "step" not in store.controller_stats().columns[2:]
    with pytest.raises(ValueError, match="say step 4 but are recorded as step 3"):
        store.add_controller_stats(3, {"step": 4})
    with pytest.raises(ValueError, match="'recorded_at'"):
        store.add_controller_stats(3, {"recorded_at": "now"})
    with pytest.raises(ValueError, match="not JSON-serializable"):
        store.add_controller_stats(3, {"entropy": object()})


def test_controller_stats_empty(store):
    assert list(store.controller_stats().columns) == ["step", "recorded_at"]


# -- export -------------------------------------------------------------------------------------------------------


@pytest.fixture
def filled(store):
    for i in range(6):
        store.add_child(expected_child(i))
    store.add_child(failed_child(7))
    store.add_child({"trial_id": "00042", "arch": A1, "status": "pruned", "failure_detail": "None"})
    return store


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_reads_back_equal(filled, tmp_path, suffix):
    path = filled.export(tmp_path / f"children{suffix}")
    pd.testing.assert_frame_equal(read_export(path), filled.children())
    raw = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    assert list(raw.columns) == list(COLUMN_NAMES) and len(raw) == filled.count()
    if suffix == ".csv":
        assert json.loads(raw["latencies"].iloc[0]) == expected_child(0)["latencies"]  # portable JSON text
    else:  # Arrow types: a map of (source, ms) pairs and a list of integers (tests/test_newcomer.py checks them)
        assert dict(raw["latencies"].iloc[0]) == expected_child(0)["latencies"]
        assert list(raw["indices"].iloc[0]) == expected_child(0)["indices"]
    assert sorted(os.listdir(tmp_path)) == sorted(["run", f"children{suffix}"])  # no temp file left


def test_export_of_a_status_and_of_an_empty_frame(filled, tmp_path):
    pd.testing.assert_frame_equal(read_export(filled.export(tmp_path / "f.csv", status="failed")),
                                  filled.children("failed"))
    empty = filled.children("ok").iloc[:0]
    pd.testing.assert_frame_equal(read_export(export_frame(empty, tmp_path / "e.parquet")), empty)


@pytest.mark.parametrize("name, message", [("out.xlsx", r"unknown format \('.xlsx'\)"),
                                           ("out", r"unknown format \(no suffix\)"),
                                           ("missing/out.csv", "does not exist")])
def test_export_refuses_bad_paths(filled, tmp_path, name, message):
    with pytest.raises(ValueError, match=message):
        filled.export(tmp_path / name)
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_failing_export_leaves_no_partial_file(filled, tmp_path, monkeypatch):
    target = tmp_path / "children.csv"
    target.write_text("previous export\n")

    def half_write(self, target, **kwargs):  # `target`: what export_frame hands the writer (a buffer, a path)
        if hasattr(target, "write"):
            target.write(b"trial_id,sam")
        else:
            Path(target).write_text("trial_id,sam")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_write)
    with pytest.raises(OSError, match="disk full"):
        filled.export(target)
    assert target.read_text() == "previous export\n"  # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["children.csv", "run"]  # and no temp file is left


# -- opening -------------------------------------------------------------------------------------------------------


def test_readonly_open_of_a_missing_store(tmp_path):
    with pytest.raises(NoStoreError, match=f"no results store in {tmp_path}: is it a run directory"):
        ResultStore(tmp_path, readonly=True)
    with pytest.raises(ValueError, match="no such run directory"):
        ResultStore.open_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        ResultStore(tmp_path / "nope", readonly=True)
    assert os.listdir(tmp_path) == []  # reading never creates anything


def test_store_opens_by_directory_or_file(tmp_path):
    with ResultStore(tmp_path / "run") as store:
        store.add_child(expected_child(0))
    assert (tmp_path / "run" / STORE_FILENAME).is_file()
    with ResultStore(tmp_path / "run" / STORE_FILENAME, readonly=True) as reader:
        assert reader.count() == 1 and reader.run_dir == tmp_path / "run"
    with ResultStore.open_run(tmp_path / "run") as reader:
        assert reader.readonly
        with pytest.raises(ValueError, match="read-only"):
            reader.add_child(expected_child(1))


def test_store_uses_wal(store):
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / STORE_FILENAME
    path.write_bytes(b"this is a text file, not a database" * 40)
    for readonly in (True, False):
        with pytest.raises(ValueError, match="is not an SQLite database"):
            ResultStore(tmp_path, readonly=readonly)
    assert path.read_bytes().startswith(b"this is a text file")


def test_a_foreign_sqlite_schema_is_refused(tmp_path):
    conn = sqlite3.connect(tmp_path / STORE_FILENAME)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    for readonly in (True, False):
        with pytest.raises(ValueError, match="is an SQLite database but not an MNAS results store"):
            ResultStore(tmp_path, readonly=readonly)


def test_a_newer_schema_version_is_refused(tmp_path):
    ResultStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / STORE_FILENAME)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="schema version 99; this MNAS reads versions 1 to 3"):
        ResultStore(tmp_path, readonly=True)


def _version_1_store(path):
    """A store as version 1 wrote it: no accuracy_source, and one free-text failure_reason instead of a code and
    its detail; two working children and three failed ones, as version 1's workers and driver worded them."""
    ResultStore(path).close()
    conn = sqlite3.connect(path / STORE_FILENAME)
    conn.execute("ALTER TABLE children DROP COLUMN failure_detail")
    conn.execute("ALTER TABLE children DROP COLUMN accuracy_source")
    conn.execute("ALTER TABLE children RENAME COLUMN failure_code TO failure_reason")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    columns = ["failure_reason" if c == "failure_code" else c for c in COLUMN_NAMES
               if c not in ("accuracy_source", "failure_detail")]
    rows = [dict(zip(COLUMN_NAMES, encode_child(expected_child(i)))) for i in (1, 2)]
    for i, reason in enumerate(["nan_loss: training loss nan at step 12 of 625",
                                "error: RuntimeError: boom (trial.py:88)", "out of memory"], 3):
        rows.append(dict(zip(COLUMN_NAMES, encode_child(failed_child(i))), failure_code=reason))
    for row in rows:
        conn.execute(f"INSERT INTO children ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                     [row["failure_code" if c == "failure_reason" else c] for c in columns])
    conn.commit()
    conn.close()


OLD_FAILURES = [("nan_loss", "training loss nan at step 12 of 625"),
                ("unexpected_error", "RuntimeError: boom (trial.py:88)"), ("unexpected_error", "out of memory")]


def test_a_version_1_store_is_read_as_is_and_migrated_by_a_writer(tmp_path):
    _version_1_store(tmp_path)
    before = (tmp_path / STORE_FILENAME).read_bytes()
    with ResultStore(tmp_path, readonly=True) as reader:      # a reader never changes the file ...
        frame = reader.children()
        assert list(frame.columns) == list(COLUMN_NAMES) and frame["accuracy_source"].isna().all()
        assert reader.child("trial_00001")["accuracy"] == expected_child(1)["accuracy"]
        assert reader.get_meta("schema_version") == 1
        # ... but splits the old free text into code and detail as it reads
        failed = reader.children(status="failed")
        assert list(zip(failed["failure_code"], failed["failure_detail"])) == OLD_FAILURES
        assert reader.child("trial_00001")["failure_code"] is None
    assert (tmp_path / STORE_FILENAME).read_bytes() == before
    with ResultStore(tmp_path) as writer:                      # a writer brings it to version 3
        assert writer.get_meta("schema_version") == 3
        assert writer.child("trial_00002")["accuracy_source"] is None
        assert writer.add_child(expected_child(3)) is True
        assert writer.children()["accuracy_source"].tolist()[-1] == "proxy"
        failed = writer.children(status="failed")
        assert list(zip(failed["failure_code"], failed["failure_detail"])) == OLD_FAILURES
    conn = sqlite3.connect(tmp_path / STORE_FILENAME)           # the split is in the file, not only in reading
    assert [r[1] for r in conn.execute("PRAGMA table_info(children)")] == list(COLUMN_NAMES)
    assert conn.execute("SELECT COUNT(*) FROM children WHERE failure_code = 'unexpected_error'").fetchone() == (2,)
    conn.close()


def test_an_old_store_is_not_migrated_under_a_search_that_owns_its_folder(tmp_path):
    """A running search of an older version writes the old columns: migrating its store would fail its next child.
    Its owner's lock stops a writer; reading stays possible, and the search's own process may migrate."""
    from mnas.search.runlock import RunInUse, RunLock

    _version_1_store(tmp_path)
    before = (tmp_path / STORE_FILENAME).read_bytes()
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = [{str(REPO)!r}]
        from mnas.search.runlock import RunLock
        RunLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUse, match=rf"schema version 1 and a running search \(process {owner.pid}\)"):
            ResultStore(tmp_path)
        assert (tmp_path / STORE_FILENAME).read_bytes() == before          # nothing changed
        with ResultStore.open_run(tmp_path) as reader:
            assert len(reader.children(status="all")) == 5
    finally:
        owner.kill()
        owner.wait()
    with RunLock(str(tmp_path)), ResultStore(tmp_path) as writer:           # the owner itself migrates
        assert writer.get_meta("schema_version") == 3


# -- concurrency and crashes ---------------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{repo!r}, {tests!r}]
    from mnas.results.store import ResultStore
    from test_results_store import expected_child
    with ResultStore({run!r}) as store:
        for i in range({n}):
            store.add_child(expected_child(i))
            store.add_controller_stats(i, {{"entropy": 1.0 / (i + 1)}})
            if {forever} and i == {n} - 1:
                time.sleep(60)
""")


def _writer(run_dir: Path, n: int, forever: bool = False) -> subprocess.Popen:
    code = WRITER.format(repo=str(REPO), tests=str(TESTS), run=str(run_dir), n=n, forever=forever)
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)


def _check_rows(frame: pd.DataFrame) -> None:
    """Every row the reader sees is a whole child, equal to the one written."""
    for record in frame.to_dict("records"):
        assert record["trial_id"].startswith("trial_")
        want = expected_child(int(record["trial_id"][6:]))
        got = {name: (None if not isinstance(value, (list, dict)) and pd.isna(value) else value)
               for name, value in record.items()}
        assert got == want


def test_reader_sees_only_whole_rows_while_a_writer_writes(tmp_path):
    run = tmp_path / "run"
    n = 300
    writer = _writer(run, n)
    seen, reads, reader = 0, 0, None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            done = writer.poll() is not None
            if reader is None or reads % 3 == 0:  # also open fresh connections mid-write
                if reader is not None:
                    reader.close()
                try:
                    reader = ResultStore(run, readonly=True)
                except NoStoreError:  # the writer has not created it yet; nothing half-made is ever visible
                    assert not done
                    time.sleep(0.01)
                    continue
            frame = reader.children()
            _check_rows(frame)
            assert len(frame) >= seen, "a reader saw the number of children go down"
            assert reader.count() >= len(frame)
            seen, reads = len(frame), reads + 1
            if done:
                break
        assert writer.wait(timeout=30) == 0, writer.stderr.read().decode()
        assert seen == n and reads > 3
        assert list(reader.children()["sample"]) == list(range(n))
        assert len(reader.controller_stats()) == n
        record_reliability("store_reader", children_written=n, reads=reads, final_rows=seen, torn_rows=0,
                           count_decreases=0)
    finally:
        if reader is not None:
            reader.close()
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_a_killed_writer_leaves_no_torn_row_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    writer = _writer(run, 100_000)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if (run / STORE_FILENAME).exists():
                with ResultStore(run, readonly=True) as probe:
                    if probe.count() >= 40:
                        break
        os.kill(writer.pid, signal.SIGKILL)  # mid-loop: likely inside a transaction
        writer.wait()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    with ResultStore(run, readonly=True) as reader:
        frame = reader.children()
        _check_rows(frame)
        stored = len(frame)
        assert stored >= 40 and list(frame["sample"]) == list(range(stored))
    with ResultStore(run) as resumed:
        assert resumed._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert resumed.add_child(expected_child(stored - 1)) is False  # replayed write: a no-op
        assert resumed.add_child(expected_child(stored)) is True
        assert resumed.count() == stored + 1
    record_reliability("store_writer_kill", kills=1, rows_at_kill=stored, torn_rows=0, integrity="ok",
                       replayed_write_no_op=1)


def test_store_imports_without_tensorflow_or_ray():
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        sys.modules["tensorflow"] = None
        sys.modules["ray"] = None
        import mnas.results.store, mnas.results.pareto, mnas.commands.results
        loaded = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "ray") and sys.modules[m] is not None]
        assert not loaded, loaded
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
