#!/usr/bin/env python
"""How far this host's measurements move between two runs of benchmarks/latency_host.py.

    python benchmarks/latency_drift.py [--old-commit beb78ea] [--write]

Compares the shipped measurements (benchmarks/results/latency_host.json and lut_host_224.json) with the same
files as an earlier commit holds them: the same networks (the same seeds) and the same layers, measured in two
sessions on machines of this kind. A whole network and a layer timed alone should move together if the machine
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
from search.latency.lut import LookupTable  # noqa: E402

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-commit", default="beb78ea", help="the commit holding the earlier run (default beb78ea)")
    parser.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    args = parser.parse_args(argv)
    old, new = at_commit(args.old_commit, RESULTS), json.load(open(os.path.join(ROOT, RESULTS), encoding="utf-8"))
    nets = {what: np.array(new["measured_ms"][what]) / np.array(old["measured_ms"][what]) for what in ("calib", "test")}
    networks = np.r_[nets["calib"], nets["test"]]
    old_table = LookupTable(at_commit(args.old_commit, TABLE)["layers"])
    new_table = LookupTable.load(os.path.join(ROOT, TABLE))
    common = [k for k in old_table.layers if k in new_table.layers]
    layers = np.array([new_table.layers[k] / old_table.layers[k] for k in common])
    # each network's own layers, summed, in both tables: what a perfect per-layer model would predict moving
    from search.registry import load_space

    space = load_space(new.get("space", "mnasnet"))
    size = new.get("resolution", 224)
    archs = ([space.sample(10_000 + i).replace(resolution=size) for i in range(len(nets["calib"]))]
             + [space.sample(20_000 + i).replace(resolution=size) for i in range(len(nets["test"]))])
    sums = np.array([new_table.layer_sum(a) / old_table.layer_sum(a) for a in archs])
    unexplained = networks / sums
    key = "lookup table, calibrated (20 networks)"
    table_then = old["analysis"]["results"][key]["within10"]
    table_now = new["analysis"]["results"][key]["within10"]
    layer_now = next(v["within10"] for k, v in new["analysis"]["results"].items() if k.startswith("layer model, every"))
    text = f"""### How far this host's measurements move between sessions

`python benchmarks/latency_drift.py --old-commit {args.old_commit} --write` -- {machine(shared=False)}; {today()}.
The same {len(networks)} networks and {len(common)} layers of benchmarks/latency_host.py, measured in an earlier
session (commit {args.old_commit}) and in this one, both times with nothing of ours running beside them. Ratio
new / old, min / 10th / median / 90th percentile / max:

| what | new / old |
|---|---|
| a layer timed alone | {percentiles(layers)} |
| a network's layers, summed | {percentiles(sums)} |
| the network timed whole | {percentiles(networks)} |
| the network against its summed layers | {percentiles(unexplained)} |

Layers moved together, by a few percent. Whole networks moved by up to {100 * (networks.max() - 1):.0f}%, each by its own
amount, and {np.mean(np.abs(unexplained - 1) > 0.10):.0%} of them by more than 10% beyond what their layers did. A machine of this kind is
shared with other tenants; a network, unlike a layer timed alone, runs out of the caches and the memory bandwidth
they likely share, so its timing depends on the session. The calibrated table, built and judged within one
session each time, put {table_then:.0%} of the test networks within 10% in the earlier session and {table_now:.0%} in this one
(the section above, where the layer model does {layer_now:.0%}): on this machine the +-10% figure on whole networks is
a property of the session as much as of the model.
"""
    report(text, "latency:drift", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
