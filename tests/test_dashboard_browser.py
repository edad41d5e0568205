"""The dashboard and the report in a real browser: Debian's Chromium, headless, driven by Playwright.

What a person would check by eye, checked by the page's own state: the frontier trace holds exactly the Pareto
front computed here, hovering a child shows its block strings, clicking one draws its blocks, the table sorts, the
colour mode switches, and the live page picks up a child written while it is open. Screenshots go to
a temporary folder (or MNAS_TEST_ARTIFACTS, when set) for a human to look at; nothing is written into the checkout.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import threading
from pathlib import Path

import pytest

from mnas.results.dashboard import write_report
from mnas.results.pareto import pareto_front
from mnas.results.server import DashboardServer
from mnas.results.store import ResultStore
from mnas.search.arch import decode_block
from test_dashboard import make_run, ok_child

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("MNAS_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "mnas-test-artifacts")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[test]')")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make test does) to run the browser tests",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}") if message.type == "error" else None)
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.problems = problems
    yield page
    context.close()
    assert not problems, problems


def wait_drawn(page) -> None:
    page.wait_for_function("document.body.dataset.version && document.querySelector('#scatter .scatterlayer')")


def traces(page, kind: str) -> list[dict]:
    """The scatter's traces of one kind as Plotly holds them in the page."""
    return page.evaluate("""kind => document.getElementById('scatter').data
        .filter(t => t.meta && t.meta.kind === kind)
        .map(t => ({run: t.meta.run, x: Array.from(t.x), y: Array.from(t.y),
                    ids: t.customdata.map(c => c[1]), color: t.marker.color}))""", kind)


def check_frontier(page, run_dirs: list[Path]) -> None:
    for run, run_dir in enumerate(run_dirs):
        with ResultStore(run_dir, readonly=True) as store:
            children = store.children()
        front = pareto_front(children)
        (trace,) = [t for t in traces(page, "frontier") if t["run"] == run]
        assert trace["ids"] == list(front["trial_id"])
        assert trace["x"] == pytest.approx(list(front["latency_ms"]))
        assert trace["y"] == pytest.approx(list(front["accuracy"]))
        (every,) = [t for t in traces(page, "children") if t["run"] == run]
        assert sorted(every["ids"]) == sorted(children.loc[children["status"] == "ok", "trial_id"])
    shapes = page.evaluate("document.getElementById('scatter').layout.shapes.map(s => s.x0)")
    assert shapes == [75.0]


def point_position(page, trace_kind: str, trial_id: str) -> tuple[float, float]:
    """Where a child's marker is on screen: the centre of its drawn point in the page (the n-th trace's SVG group
    holds its points in data order), found through the figure's public `data`, not Plotly's internals."""
    return tuple(page.evaluate("""([kind, id]) => {
        const gd = document.getElementById('scatter');
        const t = gd.data.findIndex(tr => tr.meta && tr.meta.kind === kind && tr.customdata.some(c => c[1] === id));
        const i = gd.data[t].customdata.findIndex(c => c[1] === id);
        const group = gd.querySelectorAll('.scatterlayer .trace')[t];
        const box = group.querySelectorAll('.points path.point')[i].getBoundingClientRect();
        return [box.left + box.width / 2, box.top + box.height / 2];
    }""", [trace_kind, trial_id]))


def check_hover_and_click(page, run_dir: Path) -> None:
    """Hover a frontier child: its blocks, params, multiply-adds, latency source; click it: its block diagram."""
    with ResultStore(run_dir, readonly=True) as store:
        front = pareto_front(store.children())
    child = front.iloc[len(front) // 2]
    x, y = point_position(page, "frontier", child["trial_id"])
    page.mouse.move(x, y)
    hover = page.locator("#scatter .hoverlayer")
    sync_api.expect(hover).to_contain_text(child["trial_id"])
    text = hover.text_content()
    assert child["arch"].split()[-1] in text and "pixel1-predicted" in text
    assert f"{child['params'] / 1e6:.2f}M params" in text and f"{child['madds'] / 1e6:.2f}M multiply-adds" in text
    page.mouse.click(x, y)
    detail = page.locator("#detail")
    try:  # headless Chromium now and then drops a click that lands while the hover label is being drawn
        sync_api.expect(detail).to_have_attribute("data-trial", child["trial_id"], timeout=2000)
    except AssertionError:
        page.mouse.click(x, y)
    check_detail(page, child)


def check_detail(page, child) -> None:
    detail = page.locator("#detail")
    sync_api.expect(detail).to_have_attribute("data-trial", child["trial_id"])
    blocks = child["arch"].split()
    sync_api.expect(detail.locator(".arch-block")).to_have_count(len(blocks))
    assert detail.locator(".arch-block .op").all_inner_texts() == [decode_block(b).op for b in blocks]
    assert detail.locator(".arch-block .filters").all_inner_texts() == [
        f"{decode_block(b).input_filters}→{decode_block(b).output_filters}" for b in blocks]


def check_table(page, run_dir: Path) -> None:
    """Rows sort by a clicked column; a clicked row shows its child; commands replay by rank or frontier place."""
    rows = page.locator("#children-table tbody tr")
    commands = page.locator("#children-table code.cmd").all_inner_texts()
    assert commands and all(re.fullmatch(rf"\S*mnas train --arch {re.escape(str(run_dir))}:(pareto:)?\d+", c)
                            for c in commands)
    page.click("#children-table th[data-key=latency_ms]")
    latencies = [float(cell) for cell in page.locator("#children-table td[data-key=latency_ms]").all_inner_texts()]
    assert latencies == sorted(latencies) and len(latencies) == rows.count()
    rows.nth(2).click()
    trial_id = rows.nth(2).get_attribute("data-trial")
    with ResultStore(run_dir, readonly=True) as store:
        check_detail(page, store.child(trial_id))


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_live_dashboard_in_chromium(page, tmp_path):
    run_dir = make_run(tmp_path / "soft")
    server = DashboardServer([str(run_dir)], port=0, refresh_seconds=0.5)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(server.url)
        wait_drawn(page)
        check_frontier(page, [run_dir])
        assert "3 failed: 2 × oom, 1 × nan_loss" in page.inner_text("#failure-summary")
        check_hover_and_click(page, run_dir)
        check_table(page, run_dir)

        # Colour by search step; the choice survives a refresh.
        page.locator("#scatter .updatemenu-button", has_text="search step").click()
        page.wait_for_function("Array.from(document.getElementById('scatter').data[0].marker.color).join() === "
                               "Array.from({length: 16}, (_, i) => Math.floor(i / 4)).join()")
        assert page.evaluate("document.getElementById('scatter').layout.coloraxis.colorscale[0][1]") == "#0d0887"
        assert "controller step" in page.text_content("#scatter .colorbar")

        # A child written while the page is open appears by itself: count, scatter and all.
        version = page.evaluate("document.body.dataset.version")
        with ResultStore(run_dir) as store:
            store.add_child(ok_child(40, random.Random(7), "late_child"))
        sync_api.expect(page.locator(".run-total[data-run='0']")).to_have_text("21", timeout=10_000)
        assert page.evaluate("document.body.dataset.version") != version
        assert "late_child" in traces(page, "children")[0]["ids"]
        assert traces(page, "children")[0]["color"][-1] == 10  # still coloured by step (sample 40 // 4)
        screenshot(page, "dashboard.png")
        assert all(url.startswith(server.url) for url in requests), requests  # nothing from the internet
    finally:
        # The page polls its server: close it before the server goes, or a poll cut off mid-way is logged as the
        # page's console error (seen once in a clean-clone run).
        page.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_static_report_in_chromium(page, tmp_path):
    soft = make_run(tmp_path / "soft")
    hard = make_run(tmp_path / "hard", seed=3, preset="hard")
    with ResultStore(hard) as store:  # a reason that tries to be markup must stay text
        store.add_child({"trial_id": "evil", "arch": "r1_k3_s11_e1_i32_o16", "status": "failed",
                         "failure_code": "oom", "failure_detail": "</script><script>alert('x')</script>"})
    out = write_report([str(soft), str(hard)], tmp_path / "report.html")
    text = out.read_text()
    assert not re.search(r"<script[^>]+src\s*=", text, re.I)  # plotly.js and the data are inside the file
    assert not re.search(r"""<(link|img|iframe)[^>]+(href|src)\s*=\s*["']?https?:""", text, re.I)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(out.as_uri())
    wait_drawn(page)
    check_frontier(page, [soft, hard])
    assert len({t["color"] for t in traces(page, "frontier")}) == 2  # each run its own colour
    assert "4 failed: 3 × oom, 1 × nan_loss" in page.inner_text("#failure-summary")  # counted by its code ...
    detail = page.evaluate("() => window.mnasDashboard.payload.runs[1].children.evil.failure_detail")
    assert detail == "</script><script>alert('x')</script>"         # ... and its detail is data, never run
    check_hover_and_click(page, soft)
    assert page.locator("#children-table th[data-key=run]").count() == 1
    screenshot(page, "report.png")
    assert all(url.startswith("file://") for url in requests), requests
