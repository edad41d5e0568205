#!/usr/bin/env python
"""Figures of a finished search run for BENCHMARKS.md: reward curve, Pareto set, overhead.

    python benchmarks/search_report.py runs/default [--append BENCHMARKS.md] [--command "make search"]

Overhead compares the search's wall time with the bare sum of its children's train + evaluate times (what the
same children would cost trained one after another with nothing else running), divided by the number of
workers: `wall / (sum(train + eval) / workers)`. Everything else (Ray start-up, TensorFlow import per worker,
model building, latency prediction, the controller, the store) is overhead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mnas.results.pareto import pareto_front  # noqa: E402
from mnas.results.store import ResultStore  # noqa: E402


def _seconds(iso_start: str, iso_end: str) -> float:
    return (dt.datetime.fromisoformat(iso_end) - dt.datetime.fromisoformat(iso_start)).total_seconds()


def report(run_dir: str, command: str) -> str:
    store = ResultStore(run_dir, readonly=True)
    frame = store.children(status="all")
    config = store.get_meta("config", {}) or {}
    stats = store.controller_stats()
    workers = int(config.get("workers", 1))
    ok = frame[frame["status"] == "ok"].sort_values("sample")
    lines = [f"### Search `{config.get('name', os.path.basename(run_dir))}` "
             f"({dt.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores)", "",
             f"Command: `{command}`. Strategy {config.get('strategy')}, {len(frame)} children "
             f"({(frame['status'] != 'ok').sum()} failed), {workers} workers, reward target "
             f"{config.get('reward', {}).get('target_ms')} ms ({config.get('reward', {}).get('preset')}), "
             f"latency {config.get('latency')}.", ""]
    # reward curve: mean and best reward per block of samples
    size = max(1, len(ok) // 8)
    lines += ["Reward over the search (children in sampling order, blocks of %d):" % size, "",
              "| samples | mean reward | best so far | mean accuracy | mean latency (ms) |", "|---|---|---|---|---|"]
    best = float("-inf")
    for start in range(0, len(ok), size):
        chunk = ok.iloc[start:start + size]
        best = max(best, chunk["reward"].max())
        lines.append(f"| {int(chunk['sample'].min())}-{int(chunk['sample'].max())} | {chunk['reward'].mean():.4f} | "
                     f"{best:.4f} | {chunk['accuracy'].mean():.4f} | {chunk['latency_ms'].mean():.1f} |")
    if len(stats):
        lines += ["", "Controller: entropy " + " -> ".join(f"{v:.3f}" for v in stats["entropy"].tolist()[::max(1, len(stats) // 6)])
                  + f" over {len(stats)} PPO updates."]
    front = pareto_front(frame)
    lines += ["", "Pareto set (proxy accuracy vs predicted latency):", "",
              "| accuracy | latency (ms) | reward | params (M) | madds (M) | arch |", "|---|---|---|---|---|---|"]
    for row in front.itertuples():
        lines.append(f"| {row.accuracy:.4f} | {row.latency_ms:.1f} | {row.reward:.4f} | {row.params / 1e6:.2f} | "
                     f"{row.madds / 1e6:.0f} | `{row.arch}` |")
    started = store.get_meta("started_at")
    finished = store.get_meta("finished_at")
    busy = (frame["train_seconds"].fillna(0) + frame["eval_seconds"].fillna(0)).sum()
    if started and finished:
        wall = _seconds(started.replace("Z", "+00:00"), finished.replace("Z", "+00:00"))
        ideal = busy / workers
        lines += ["", f"Wall time {wall / 60:.1f} min; children's train + evaluate time {busy / 60:.1f} min "
                      f"(sum over children), / {workers} workers = {ideal / 60:.1f} min; "
                      f"wall / ideal = {wall / ideal:.2f} (overhead {100 * (wall / ideal - 1):.0f}%)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a search's run folder (--out of `mnas search`)")
    parser.add_argument("--append", help="append the section to this markdown file")
    parser.add_argument("--command", default="make search", help="the command that produced the run")
    args = parser.parse_args()
    text = report(args.run_dir, args.command)
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
