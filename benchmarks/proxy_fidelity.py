"""Proxy fidelity: does the one-minute proxy rank children as a much longer training of the same children does?

Children: the first N trained children of the MNAS-Bench table in collection order (uniformly random children of the
`mnasnet` space, already scored on the default proxy; named RUN:SAMPLE) plus MnasNet-A1, MobileNetV2 and
mnasnet-small (scored on the default proxy here). Each is then trained much longer -- the same adaptation and recipe
(configs/default.yaml's proxy, as the collection), 2 epochs over the first 50,000 training images (2.5x the proxy's
images, 5x its steps) and scored on the last 10,000 -- and the two rankings are compared: Spearman's rho and Kendall's
tau, with the long training's cost.

    .venv/bin/python benchmarks/proxy_fidelity.py --children 27 --jsonl fidelity.jsonl [--write]

Hours of CPU (about 4 minutes of one core a long training, 30 of them; `--workers 2` runs two at a time): run it in
the background, resumable -- `--jsonl` keeps one line a training and a re-run skips what the file holds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine, report, today  # noqa: E402
from benchmarks.mnas_bench import DEFAULT_TABLE, read_bench  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.yaml")

REFERENCES = ("mnasnet-a1", "mobilenetv2", "mnasnet-small")
LONG = {"epochs": 2, "train_subset": 50000, "heldout": 10000}


def children(table: str, count: int) -> list[tuple[str, object, float | None]]:
    """(label, architecture, proxy accuracy or None) for the table's first `count` trained children and the
    references."""
    from mnas.search.registry import ARCHITECTURES, load_space

    frame = read_bench(table)
    ok = frame[frame["status"] == "ok"].head(count)
    if len(ok) < count:
        raise ValueError(f"{table} has {len(ok)} trained children; {count} asked for")
    space = load_space("mnasnet")
    chosen = [(f"{row.run}:{int(row.sample)}", space.decode(json.loads(row.indices)), float(row.accuracy))
              for row in ok.itertuples()]
    return chosen + [(name, ARCHITECTURES[name], None) for name in REFERENCES]


def proxy_configs(path: str = CONFIG):
    """(the proxy, the long training): the collection's proxy as configs/default.yaml sets it (its file-order split
    included), and the same with `LONG`'s images and epochs."""
    import dataclasses

    import yaml

    from mnas.search.proxy import ProxyConfig

    with open(path, encoding="utf-8") as handle:
        proxy = ProxyConfig.from_dict(yaml.safe_load(handle)["proxy"])
    return proxy, dataclasses.replace(proxy, **LONG)


def _train(label: str, arch, config) -> dict:
    from mnas.search.failures import ChildFailed
    from mnas.workers.proxy import train_child

    started = time.perf_counter()
    try:
        result = train_child(arch, config)
        out = {"status": "ok", "accuracy": result.accuracy, "cpu_seconds": result.cpu_seconds}
    except ChildFailed as err:
        out = {"status": err.code.value, "message": err.message}
    out.update(label=label, kind="long" if config.heldout == LONG["heldout"] else "proxy",
               wall_seconds=time.perf_counter() - started)
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def _run_all(todo, workers: int):
    """Yields the trainings' results as they end: in this process with one worker, else in `workers` spawned
    processes (each training uses one core, as a collection's child does)."""
    if workers == 1:
        yield from (_train(*job) for job in todo)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from (future.result() for future in as_completed([pool.submit(_train, *job) for job in todo]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--children", type=int, default=27, help="children of the table (plus the 3 references)")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="MNAS-Bench's table, where the children come "
                                                               "from (default: %(default)s)")
    parser.add_argument("--jsonl", required=True, help="one JSON line a training; a re-run skips what it holds")
    parser.add_argument("--workers", type=int, default=1,
                        help="trainings run side by side, one core each (default 1; 2 halves the wall time on an "
                             "idle 2-core machine)")
    parser.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    from mnas.search.surrogate import kendall, spearman

    try:
        chosen = children(args.table, args.children)
    except (OSError, ValueError) as err:
        print(f"proxy_fidelity: {err}", file=sys.stderr)
        return 2
    runs = []
    if os.path.exists(args.jsonl):
        with open(args.jsonl, encoding="utf-8") as handle:
            runs = [json.loads(line) for line in handle if line.strip()]
    done = {(r["label"], r["kind"]) for r in runs}
    proxy, long = proxy_configs()
    todo = [(label, arch, config) for label, arch, proxy_accuracy in chosen
            for kind, config in [("long", long)] + ([("proxy", proxy)] if proxy_accuracy is None else [])
            if (label, kind) not in done]
    print(f"{len(done)} trainings in {args.jsonl}, {len(todo)} to run on {args.workers} worker(s)", file=sys.stderr)
    for result in _run_all(todo, args.workers):
        runs.append(result)
        with open(args.jsonl, "a", encoding="utf-8") as handle:  # one line a training, appended as it ends
            handle.write(json.dumps(result) + "\n")
    by = {(r["label"], r["kind"]): r for r in runs if r["status"] == "ok"}
    rows = []
    for label, _, proxy_accuracy in chosen:
        short = proxy_accuracy if proxy_accuracy is not None else by.get((label, "proxy"), {}).get("accuracy")
        longer = by.get((label, "long"), {}).get("accuracy")
        if short is not None and longer is not None:
            rows.append((label, short, longer, by[(label, "long")]["cpu_seconds"]))
    if len(rows) < 3:
        print("too few children trained both ways")
        return 1
    shorts, longs = [r[1] for r in rows], [r[2] for r in rows]
    lines = [f"`python benchmarks/proxy_fidelity.py --children {args.children}`", "",
             f"{machine()}; {today()}. Long training: the proxy's adaptation and recipe with "
             f"`{json.dumps(LONG)}` (2.5x the proxy's images, 5x its steps).", "",
             "| child | proxy accuracy | long-training accuracy | long-training CPU s |", "|---|---|---|---|"]
    lines += [f"| {label} | {s:.4f} | {lo:.4f} | {cpu:.0f} |" for label, s, lo, cpu in rows]
    lines += ["", f"* **{len(rows)} children**: Spearman {spearman(shorts, longs):.3f}, Kendall "
              f"{kendall(shorts, longs):.3f} between the proxy's accuracy and the long training's.",
              f"* **Cost of the long training**: median {statistics.median(r[3] for r in rows):.0f} CPU s a child, "
              f"{sum(r[3] for r in rows) / 3600:.1f} CPU hours in all."]
    report("\n".join(lines), "proxy:fidelity", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
