"""The dashboard's views without a browser: ranks, frontier, table, failures, figures, payload; the server over
plain HTTP (read-only, no path traversal); and the command line's bad input.

The browser end-to-end tests live in test_dashboard_browser.py and build their runs with `make_run` below.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mnas import cli as mnas_cli
from conftest import record_reliability
from mnas.results import views
from mnas.results.dashboard import DashboardSource, build_payload, render_page
from mnas.results.figures import failures_figure, progress_figure, scatter_figure
from mnas.results.pareto import pareto_front
from mnas.results.server import DashboardServer
from mnas.results.store import ResultStore

REPO = Path(__file__).resolve().parents[1]

A1 = ("r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24 r3_k5_s22_e3_i24_o40_se0.25 r4_k3_s22_e6_i40_o80 "
      "r2_k3_s11_e6_i80_o112_se0.25 r3_k5_s22_e6_i112_o160_se0.25 r1_k3_s11_e6_i160_o320")
SMALL = ("r1_k3_s11_e1_i16_o8 r1_k3_s22_e3_i8_o16 r2_k3_s22_e6_i16_o16 r4_k5_s22_e6_i16_o32_se0.25 "
         "r3_k3_s11_e6_i32_o32_se0.25 r3_k5_s22_e6_i32_o88_se0.25 r1_k3_s11_e6_i88_o144")
# The paper's space has a regular conv and a pooling skip too: one child shows them in the diagram.
CONV = "r1_k3_s11_e1_i32_o16_conv r2_k5_s22_e1_i16_o24_poolskip r3_k3_s22_e3_i24_o40_se0.25 r2_k3_s22_e6_i40_o80"
FAILURES = {"failed_0": ("oom", "12 GiB at step 3"), "failed_1": ("nan_loss", "at step 7"),
            "failed_2": ("oom", "13 GiB at step 9")}   # one group per code, whatever the detail says
TARGET_MS = 75.0


def child_arch(i: int) -> str:
    if i % 7 == 3:
        return CONV
    if i % 5 == 4:
        return SMALL
    return A1.replace("i160_o320", f"i160_o{320 + 8 * i}")


def ok_child(i: int, rng: random.Random, trial_id: str | None = None) -> dict:
    latency = rng.uniform(20.0, 120.0)
    accuracy = round(0.55 + 0.25 * (latency - 20) / 100 + rng.uniform(-0.08, 0.02), 4)
    reward = accuracy * (latency / TARGET_MS) ** -0.07
    return {"trial_id": trial_id or f"trial_{i:03d}", "sample": i, "controller_step": i // 4, "strategy": "mnas",
            "arch": child_arch(i), "accuracy": accuracy, "latency_ms": round(latency, 2),
            "latency_source": "pixel1-predicted", "latencies": {"pixel1-predicted": round(latency, 2)},
            "reward": reward, "params": 3_000_000 + 10_000 * i, "madds": 250_000_000 + 1_000_000 * i, "status": "ok"}


def make_run(path: Path, ok: int = 16, seed: int = 0, preset: str = "soft") -> Path:
    """A run as a search writes it: `ok` finished children, 3 failed (2 reasons), 1 pruned, controller stats."""
    rng = random.Random(seed)
    with ResultStore(path) as store:
        store.set_meta("config", {"name": path.name, "strategy": "mnas", "samples": ok + 4,
                                  "reward": {"preset": preset, "target_ms": TARGET_MS},
                                  "space": {"name": "mnasnet", "stem": 32, "head": 1280}})
        for i in range(ok):
            store.add_child(ok_child(i, rng))
        for j, (trial_id, (code, detail)) in enumerate(FAILURES.items()):
            store.add_child({"trial_id": trial_id, "sample": ok + j, "controller_step": (ok + j) // 4,
                             "arch": child_arch(ok + j), "status": "failed", "failure_code": code,
                             "failure_detail": detail, "reward": -1.0})
        store.add_child({"trial_id": "pruned_0", "sample": ok + 3, "arch": A1, "status": "pruned",
                         "accuracy": 0.3, "latency_ms": 50.0, "latency_source": "pixel1-predicted", "reward": 0.31})
        for step in range(5):
            store.add_controller_stats(step, {"entropy": 1.9 - 0.1 * step, "approx_kl": 0.01, "clipfrac": 0.1,
                                              "pg_loss": -0.01, "baseline": 0.6, "mean_reward": 0.6 + 0.01 * step})
    return path


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return make_run(tmp_path / "soft")


def snapshot_of(run_dir: Path, label: str = "soft") -> views.RunSnapshot:
    with ResultStore(run_dir, readonly=True) as store:
        return views.read_run(store, label, str(run_dir))


# -- views as data ---------------------------------------------------------------------------------------------


def test_ranks_follow_the_store_top_order(run_dir):
    snap = snapshot_of(run_dir)
    ranks = views.reward_ranks(snap.children)
    with ResultStore(run_dir, readonly=True) as store:
        top = list(store.top(100)["trial_id"])
    by_rank = sorted(ranks.items(), key=lambda item: item[1])
    assert [snap.children.at[index, "trial_id"] for index, _ in by_rank] == top
    assert len(ranks) == 16  # failed and pruned children have no rank


def test_frontier_numbers_the_pareto_front_by_latency(run_dir):
    snap = snapshot_of(run_dir)
    front = views.frontier(snap.children)
    expected = pareto_front(snap.children)
    assert list(front["trial_id"]) == list(expected["trial_id"])
    assert list(front["pareto"]) == list(range(1, len(expected) + 1))
    assert list(front["latency_ms"]) == sorted(front["latency_ms"])
    assert "pruned_0" not in set(front["trial_id"])


def test_table_lists_top_and_frontier_children_with_their_replay_commands(run_dir):
    snap = snapshot_of(run_dir)
    rows = views.table_rows(snap, top_k=5)
    ranks = views.reward_ranks(snap.children)
    top = {snap.children.at[index, "trial_id"]: rank for index, rank in ranks.items() if rank <= 5}
    front = dict(zip(views.frontier(snap.children)["trial_id"], views.frontier(snap.children)["pareto"]))
    assert {row["trial_id"] for row in rows} == set(top) | set(front)
    assert len(rows) == len(set(top) | set(front))  # each child once
    rewards = [row["reward"] for row in rows]
    assert rewards == sorted(rewards, reverse=True)
    for row in rows:
        if row["trial_id"] in top:
            assert "top" in row["sets"]
            assert row["command"] == f"{views.mnas_prefix()} train --arch {run_dir}:{top[row['trial_id']]}"
        else:
            assert row["sets"] == ["frontier"]
            assert row["command"] == f"{views.mnas_prefix()} train --arch {run_dir}:pareto:{front[row['trial_id']]}"
        assert ("frontier" in row["sets"]) == (row["trial_id"] in front)


def test_replay_command_quotes_paths_for_the_shell():
    prefix = views.mnas_prefix()  # the command as it runs from here (tests/test_newcomer.py checks its forms)
    assert views.replay_command("runs/a b", rank=2) == f"{prefix} train --arch 'runs/a b:2'"
    assert views.replay_command("runs/x", pareto=1) == f"{prefix} train --arch runs/x:pareto:1"


def test_failures_are_counted_by_code(run_dir):
    snap = snapshot_of(run_dir)
    assert views.failure_counts(snap.children) == [("oom", 2), ("nan_loss", 1)]
    assert views.status_counts(snap.children) == {"total": 20, "ok": 16, "failed": 3, "pruned": 1}


def test_block_view_decodes_with_the_search_space():
    blocks = [views.block_view(block) for block in CONV.split()]
    assert [block["op"] for block in blocks] == ["conv", "dsconv", "mbconv3", "mbconv6"]
    third = blocks[2]
    assert (third["kernel"], third["expand_ratio"], third["se_ratio"], third["input_filters"],
            third["output_filters"], third["repeats"], third["stride"], third["skip"]) == \
        (3, 3, 0.25, 24, 40, 3, 2, "identity")
    assert blocks[1]["skip"] == "pool"
    assert "error" in views.block_view("r1_k3_zz9")


def test_run_labels_tell_runs_apart():
    assert views.run_labels(["runs/soft", "runs/hard"]) == ["soft", "hard"]
    assert views.run_labels(["a/run", "b/run", "c/other"]) == ["a/run", "b/run", "other"]
    assert views.run_labels(["runs/x", "runs/x/"]) == ["runs/x (1)", "runs/x (2)"]


# -- figures -----------------------------------------------------------------------------------------------------


def traces(fig, kind: str, run: int = 0) -> list:
    return [trace for trace in fig.data if trace.meta == {"run": run, "kind": kind}]


def test_scatter_holds_every_finished_child_and_the_frontier(run_dir):
    snap = snapshot_of(run_dir)
    fig = scatter_figure([snap])
    (children,), (frontier,) = traces(fig, "children"), traces(fig, "frontier")
    ok = snap.children[snap.children["status"] == "ok"]
    assert [point[1] for point in children.customdata] == list(ok["trial_id"])
    assert list(children.x) == list(ok["latency_ms"]) and list(children.y) == list(ok["accuracy"])
    front = pareto_front(snap.children)
    assert [point[1] for point in frontier.customdata] == list(front["trial_id"])
    assert list(frontier.x) == list(front["latency_ms"]) and frontier.line.shape == "hv"
    assert [point[1] for point in traces(fig, "pruned")[0].customdata] == ["pruned_0"]
    # Hover: block strings, params, multiply-adds, latency source.
    first = children.customdata[0]
    assert first[2] == "<br>".join(child_arch(0).split())
    assert first[3:6] == ["3.00M", "250.00M", "pixel1-predicted"]
    # The latency target as a vertical line.
    assert [(shape.x0, shape.x1) for shape in fig.layout.shapes] == [(TARGET_MS, TARGET_MS)]


def test_scatter_colour_buttons_switch_between_reward_step_and_run(run_dir):
    snap = snapshot_of(run_dir)
    fig = scatter_figure([snap, snap])
    buttons = fig.layout.updatemenus[0].buttons
    assert [button.label for button in buttons] == ["reward", "search step", "run"]
    child_traces = [i for i, trace in enumerate(fig.data) if trace.meta["kind"] == "children"]
    ok = snap.children[snap.children["status"] == "ok"]
    for button in buttons:
        _, _, targets = button.args
        assert list(targets) == child_traces
    reward, step, run = (list(button.args[0]["marker.color"]) for button in buttons)
    assert reward[0] == list(ok["reward"]) and step[0] == list(ok["controller_step"])
    assert run == [views.RUN_COLORS[0], views.RUN_COLORS[1]]
    assert [button.args[1]["coloraxis.colorbar.title.text"] for button in buttons] == \
        ["reward", "controller step", ""]
    assert list(fig.data[child_traces[0]].marker.color) == reward[0]  # reward is the default
    assert fig.layout.coloraxis.cmax == max(ok["reward"])  # one scale for every run


def test_progress_shows_each_metric_over_the_search_and_the_entropy(run_dir, tmp_path):
    hard = make_run(tmp_path / "hard", seed=1, preset="hard")
    fig = progress_figure([snapshot_of(run_dir), snapshot_of(hard, "hard")])
    for run in (0, 1):
        for kind in ("reward", "accuracy", "latency_ms"):
            (trace,) = traces(fig, kind, run)
            assert len(trace.x) == 16 and list(trace.x) == sorted(trace.x)
        (entropy,) = traces(fig, "entropy", run)
        assert list(entropy.x) == [0, 1, 2, 3, 4]
        assert list(entropy.y) == pytest.approx([1.9, 1.8, 1.7, 1.6, 1.5])


def test_payload_is_strict_json_and_its_version_moves_with_the_run(run_dir):
    payload = build_payload([snapshot_of(run_dir)])
    text = json.dumps(payload, allow_nan=False)
    assert "NaN" not in text
    run = payload["runs"][0]
    assert run["counts"]["failed"] == 3 and run["target_ms"] == TARGET_MS and run["reward_preset"] == "soft"
    assert set(payload["blocks"]) >= set(CONV.split())
    failed = run["children"]["failed_1"]
    assert (failed["failure_code"], failed["failure_detail"]) == ("nan_loss", "at step 7")
    with ResultStore(run_dir) as store:
        store.add_child(ok_child(99, random.Random(5), "late"))
    assert build_payload([snapshot_of(run_dir)])["version"] != payload["version"]


def test_page_markers_are_filled_once_and_json_cannot_close_the_script(run_dir):
    page = render_page("t", {"live": False, "payload": {"x": "</script><b>"}}, "<script>/*plotly*/</script>")
    assert "<!--MNAS:" not in page
    assert "</script><b>" not in page and "\\u003c/script>\\u003cb>" in page


# -- the server over plain HTTP --------------------------------------------------------------------------------


@pytest.fixture
def server(run_dir):
    server = DashboardServer([str(run_dir)], port=0, refresh_seconds=1)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def get(server, path: str, method: str = "GET") -> tuple[int, bytes]:
    """A raw request: the path goes on the wire exactly as written (urllib would not normalize it, but be sure)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_server_serves_the_page_plotly_and_the_data(server):
    with urllib.request.urlopen(server.url, timeout=10) as response:
        page = response.read().decode()
    assert response.status == 200 and '<div id="scatter"' in page and 'src="static/plotly.min.js"' in page
    status, js = get(server, "/static/plotly.min.js")
    assert status == 200 and len(js) > 1_000_000
    with urllib.request.urlopen(server.url + "api/data", timeout=10) as response:
        data = json.load(response)
    assert data["runs"][0]["counts"]["total"] == 20
    with urllib.request.urlopen(server.url + "api/data?since=" + data["version"], timeout=10) as response:
        assert json.load(response) == {"version": data["version"], "unchanged": True}
    status, body = get(server, "/api/runs/0")
    assert status == 200 and json.loads(body)["label"] == "soft"


@pytest.mark.parametrize("path", [
    "/../../../../etc/passwd", "/static/../../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/etc/passwd", "/results.sqlite", "/soft/results.sqlite",
    "/api/runs/1", "/api/runs/../0", "/api/runs/-1", "/api/runs/00", "/static/dashboard.js", "/static/",
    "http://example.com/etc/passwd", "/api/data/../../etc/passwd"])
def test_no_path_outside_the_routes_is_served(server, path):
    status, body = get(server, path)
    # an absolute URI carries its own host name (http.client sends it as Host): not this server's, so 421
    assert status == (421 if path.startswith("http://") else 404) and b"root:" not in body


def test_absolute_path_of_the_store_is_not_served(server, run_dir):
    status, _ = get(server, str(run_dir / "results.sqlite"))
    assert status == 404
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + str(run_dir).lstrip("/") + "/results.sqlite", timeout=10)
    assert err.value.code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"])
def test_only_get_is_allowed(server, method):
    status, _ = get(server, "/api/data", method=method)
    assert status == 405


def request_with_host(server, host: str | None, path: str = "/api/data") -> tuple[int, bytes]:
    """A GET whose Host header is `host` (None: no Host header at all), as a page of another site would send it."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


FOREIGN_HOSTS = ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example:{port}",
                 "10.0.0.1:{port}", "[::2]:{port}", "127.0.0.1@evil.example", "", None]
OWN_HOSTS = ["127.0.0.1", "127.0.0.1:{port}", "localhost", "LOCALHOST:{port}", "localhost:9000", "localhost.",
             "[::1]:{port}"]  # 9000: the port of an SSH tunnel to the dashboard


def test_requests_for_another_host_name_get_no_data(server):
    """DNS rebinding: a page of evil.example re-points its name at 127.0.0.1; the browser then sends
    `Host: evil.example` to the dashboard. It must answer with an error and nothing of the runs."""
    port = server.server_address[1]
    for host in FOREIGN_HOSTS:
        for path in ("/api/data", "/api/runs/0", "/"):
            status, body = request_with_host(server, None if host is None else host.format(port=port), path)
            assert status == (400 if not host else 421), (host, path)
            assert len(body) < 200 and b"runs" not in body and b"soft" not in body and b"<html" not in body.lower()
            record_reliability("dashboard_security", case=f"Host {host!r} {path}", refused=1)
    for host in OWN_HOSTS:
        status, body = request_with_host(server, host.format(port=port))
        assert status == 200 and json.loads(body)["runs"][0]["label"] == "soft", host


def test_a_wildcard_bind_answers_ip_literals_and_its_host_names_but_not_other_names(run_dir):
    server = DashboardServer([str(run_dir)], host="0.0.0.0", port=0)
    try:
        for host in ("192.168.1.5:8050", "[fe80::1]:8050", socket.gethostname(), "127.0.0.1", "0.0.0.0"):
            assert server.host_allowed(host), host
        for host in ("evil.example", "evil.example:8050", "", "a:b:c"):
            assert not server.host_allowed(host), host
    finally:
        server.server_close()


@pytest.mark.parametrize("host", ["", "  "])
def test_an_empty_host_is_refused_not_every_interface(run_dir, host):
    with pytest.raises(ValueError, match="empty host would listen on every interface"):
        DashboardServer([str(run_dir)], host=host, port=0)


@contextlib.contextmanager
def serving(run_dir, **options):
    server = DashboardServer([str(run_dir)], port=0, refresh_seconds=1, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def half_sent(server) -> socket.socket:
    """A connection that starts a request and never finishes it (what held 300 threads before)."""
    sock = socket.create_connection(server.server_address[:2], timeout=20)
    sock.sendall(b"GET /api/da")
    return sock


def test_a_silent_connection_is_closed_after_the_timeout(run_dir):
    with serving(run_dir, timeout=0.3) as server:
        with half_sent(server) as sock:
            assert sock.recv(1024) == b""  # the server closed it (the socket's own timeout, 20 s, would raise)
        record_reliability("dashboard_security", case="half-sent request closed after the timeout", refused=1)


def test_connections_beyond_the_limit_get_503_at_once_and_slots_come_back(run_dir):
    with serving(run_dir, timeout=30, max_connections=2) as server:
        idle = [half_sent(server), half_sent(server)]  # accepted in order: both hold a slot before the next
        try:
            status, body = get(server, "/api/data")
            assert status == 503 and b"too many connections" in body
        finally:
            for sock in idle:
                sock.close()
        # each handler sees its reader go away and frees its slot: the server answers again
        deadline = time.monotonic() + 10
        while (status := get(server, "/api/runs")[0]) == 503 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert status == 200
        record_reliability("dashboard_security", case="connections beyond the limit", refused=1)


def test_server_binds_loopback_by_default(run_dir):
    server = DashboardServer([str(run_dir)], port=0)
    try:
        assert server.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
    finally:
        server.server_close()


# -- the command line --------------------------------------------------------------------------------------------


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = mnas_cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("make_args", [
    lambda run, tmp: ["dashboard", tmp / "missing", "--port", "0"],
    lambda run, tmp: ["dashboard", tmp, "--port", "0"],  # a folder, but not a run
    lambda run, tmp: ["dashboard", run, "--port", "-1"],
    lambda run, tmp: ["dashboard", run, "--port", "70000"],
    lambda run, tmp: ["dashboard", run, "--port", "http"],
    lambda run, tmp: ["dashboard", run, "--port", "0", "--refresh", "0"],
    lambda run, tmp: ["dashboard", run, "--port", "0", "--host", "256.1.1.1"],
    lambda run, tmp: ["dashboard", run, "--port", "0", "--host", ""],
    lambda run, tmp: ["report", tmp / "missing", "--out", tmp / "r.html"],
    lambda run, tmp: ["report", run, "--out", tmp / "r.txt"],
    lambda run, tmp: ["report", run, "--out", tmp / "no" / "such" / "dir.html"],
    lambda run, tmp: ["report", run],
])
def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, capsys, make_args):
    try:
        code, out, err = cli(capsys, *make_args(run_dir, tmp_path))
    except SystemExit as exit_:  # argparse's own errors: the usage, then one error line
        code, (out, err) = exit_.code, capsys.readouterr()
    assert code == 2 and out == ""
    assert len([line for line in err.splitlines() if line.startswith("mnas")]) == 1, err
    assert "Traceback" not in err


def test_port_in_use_is_a_one_line_error(run_dir, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        code, out, err = cli(capsys, "dashboard", run_dir, "--port", taken.getsockname()[1])
    assert code == 2 and err.startswith("mnas dashboard: error: cannot listen on 127.0.0.1:") and err.count("\n") == 1


def test_report_command_writes_one_self_contained_file(run_dir, tmp_path, capsys):
    out = tmp_path / "report.html"
    code, _, err = cli(capsys, "report", run_dir, "--out", out)
    assert code == 0 and str(out) in err
    text = out.read_text()
    assert "<script src" not in text and "cdn." not in text.split("<script>", 1)[0]
    assert '"live":false' in text and "failed_1" in text and len(text) > 1_000_000


def test_dashboard_command_prints_its_url_and_stops_cleanly_on_ctrl_c(run_dir):
    # PYTHONFAULTHANDLER: if it does not stop, SIGABRT makes it print every thread's stack before it dies
    proc = subprocess.Popen([sys.executable, str(REPO / "launch.py"), "dashboard", str(run_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            # a test run in the background inherits SIGINT ignored: give the dashboard Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert " at http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "api/runs", timeout=10) as response:
            assert json.load(response)[0]["counts"]["ok"] == 16
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=10)
            pytest.fail("the dashboard did not stop on SIGINT within 30 s; where it was:\n" + proc.stderr.read())
        assert code == 0 and "dashboard stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_failures_figure_has_a_bar_per_reason_and_run(run_dir, tmp_path):
    clean = tmp_path / "clean"
    with ResultStore(clean) as store:
        store.add_child(ok_child(0, random.Random(0)))
    fig = failures_figure([snapshot_of(run_dir), snapshot_of(clean, "clean")])
    (bars,) = fig.data
    assert bars.meta == {"run": 0, "kind": "failures"}
    assert list(bars.y) == ["oom", "nan_loss"] and list(bars.x) == [2, 1]
    assert [a.text for a in failures_figure([snapshot_of(clean, "clean")]).layout.annotations] == \
        ["no failed children"]


def test_a_store_file_stands_for_its_run_directory(run_dir):
    source = DashboardSource([str(run_dir / "results.sqlite")])
    try:
        run = source.payload()["runs"][0]
    finally:
        source.close()
    assert run["label"] == "soft" and run["run_dir"] == str(run_dir)
    assert run["table"][0]["command"] == f"{views.mnas_prefix()} train --arch {run_dir}:1"
