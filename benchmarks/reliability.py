#!/usr/bin/env python
"""Reliability at scale (issue 7): run the reliability tests, slow ones included, and table what they exercised.

    python benchmarks/reliability.py [--write] [--quick] [--keep DIR] [--from DIR]

Runs pytest on the tests of issue 7 -- SIGKILL and --resume of the search driver, of `launch.py search` through
Ray and of `launch.py train`; a results-store writer killed mid-write; failing children of every kind; bad input
on the command line and property tests of the block-string parser and the space decoder; a node removed from a
three-node Ray cluster; the dashboard and `launch.py results` reading while another process writes -- with
MNAS_RELIABILITY_LOG pointing at a JSON-lines file. Each of those tests appends what it exercised and checked
there (tests/conftest.py: record_reliability), and this script sums the lines up per scenario:

    scenario | what was tried | survived | lost

Whether a scenario survived comes from pytest's own report (JUnit XML): a failed or skipped test shows as such in
the table whatever its lines say. The table is printed; --write also puts it into BENCHMARKS.md between the
`<!-- reliability -->` markers (appended the first time, rewritten atomically). Exit status 1 when a test
failed, 0 otherwise. About 10 minutes on one core, most of it the Ray and training runs (--quick skips those).
Pin it as you would pytest (e.g. `taskset -c 0`): the tests' processes inherit the affinity.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine, today, update_block  # noqa: E402
from mnas.search.failures import Failure  # noqa: E402

TAG = "reliability"
HEADING = "## Reliability (issue 7)"
LOG_ENV = "MNAS_RELIABILITY_LOG"  # tests/conftest.py's RELIABILITY_LOG

# What the kill points of the tests mean (search/driver.py's crash points; test_train_kill's exact kills).
DRIVER_MOMENTS = {"store": "before a child is stored", "feed": "child stored, not yet fed to the controller",
                  "update": "right after a PPO update", "save": "mid state-file write, before its rename",
                  "random": "at a random moment"}
# The failure code a failure injected as `kind` is recorded with (workers/trial.py), named through the codes'
# enum so that a renamed code cannot leave this table behind.
REASON_OF = {"exception": Failure.UNEXPECTED_ERROR.value, "nan_loss": Failure.NAN_LOSS.value,
             "worker_death": Failure.WORKER_ERROR.value, "conversion_error": Failure.LATENCY_ERROR.value,
             "too_large": Failure.TOO_LARGE.value}


# ---------------------------------------------------------------------------------------------------------------
# The scenarios: which tests, which lines, and how a row reads.


@dataclasses.dataclass(frozen=True)
class Scenario:
    title: str
    tests: tuple[str, ...]  # pytest node ids (a file runs all of its tests)
    kinds: tuple[str, ...]  # record_reliability kinds that belong here
    row: Callable[[list[dict]], tuple[str, str, str]]  # lines -> (what was tried, survived, lost)


def _sum(lines: list[dict], key: str) -> int:
    return sum(int(line.get(key) or 0) for line in lines)


def _kind(lines: list[dict], kind: str) -> list[dict]:
    return [line for line in lines if line["kind"] == kind]


def _lost(lines: list[dict], what: str = "children") -> str:
    lost, twice = _sum(lines, "lost"), _sum(lines, "twice")
    return f"{'nothing' if lost == twice == 0 else '**not nothing**'}: {lost} {what} lost, {twice} evaluated twice"


def _driver_moments(codes: list[str]) -> str:
    """'store:2', 'feed:3', 'feed:2' -> 'before a child is stored (`store:2`); child stored, ... (`feed:3`, ...)'."""
    points: dict[str, list[str]] = {}
    for code in codes:
        points.setdefault(code.split(":")[0], []).append(code)
    return "; ".join(f"{len(group)} x " * (len(set(group)) < len(group)) + DRIVER_MOMENTS.get(point, point)
                     + (f" (`{'`, `'.join(dict.fromkeys(group))}`)" if point in DRIVER_MOMENTS and point != "random"
                        else "")
                     for point, group in points.items())


def _driver_kills(lines: list[dict]) -> tuple[str, str, str]:
    line = lines[0]
    listed = _driver_moments(line["moments"])
    killed = ("SIGKILL" + "s" * (line["kills"] != 1) if line.get("how", "SIGKILL") == "SIGKILL"
              else "crashes of the driver in its own process (the crash point raises; a new driver resumes)")
    return (f"{line['kills']} {killed}: {listed}; {line['requested']} children, PPO updates of 2",
            f"{line['resumes']}/{line['kills']} resumes; final store holds exactly the {line['stored']} requested "
            f"children; controller step {line['step']} (expected {line['expected_step']})", _lost(lines))


def _trainer_moment(code: str) -> str:
    """'outside:after-epoch-1', 'before:checkpoint.npz:1', 'after:checkpoint.npz:3' in words."""
    when, _, rest = code.partition(":")
    if when == "outside":
        return f"from outside, once epoch {rest.rsplit('-', 1)[-1]} was on disk"
    name, _, n = rest.partition(":")
    return (f"mid write of {name} (its bytes on disk, before the rename)" if when == "before" else
            f"right after {name} write {n} (the last epoch), before metrics.csv")


def _trainer_kills(lines: list[dict]) -> tuple[str, str, str]:
    line = lines[0]
    identical = "equal to an uninterrupted run bit for bit" if line["identical_to_uninterrupted"] else "DIFFERENT"
    return (f"{line['kills']} SIGKILLs over {line['epochs']} epochs: "
            + "; ".join(_trainer_moment(code) for code in line["moments"]),
            f"{line['resumes']}/{line['kills']} resumes; weights, optimizer slots, weight average and metrics "
            f"{identical}; each epoch's row once", _lost(lines, "epochs").replace("evaluated", "written"))


def _store_kill(lines: list[dict]) -> tuple[str, str, str]:
    killed = _kind(lines, "store_writer_kill")[0]
    return (f"{killed['kills']} SIGKILL of a process adding children in a loop, after {killed['rows_at_kill']} rows",
            f"integrity check {killed['integrity']}; the replayed last write is a no-op; the next child is added",
            f"nothing: {killed['torn_rows']} torn rows")


def _failures(lines: list[dict]) -> tuple[str, str, str]:
    injected, recorded = Counter(), Counter()
    for line in lines:
        injected.update(line["injected"])
        recorded.update(line["recorded"])
    matched = sum(min(n, recorded[REASON_OF.get(kind, kind)]) for kind, n in injected.items())
    search = [line for line in lines if line.get("children")]
    tried = ", ".join(f"{n} x {kind}" for kind, n in sorted(injected.items()))
    survived = f"{matched}/{sum(injected.values())} recorded with their reason (" + ", ".join(
        f"{kind} -> `{REASON_OF.get(kind, kind)}`" for kind in sorted(injected)) + ")"
    if search:
        s = search[0]
        tried += (f" -- {sum(s['injected'].values())} of them in a search through Ray of {s['children']} children, "
                  "the rest in single children")
        survived += (f"; the search finished with all {s['children']} children ({s['ok']} ok), failed reward "
                     f"{', '.join(map(str, s['failed_rewards']))} as documented, controller step {s['step']} "
                     f"(expected {s['expected_step']}) with finite PPO statistics")
    return tried, survived, _lost(search) if search else "nothing dropped (single children)"


def _bad_input(lines: list[dict]) -> tuple[str, str, str]:
    cases = _kind(lines, "bad_input")
    fuzz = Counter()
    for line in _kind(lines, "fuzz"):
        fuzz[line["target"]] += line["examples"]
    ok = sum(line["status"] == 2 and line["error_lines"] == 1 for line in cases)
    tried = (f"{len(cases)} hand-written cases (describe, search configs and options, spaces, datasets, results, "
             f"dashboard, report, latency files, train, Ray's temporary folder); hypothesis: "
             + ", ".join(f"{n} inputs to the {target}" for target, n in sorted(fuzz.items())))
    survived = (f"{ok}/{len(cases)} exit 2 with one error line naming the bad token, no traceback; every generated "
                "input parsed and round-tripped or raised ValueError")
    left = _sum(cases, "left_behind")
    return tried, survived, f"{'nothing' if left == 0 else '**not nothing**'}: {left} files left behind"


def _dashboard_security(lines: list[dict]) -> tuple[str, str, str]:
    cases = [line["case"] for line in _kind(lines, "dashboard_security")]
    hosts = [case for case in cases if case.startswith("Host ")]
    others = [case for case in cases if not case.startswith("Host ")]
    refused = _sum(lines, "refused")
    return (f"{len(hosts)} requests for the runs' data and page naming another host (DNS rebinding), or none; "
            + "; ".join(others),
            f"{refused}/{len(cases)} refused: 421 (400 without a Host header) with a short body and no run data; the "
            "idle connection closed at the timeout; the connection beyond the limit answered 503 at once, and the "
            "server answered again once the slots came back",
            "nothing: no response to another host carried run data")


def _run_folder(lines: list[dict]) -> tuple[str, str, str]:
    cases = _kind(lines, "run_folder")
    refused = _sum(cases, "refused")
    written = _sum(cases, "written")
    return ("; ".join(line["case"] for line in cases),
            f"{refused} attempts refused with one line (exit 2) before writing; a killed owner's lock released by "
            "the kernel; the read-only run read in full",
            f"{'nothing' if written == 0 else '**not nothing**'}: {written} files written by refused attempts")


def _node_loss(lines: list[dict]) -> tuple[str, str, str]:
    line = lines[0]
    return (f"{line['nodes']} Ray nodes (a head without CPUs, {line['worker_nodes']} workers of 1 CPU), "
            f"{line['removed']} worker removed (not gracefully) while running a child; {line['requested']} children",
            f"{line['removed']}/{line['removed']} node losses; {line['retried']} trial{'s' * (line['retried'] != 1)} "
            "retried on the remaining node; "
            f"{line['ok']}/{line['requested']} children ok", _lost(lines))


def _readers(lines: list[dict]) -> tuple[str, str, str]:
    parts, checked = [], 0
    for line in _kind(lines, "concurrent_readers"):
        parts.append(f"dashboard server: {line['http_gets']} GETs of its data endpoints "
                     f"({line['http_gets_during_write']} while writing); `launch.py results --json`: "
                     f"{line['cli_runs']} runs ({line['cli_runs_during_write']} while writing); writer process: "
                     f"{line['children_written']} children, {line['controller_steps']} controller-stats rows")
        checked += line["rows_checked"]
    for line in _kind(lines, "store_reader"):
        parts.append(f"ResultStore reader: {line['reads']} reads racing a writer process of "
                     f"{line['children_written']} children")
    torn, down = _sum(lines, "torn_rows"), _sum(lines, "count_decreases")
    problems = _sum(lines, "problems")
    return ("; ".join(parts),
            f"every response parsed; row counts never went down; last reads saw every child; {checked} rows of the "
            "dashboard and the command checked field by field",
            f"{'nothing' if torn == down == problems == 0 else '**not nothing**'}: {torn} torn rows, "
            f"{problems} reader errors")


SCENARIOS = (
    Scenario("Search driver crashed at named moments in its process, resumed (real controller and store)",
             ("tests/test_crash_resume.py::test_crashes_at_named_moments_lose_nothing",),
             ("driver_kill",), _driver_kills),
    Scenario("`launch.py search` through Ray SIGKILLed, `--resume`",
             ("tests/test_search_cli.py::test_smoke_search_through_ray_survives_sigkill_resumes_extends_and_stops"
              "_on_ctrl_c",), ("search_cli_kill",), _driver_kills),
    Scenario("`launch.py train` SIGKILLed, `--resume`", ("tests/test_train_kill.py",), ("trainer_kill",),
             _trainer_kills),
    Scenario("Results store writer SIGKILLed",
             ("tests/test_results_store.py::test_a_killed_writer_leaves_no_torn_row_and_the_run_resumes",),
             ("store_writer_kill",), _store_kill),
    Scenario("Failing children", ("tests/test_failures.py",), ("child_failure",), _failures),
    Scenario("Bad input", ("tests/test_bad_input.py", "tests/test_space.py::test_parser_never_crashes_on_garbage",
                           "tests/test_space.py::test_decode_either_builds_a_member_or_raises",
                           "tests/test_space.py::test_block_strings_and_spaces_share_one_grammar",
                           "tests/test_space.py::test_every_space_that_loads_writes_block_strings_that_parse_back",
                           "tests/test_space.py::test_errors_echo_a_short_piece_of_a_huge_token",
                           "tests/test_space.py::test_depth_multiplier_must_be_finite_and_sane"),
             ("bad_input", "fuzz"), _bad_input),
    Scenario("Dashboard reached from elsewhere (issue 20)",
             ("tests/test_dashboard.py::test_requests_for_another_host_name_get_no_data",
              "tests/test_dashboard.py::test_a_silent_connection_is_closed_after_the_timeout",
              "tests/test_dashboard.py::test_connections_beyond_the_limit_get_503_at_once_and_slots_come_back"),
             ("dashboard_security",), _dashboard_security),
    Scenario("Run folders: a second owner, a search over another run, a resume under other rules or with children "
             "lost, a folder the reader may not write (issue 20)", ("tests/test_run_folder.py",), ("run_folder",),
             _run_folder),
    Scenario("Node removed from a Ray cluster mid-search", ("tests/test_cluster.py",), ("node_loss",), _node_loss),
    Scenario("Readers while a search writes",
             ("tests/test_concurrent_readers.py",
              "tests/test_results_store.py::test_reader_sees_only_whole_rows_while_a_writer_writes"),
             ("concurrent_readers", "store_reader"), _readers),
)


# ---------------------------------------------------------------------------------------------------------------
# Running pytest and reading what it reported.


def run_pytest(log: str, junit: str, quick: bool) -> tuple[int, float]:
    tests = [test for scenario in SCENARIOS for test in scenario.tests]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *tests]
    if quick:
        command[3:3] = ["-m", "not slow"]
    print("$", " ".join(command), file=sys.stderr, flush=True)
    start = time.monotonic()
    status = subprocess.run(command, cwd=ROOT, env={**os.environ, LOG_ENV: log}).returncode
    return status, time.monotonic() - start


def read_junit(path: str) -> dict[str, dict]:
    """Test node id -> {'outcome': passed|failed|skipped, 'seconds': float, 'message': str}."""
    outcomes = {}
    if not os.path.exists(path):
        return outcomes
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        node = f"{module}.py::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message") or ""
            elif child.tag == "skipped":
                outcome, message = "skipped", child.get("message") or ""
        outcomes[node] = {"outcome": outcome, "seconds": float(case.get("time") or 0), "message": message}
    return outcomes


def read_log(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _belongs(node: str, scenario: Scenario) -> bool:
    return any(node == test or node.startswith((test + "::", test + "[")) for test in scenario.tests)


# ---------------------------------------------------------------------------------------------------------------
# The table.


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def report(outcomes: dict[str, dict], lines: list[dict], seconds: float, quick: bool,
           command: str) -> tuple[str, bool]:
    """The markdown section, and whether every test passed (and, unless `quick`, every scenario ran)."""
    rows, timing, all_passed = [], [], True
    totals = Counter()
    for scenario in SCENARIOS:
        tests = {node: o for node, o in outcomes.items() if _belongs(node, scenario)}
        mine = [line for line in lines if line["kind"] in scenario.kinds]
        by = Counter(o["outcome"] for o in tests.values())
        failed = [node.split("::")[-1] for node, o in tests.items() if o["outcome"] == "failed"]
        skipped = {o["message"] for o in tests.values() if o["outcome"] == "skipped"}
        all_passed &= not failed and (bool(tests) or quick)
        if not tests:
            tried, survived, lost = "-", "not run (slow: --quick)" if quick else "**not run**", "-"
        elif failed:
            tried, survived, lost = "-", f"**FAILED**: {', '.join(failed)}", "see the test's report"
        elif not by["passed"]:
            tried, survived, lost = "-", f"skipped: {'; '.join(sorted(skipped))}", "-"
        elif not mine:  # passed, yet no line: the test lost its record_reliability call, or the variable
            all_passed = False
            tried, survived, lost = "-", "**passed but recorded nothing**", "-"
        else:
            tried, survived, lost = scenario.row(mine)
            if by["skipped"]:
                survived += f" ({by['skipped']} test(s) skipped: {'; '.join(sorted(skipped))})"
        if not failed:
            for line in mine:
                if line["kind"] in ("driver_kill", "search_cli_kill", "trainer_kill", "store_writer_kill"):
                    totals["kills" if line.get("how", "SIGKILL") == "SIGKILL" else "crashes"] += line["kills"]
            totals["injected"] += sum(sum(line["injected"].values()) for line in _kind(mine, "child_failure"))
            totals["bad"] += len(_kind(mine, "bad_input"))
            totals["generated"] += _sum(_kind(mine, "fuzz"), "examples")
            totals["nodes"] += _sum(_kind(mine, "node_loss"), "removed")
            totals["reads"] += sum(_sum(mine, key) for key in ("http_gets_during_write", "cli_runs_during_write",
                                                               "reads"))
        totals["lost"] += sum(_sum(mine, key) for key in ("lost", "twice", "torn_rows", "left_behind", "problems",
                                                         "count_decreases"))
        rows.append(f"| {_cell(scenario.title)} | {_cell(tried)} | {_cell(survived)} | {_cell(lost)} |")
        files = sorted({node.split("::")[0] for node in tests})
        timing.append(f"| {_cell(scenario.title)} | {by['passed']}/{len(tests)}"
                      + (f" ({by['skipped']} skipped)" if by["skipped"] else "")
                      + f" | {_seconds(sum(o['seconds'] for o in tests.values()))} | {', '.join(files) or '-'} |")
    lost = ("nothing" if totals["lost"] == 0 else f"**{totals['lost']} items** (children, epochs, rows or files)")
    out = [HEADING, "",
           f"`{command}` -- {machine()}; {today()}; {seconds / 60:.1f} min in all. The "
           f"reliability tests{' without the slow ones' if quick else ', slow ones included'}, each recording what "
           "it exercised (tests/conftest.py `record_reliability`); whether a scenario survived is pytest's verdict.",
           "", "| scenario | what was tried | survived | lost |", "|---|---|---|---|", *rows, "",
           f"In all: {totals['kills']} SIGKILLs and {totals['crashes']} crashes in process survived, {totals['injected']} failures injected and recorded, "
           f"{totals['bad']} bad inputs and {totals['generated']} generated ones tried, {totals['nodes']} node "
           f"loss{'es' * (totals['nodes'] != 1)} survived, {totals['reads']} reads racing a writer; lost: {lost}"
           + ("." if all_passed else "; **and a test failed or did not run**."),
           "", "| scenario | tests passed | seconds | tests |", "|---|---|---|---|", *timing]
    return "\n".join(out) + "\n", all_passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="put the table into BENCHMARKS.md (a full run only)")
    parser.add_argument("--quick", action="store_true",
                        help="skip the slow tests (Ray searches, training, the cluster): a check of this script")
    parser.add_argument("--keep", metavar="DIR", help="keep the tests' JSON lines and pytest's JUnit report in DIR")
    parser.add_argument("--from", dest="source", metavar="DIR",
                        help="run no test: table a run kept with --keep DIR")
    args = parser.parse_args(argv)
    if args.write and args.quick:
        parser.error("--write records a full run: drop --quick")
    work = os.path.abspath(args.source or args.keep or tempfile.mkdtemp(prefix="mnas-reliability-"))
    log, junit, meta = (os.path.join(work, name) for name in ("reliability.jsonl", "junit.xml", "run.json"))
    try:
        if args.source:
            if not os.path.exists(meta):
                parser.error(f"{work} holds no run kept with --keep")
            with open(meta, encoding="utf-8") as handle:
                kept = json.load(handle)
            status, seconds, quick = kept["status"], kept["seconds"], kept["quick"]
        else:
            os.makedirs(work, exist_ok=True)
            for stale in (log, junit, meta):
                if os.path.exists(stale):
                    os.unlink(stale)
            status, seconds = run_pytest(log, junit, args.quick)
            quick = args.quick
            with open(meta, "w", encoding="utf-8") as handle:
                json.dump({"status": status, "seconds": seconds, "quick": quick}, handle)
        if args.write and quick:
            parser.error("--write records a full run: that one was --quick")
        command = "python benchmarks/reliability.py" + (" --quick" if quick else "") + (" --write" * args.write)
        text, passed = report(read_junit(junit), read_log(log), seconds, quick, command)
    finally:
        if not (args.source or args.keep):
            shutil.rmtree(work, ignore_errors=True)
    print(text)
    if args.write:
        update_block(TAG, text)
        print(f"wrote the table to {os.path.join(ROOT, 'BENCHMARKS.md')}", file=sys.stderr)
    return 0 if status == 0 and passed else 1


if __name__ == "__main__":
    sys.exit(main())
