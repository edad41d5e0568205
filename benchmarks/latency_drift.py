#!/usr/bin/env python
"""How far this host's measurements move between two runs of benchmarks/latency_host.py.

    python benchmarks/latency_drift.py [--old-commit 8ad907b --old-commit 0c3d938 ...] [--write]

Compares the shipped measurements (benchmarks/results/latency_host.json and lut_host_224.json) with the same
files as earlier commits hold them: the same networks (the same seeds) and the same layers, measured in
different sessions on machines of this kind. A whole network and a layer timed alone should move together if the machine
were only faster or slower; when networks move much more than their layers, no per-layer model, measured or
learned, can follow them, and a +-10% goal on whole networks measures the machine's weather. Pure Python, a few
seconds; needs git (the earlier files come from `git show`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from benchmarks.common import machine, report, today  # noqa: E402
from mnas.search.latency.lut import LookupTable  # noqa: E402

RESULTS = "benchmarks/results/latency_host.json"
TABLE = "benchmarks/results/lut_host_224.json"


def at_commit(commit: str, path: str) -> dict:
    done = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cannot read {path} at {commit}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def percentiles(values) -> str:
    p = np.percentile(values, [0, 10, 50, 90, 100])
    return " / ".join(f"{v:.2f}" for v in p)


def ratios(old: dict, old_table: LookupTable, new: dict, new_table: LookupTable, archs) -> dict:
    """new / old for the layers both tables hold, each network's summed layers, each network timed whole, and
    each network against what its layers did."""
    networks = np.concatenate([np.array(new["measured_ms"][w]) / np.array(old["measured_ms"][w])
                               for w in ("calib", "test")])
    common = [k for k in old_table.layers if k in new_table.layers]
    sums = np.array([new_table.layer_sum(a) / old_table.layer_sum(a) for a in archs])
    return {"layers": np.array([new_table.layers[k] / old_table.layers[k] for k in common]), "sums": sums,
            "networks": networks, "unexplained": networks / sums}


def protocol(data: dict) -> str:
    passes, ends = data.get("passes", 1), data.get("pass_ends_min")
    if passes == 1:
        return "1 pass"
    return f"{passes} passes over {ends[-1]:.0f} min" if ends else f"{passes} passes"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-commit", action="append", default=None,
                        help="a commit holding an earlier run (repeatable; default: 8ad907b, 0c3d938, 13eb95e, "
                             "76ff248, 5de535c: one pass, then passes within minutes twice, then over the whole run "
                             "twice)")
    parser.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    args = parser.parse_args(argv)
    commits = args.old_commit or ["8ad907b", "0c3d938", "13eb95e", "76ff248", "5de535c"]
    new = json.load(open(os.path.join(ROOT, RESULTS), encoding="utf-8"))
    new_table = LookupTable.load(os.path.join(ROOT, TABLE))
    from mnas.search.registry import load_space

    space = load_space(new.get("space", "mnasnet"))
    size = new.get("resolution", 224)
    archs = ([space.sample(10_000 + i).replace(resolution=size) for i in range(len(new["measured_ms"]["calib"]))]
             + [space.sample(20_000 + i).replace(resolution=size) for i in range(len(new["measured_ms"]["test"]))])
    key = "lookup table, calibrated (20 networks)"
    runs = {}
    for commit in commits:
        old = at_commit(commit, RESULTS)
        runs[commit] = (old, ratios(old, LookupTable(at_commit(commit, TABLE)["layers"]), new, new_table, archs))
    names = {"layers": "a layer timed alone", "sums": "a network's layers, summed",
             "networks": "the network timed whole", "unexplained": "the network against its summed layers"}
    header = " | ".join(f"new / {c} ({protocol(old)})" for c, (old, _) in runs.items())
    rows = [f"| {label} | " + " | ".join(percentiles(r[what]) for _, r in runs.values()) + " |"
            for what, label in names.items()]
    beyond = ", ".join(f"{np.mean(np.abs(r['unexplained'] - 1) > 0.10):.0%} against {c}" for c, (_, r) in runs.items())
    then = ", ".join(f"{old['analysis']['results'][key]['within10']:.0%} at {c}" for c, (old, _) in runs.items())
    spread = np.array(new.get("pass_spread", [0.0]))
    spread_runs = [(c, old) for c, (old, _) in runs.items() if old.get("pass_ends_min")] + \
        ([("now", new)] if new.get("pass_ends_min") else [])
    spread_met = [c for c, run in spread_runs if run["analysis"]["results"][key]["within10"] >= 0.95]
    spread_text = (f"; spread over the whole run, with the table's layers measured between them, they met the goal "
                   f"in {len(spread_met)} of {len(spread_runs)} runs ({', '.join(c for c, _ in spread_runs)})"
                   if spread_runs else "")
    text = f"""### How far this host's measurements move between sessions

`python benchmarks/latency_drift.py {' '.join(f'--old-commit {c}' for c in commits)} --write` -- {machine(shared=False)}; {today()}.
The same {len(archs)} networks and their layers of benchmarks/latency_host.py, measured in earlier sessions
(the commits named) and in this one ({protocol(new)}), each time with nothing of ours running beside them.
Ratio new / old, min / 10th / median / 90th percentile / max:

| what | {header} |
|---|{'---|' * len(runs)}
{chr(10).join(rows)}

A machine of this kind is shared with other tenants, whose load comes and goes: in this session a network's
{protocol(new)} differed by {100 * np.median(spread):.0f}% at the median (90th percentile {100 * np.percentile(spread, 90):.0f}%).
Layers timed alone, which run from the core's own cache, move less between sessions than networks, which
stream their weights through the caches and the memory the tenants share. Against what its layers did, a
network moved by more than 10% in {beyond}. The calibrated table, built and judged within one session each
time, put {then} and {new['analysis']['results'][key]['within10']:.0%} now of the test networks within 10%. Passes
taken within a few minutes remove the load that comes and goes over seconds, not one that lasts through all of
them (13eb95e){spread_text}.
"""
    report(text, "latency:drift", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
