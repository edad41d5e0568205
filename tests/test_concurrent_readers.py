"""The dashboard's server and `launch.py results` read a run while another process writes it (issue 7).

The writer is a separate process that writes the way the search driver does: one transaction per child (ok and
failed ones), and a controller-statistics row after every PPO batch. Meanwhile this test polls the dashboard's
data endpoints on a running DashboardServer and runs `launch.py results RUN_DIR --json` again and again. Every
field of a child is derived from its sample number, so a reader can tell a whole row from a torn one; the writer
adds children in sample order, so every snapshot must be exactly the first N children, and N must never go down
from one read of a reader to its next. The writer runs until both readers have read mid-write several times (or
a deadline), then stops after a whole child; the last reads must see every child it wrote. About 10 s.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from conftest import record_reliability

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BATCH = 4              # children per PPO update: a controller-statistics row after every BATCH children
PACE_S = 0.02          # the writer's pause between children (a real search writes one every few seconds)
MAX_CHILDREN = 2_000   # the writer stops here if it is never told to stop earlier
DEADLINE_S = 15.0      # ... or when this much time has passed
ENDPOINTS = ("/api/data", "/api/runs", "/api/runs/0")
CHILD_FIELDS = ("trial_id", "arch", "status", "failure_code", "failure_detail", "accuracy", "latency_ms",
                "latency_source", "reward", "params", "madds", "sample",
                "controller_step")  # what the dashboard shows of a child


def child(i: int) -> dict:
    """Child i as the writer stores it; every sixth one failed. Also imported by the writer process."""
    record = {
        "trial_id": f"child_{i:05d}", "sample": i, "controller_step": i // BATCH, "strategy": "mnas",
        "arch": f"r1_k3_s11_e1_i32_o{16 + 8 * (i % 5)}_noskip r2_k5_s22_e6_i{16 + 8 * (i % 5)}_o24_se0.25",
        "indices": [i % 4, i % 2, i % 3, i % 5], "params": 100_000 + i, "madds": 9_000_000 + 7 * i,
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00",
        "extra": {"log_prob": -i / 8, "check": f"child_{i:05d}"},
    }
    if i % 6 == 5:
        return {**record, "status": "failed", "failure_code": "nan_loss",
                "failure_detail": f"loss is NaN at step {i}", "reward": 0.0}
    latency = 20.0 + (i % 37) / 4
    return {**record, "status": "ok", "accuracy": 0.5 + (i % 97) / 250, "latency_ms": latency,
            "latency_source": "pixel1", "latencies": {"pixel1": latency, "host": i / 16},
            "reward": (0.5 + (i % 97) / 250) * (latency / 75) ** -0.07, "failure_code": None,
            "train_seconds": 1.0 + i / 100, "eval_seconds": 0.5, "latency_seconds": 0.01, "total_seconds": 2.0}


WRITER = textwrap.dedent("""
    import os, sys, time
    sys.path[:0] = [{repo!r}, {tests!r}]
    from mnas.results.store import ResultStore
    from test_concurrent_readers import BATCH, child
    with ResultStore({run!r}) as store:
        i = 0
        while i < {most} and not os.path.exists({stop!r}):
            store.add_child(child(i))
            i += 1
            if i % BATCH == 0:
                store.add_controller_stats(i // BATCH - 1, {{"entropy": 2.0 / (1 + i), "mean_reward": 0.6}})
            time.sleep({pace})
    print(i, flush=True)
""")


def whole(row: dict, fields=None) -> bool:
    """Whether a row a reader saw is exactly the child the writer wrote (all fields, or `fields`)."""
    sample = row.get("sample")
    if not isinstance(sample, int) or row.get("trial_id") != f"child_{sample:05d}":
        return False
    want = child(sample)
    if fields is None:  # `launch.py results --json`: every column of the store
        from mnas.results.schema import COLUMN_NAMES
        return set(row) == set(COLUMN_NAMES) and all(row[name] == want.get(name) for name in COLUMN_NAMES)
    want = {**want, "arch": want["arch"].split()}  # the dashboard sends the block strings as a list
    return all(row.get(name) == want.get(name) for name in fields)


class Readings:
    """What one reader saw, read after read: row counts, problems, and how many reads overlapped the writer."""

    def __init__(self, name: str):
        self.name, self.counts, self.during, self.rows, self.torn, self.decreases = name, [], 0, 0, 0, 0
        self.problems: list[str] = []

    def saw(self, count: int, during: bool) -> None:
        if self.counts and count < self.counts[-1]:
            self.decreases += 1
            self.problems.append(f"{self.name}: the row count went down from {self.counts[-1]} to {count}")
        self.counts.append(count)
        self.during += during

    def check_children(self, rows: list[dict], fields=None) -> None:
        """A snapshot holds the first len(rows) children, each whole."""
        self.rows += len(rows)
        torn = [row.get("trial_id") for row in rows if not whole(row, fields)]
        self.torn += len(torn)
        if torn:
            self.problems.append(f"{self.name}: torn or altered rows {torn[:5]}")
        if sorted(row.get("sample", -1) for row in rows) != list(range(len(rows))):
            self.problems.append(f"{self.name}: a snapshot of {len(rows)} rows is not the first {len(rows)} children")


def get(server, path: str) -> tuple[int, bytes]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def read_dashboard(server, path: str, readings: Readings, writing) -> int:
    """One GET of a data endpoint, checked; returns the number of children it showed (-1 on an error)."""
    during = writing()
    status, body = get(server, path)
    during = during and writing()
    try:
        data = json.loads(body)
    except ValueError as err:
        readings.problems.append(f"{path}: not JSON ({err}): {body[:200]!r}")
        return -1
    if status != 200:
        readings.problems.append(f"{path}: HTTP {status}: {data}")
        return -1
    run = data[0] if path == "/api/runs" else data["runs"][0] if path == "/api/data" else data
    counts = run["counts"]
    if counts["total"] != counts["ok"] + counts["failed"] + counts["pruned"]:
        readings.problems.append(f"{path}: counts do not add up: {counts}")
    if "children" in run:
        children = list(run["children"].values())
        if len(children) != counts["total"] or any(key != row["trial_id"] for key, row in run["children"].items()):
            readings.problems.append(f"{path}: {len(children)} children but counts say {counts}")
        readings.check_children(children, CHILD_FIELDS)
        if not all(row["trial_id"] in run["children"] for row in run["table"]):
            readings.problems.append(f"{path}: the table lists a child the payload does not hold")
    readings.saw(counts["total"], during)
    return counts["total"]


def read_cli(run_dir: Path, readings: Readings, writing) -> int:
    """One `launch.py results RUN_DIR --json`, checked; returns the number of children it listed (-1 on an error)."""
    during = writing()
    done = subprocess.run([sys.executable, str(REPO / "launch.py"), "results", str(run_dir), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    during = during and writing()
    if done.returncode != 0 or done.stderr.strip():
        readings.problems.append(f"results --json: exit {done.returncode}: {done.stderr.strip()[-500:]}")
        return -1
    try:
        rows = json.loads(done.stdout)
    except ValueError as err:
        readings.problems.append(f"results --json: not JSON ({err}): {done.stdout[:200]!r}")
        return -1
    readings.check_children(rows)
    readings.saw(len(rows), during)
    return len(rows)


def test_dashboard_and_results_command_read_while_a_search_writes(tmp_path):
    from mnas.results.server import DashboardServer
    from mnas.results.store import ResultStore

    run_dir, stop = tmp_path / "run", tmp_path / "stop"
    with ResultStore(run_dir) as store:  # as `launch.py search` does before its first child
        store.set_meta("config", {"name": "run", "strategy": "mnas", "reward": {"preset": "soft", "target_ms": 75}})
    code = WRITER.format(repo=str(REPO), tests=str(TESTS), run=str(run_dir), stop=str(stop), most=MAX_CHILDREN,
                         pace=PACE_S)
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)

    def writing() -> bool:
        return writer.poll() is None

    server = DashboardServer([str(run_dir)], port=0, refresh_seconds=1)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serving.start()
    dashboard, cli = Readings("dashboard"), Readings("results --json")
    done_reading = threading.Event()

    def cli_loop():
        while not done_reading.is_set():
            read_cli(run_dir, cli, writing)

    cli_thread = threading.Thread(target=cli_loop, daemon=True)
    cli_thread.start()
    started = time.monotonic()
    try:
        gets = 0
        while writing() and time.monotonic() - started < DEADLINE_S:
            read_dashboard(server, ENDPOINTS[gets % len(ENDPOINTS)], dashboard, writing)
            gets += 1
            if dashboard.during >= 15 and cli.during >= 3:
                break
            time.sleep(0.05)
        stop.touch()                    # the writer finishes the child it is writing and exits
        out, err = writer.communicate(timeout=60)
        done_reading.set()
        cli_thread.join(timeout=180)
        assert writer.returncode == 0, err[-2000:]
        written = int(out.split()[-1])
        # after the writer: every reader sees every child it wrote
        final = [read_dashboard(server, path, dashboard, writing) for path in ENDPOINTS]
        final.append(read_cli(run_dir, cli, writing))
        version = json.loads(get(server, "/api/data")[1])["version"]
        unchanged = json.loads(get(server, "/api/data?since=" + version)[1])
    finally:
        stop.touch()
        done_reading.set()
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        server.shutdown()
        server.server_close()
        serving.join(5)
    with ResultStore(run_dir, readonly=True) as store:
        stats = len(store.controller_stats())
    problems = dashboard.problems + cli.problems
    record_reliability("concurrent_readers", children_written=written, controller_steps=stats,
                       http_gets=len(dashboard.counts), http_gets_during_write=dashboard.during,
                       cli_runs=len(cli.counts), cli_runs_during_write=cli.during,
                       rows_checked=dashboard.rows + cli.rows, torn_rows=dashboard.torn + cli.torn,
                       count_decreases=dashboard.decreases + cli.decreases, problems=len(problems))
    assert not problems, problems[:10]
    assert final == [written] * 4, (final, written)
    assert stats == written // BATCH
    assert unchanged == {"version": version, "unchanged": True}
    assert dashboard.during >= 5 and cli.during >= 2, (dashboard.during, cli.during)  # the reads overlapped writes
    assert 0 < written < MAX_CHILDREN
