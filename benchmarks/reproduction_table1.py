#!/usr/bin/env python
"""Table 1 of REPRODUCTION.md (issue 18, part 3): the found and the published models trained with one recipe.

    python benchmarks/reproduction.py table1 [--epochs 1] [--batch-size 32] [--seeds 2] [--out runs/reproduction-table1]

The models found by the searches -- found-75-soft (the paper's setting for MnasNet-A1: soft reward, T = 75 ms),
found-75-hard (hard reward, T = 75 ms: a found model at MobileNetV2's and A1's latency) and found-23-hard (hard
reward, T = 23 ms: a mnasnet-small-like target; the soft search is the same search at every T, so the small one
comes from the hard search) -- beside MnasNet-A1, mnasnet-small, MobileNetV2 1.0 and 0.35, each trained by
`launch.py train` with one recipe and budget (--epochs, Fashion-MNIST, its 10,000 test images) for --seeds seeds,
one folder per (model, seed) under --out. A found model is by default its search's best on the surrogate (the
JSON of `reproduction.py surrogate`); `--found NAME=ARCH` takes another (e.g. found-75-soft=RUN_DIR:1, a real
search's best). Each is frozen in --out/archs/NAME.txt on the first run, its source in the file's first line, so
that a later run trains the same models. Resumable: finished runs are skipped, interrupted ones continued with
`train --resume` (also when --epochs grows; a run resumes from its last finished epoch). Then the table of the
finished ones (--json, for `report`): predicted Pixel 1 latency, params and multiply-adds of the deployment model
(224x224, 1000 classes), accuracy mean and seed spread. Hours: it prints an estimate from the throughput of the
runs it has seen (`--dry-run` plans only, and writes nothing).

The command lives in `reproduction.py` (one CLI for the report); this module holds its planning, its bookkeeping of
finished and interrupted runs, and its table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import jsonable, machine, today  # noqa: E402
from benchmarks.reward_shape import RESOLUTION, SPACE  # noqa: E402
from mnas.search.fileio import atomic_write, write_json_atomic  # noqa: E402

DEFAULT_TABLE1 = os.path.join("runs", "reproduction-table1")
TABLE1_JSON = os.path.join(ROOT, "benchmarks", "results", "reproduction_table1.json")

# Table 1's models: name -> (ARCH for `train`, extra `train` arguments, depth multiplier for the counts).
NAMED_MODELS = {"mnasnet-a1": ("mnasnet-a1", (), 1.0), "mnasnet-small": ("mnasnet-small", (), 1.0),
                "mobilenetv2": ("mobilenetv2", (), 1.0),
                "mobilenetv2-0.35": ("mobilenetv2", ("--depth-multiplier", "0.35"), 0.35)}
# Found models: name -> (T, the reward preset of the search whose best it is). The soft search is the same at every
# T, so its best at 23 ms is its best at 75 ms: the small one comes from the hard search.
FOUND_MODELS = {"found-75-soft": (75.0, "soft"), "found-75-hard": (75.0, "hard"), "found-23-hard": (23.0, "hard")}
TABLE1_MODELS = tuple(FOUND_MODELS) + tuple(NAMED_MODELS)
# Published ImageNet figures (params M, multiply-adds M, top-1 %, Pixel 1 ms): the paper's Table 1, and TF-slim's
# checkpoint table for MobileNetV2 0.35 (no Pixel 1 latency published beside it).
PUBLISHED = {"mnasnet-a1": (3.9, 312, 75.2, 78), "mnasnet-small": (2.0, 68, 66.0, 23.2),
             "mobilenetv2": (3.4, 300, 72.0, 75), "mobilenetv2-0.35": (1.7, 59, 60.3, None)}


def job_state(folder: str, epochs: int) -> str:
    """'done' (summary.json with at least `epochs` epochs), 'resume' (a run was started: config.json), 'new'."""
    summary = os.path.join(folder, "summary.json")
    if os.path.exists(summary):
        with open(summary, encoding="utf-8") as f:
            if int(json.load(f).get("epochs", 0)) >= epochs:
                return "done"
    return "resume" if os.path.exists(os.path.join(folder, "config.json")) else "new"


def plan_jobs(out: str, models: dict[str, tuple[str, tuple]], seeds: int, epochs: int,
              train_args: tuple = ()) -> list[dict]:
    """One job per (model, seed): its folder, state and the `launch.py train` arguments that run it."""
    jobs = []
    for name, (arch, extra) in models.items():
        for seed in range(seeds):
            folder = os.path.join(out, name, f"seed{seed}")
            state = job_state(folder, epochs)
            argv = ["train", "--arch", arch, "--epochs", str(epochs), "--seed", str(seed), "--out", folder,
                    *extra, *train_args] + (["--resume"] if state == "resume" else [])
            jobs.append({"model": name, "seed": seed, "folder": folder, "state": state, "argv": argv})
    return jobs


def run_jobs(jobs: list[dict], runner, epochs: int, log=print) -> list[dict]:
    """Runs every job not done, in order; a failed one is reported and the rest still run. Returns the jobs with
    their final state and return code."""
    for job in jobs:
        if job["state"] == "done":
            log(f"{job['model']} seed {job['seed']}: done, skipped")
            continue
        log(f"{job['model']} seed {job['seed']}: {'resuming' if job['state'] == 'resume' else 'training'} -> "
            f"{job['folder']}")
        job["returncode"] = runner(job["argv"])
        job["state"] = job_state(job["folder"], epochs)
        if job["state"] != "done":
            log(f"{job['model']} seed {job['seed']}: not finished (return code {job['returncode']}); "
                "run the same command again to resume it")
    return jobs


def launch_runner(argv: list[str]) -> int:
    return subprocess.call([sys.executable, os.path.join(ROOT, "launch.py"), *argv])


def collect(jobs: list[dict], counts: dict[str, dict]) -> list[dict]:
    """Table 1's rows from the finished jobs: accuracy (averaged weights, test split) per seed, mean, sd."""
    rows = []
    for name in dict.fromkeys(j["model"] for j in jobs):
        finished = [j for j in jobs if j["model"] == name and j["state"] == "done"]
        accs, raws, speed, seconds, epochs_seen = [], [], [], [], None
        for job in finished:
            with open(os.path.join(job["folder"], "summary.json"), encoding="utf-8") as f:
                summary = json.load(f)
            final = summary.get("final") or {}
            accs.append(final.get("eval_top1"))
            raws.append(final.get("raw_eval_top1"))
            speed.append(final.get("images_per_second"))
            seconds.append(final.get("train_seconds") or 0.0)
            epochs_seen = summary.get("epochs")
        row = {"model": name, **counts.get(name, {}), "seeds": [j["seed"] for j in finished], "accuracy": accs,
               "raw_accuracy": raws, "epochs": epochs_seen, "train_seconds": sum(seconds),
               "images_per_second": statistics.mean(s for s in speed if s) if any(speed) else None,
               "mean": statistics.mean(accs) if accs else None,
               "sd": statistics.stdev(accs) if len(accs) > 1 else None}
        rows.append(row)
    return rows


def estimate_hours(jobs: list[dict], rows: list[dict], epochs: int, train_images: int) -> float | None:
    """Hours the unfinished jobs need, from the measured images per second of each model's runs (of any model
    where a model has none yet); None before any throughput is known."""
    speed = {r["model"]: r["images_per_second"] for r in rows if r.get("images_per_second")}
    if not speed:
        return None
    fallback = statistics.mean(speed.values())
    left = [j for j in jobs if j["state"] != "done"]
    return sum(epochs * train_images / speed.get(j["model"], fallback) for j in left) / 3600


def parse_found(pairs: list[str] | None) -> dict[str, str]:
    """--found NAME=ARCH options as {name: ARCH}; ValueError (one line) for a malformed or unknown one."""
    found = {}
    for pair in pairs or ():
        name, sep, spec = pair.partition("=")
        if not sep or not spec.strip():
            raise ValueError(f"--found {pair}: expected NAME=ARCH, e.g. found-75-soft=runs/search:1")
        if name.strip() not in FOUND_MODELS:
            raise ValueError(f"--found {pair}: {name.strip()!r} is not a found model "
                             f"(one of {', '.join(FOUND_MODELS)})")
        found[name.strip()] = spec.strip()
    return found


def frozen_source(path: str) -> str | None:
    """The source a frozen found model records in its first line (`# NAME: SOURCE`), or None."""
    with open(path, encoding="utf-8") as f:
        first = f.readline().strip()
    return first.split(": ", 1)[1] if first.startswith("#") and ": " in first else None


def table1_models(args, freeze: bool = True) -> dict[str, dict]:
    """The models to train, {name: {spec, extra, multiplier, arch, source}}: `spec` is the ARCH `train` gets (a
    registry name, or the found model's file in --out/archs), `extra` its further `train` arguments, `multiplier`
    its depth multiplier for the counts, `arch` the Architecture, `source` where a found model came from. A found
    model not frozen yet is resolved (every one of them first, so that a bad one freezes none) and, with `freeze`,
    written to its file, so that later runs train the same model."""
    from mnas.search.registry import load_architecture
    from mnas.trainer.replay import resolve_arch

    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in TABLE1_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)} (known: {', '.join(TABLE1_MODELS)})")
    given = parse_found(args.found)
    models, to_freeze = {}, {}
    for name in wanted:
        if name in NAMED_MODELS:
            spec, extra, multiplier = NAMED_MODELS[name]
            models[name] = {"spec": spec, "extra": extra, "multiplier": multiplier, "arch": load_architecture(spec),
                            "source": None}
            continue
        frozen = os.path.join(args.out, "archs", f"{name}.txt")
        if os.path.exists(frozen):
            arch, source = load_architecture(frozen), frozen_source(frozen)
        else:
            if name in given:
                arch, source = resolve_arch(given[name]).arch, given[name]
            else:
                arch, source = surrogate_best(args.surrogate_json, name)
            to_freeze[frozen] = f"# {name}: {source}\n{arch.to_text()}"
        models[name] = {"spec": frozen, "extra": (), "multiplier": 1.0, "arch": arch, "source": source}
    if freeze:
        for path, text in to_freeze.items():
            atomic_write(path, text.encode("utf-8"))
    return models


def surrogate_best(surrogate_json: str, name: str):
    """(Architecture, source) of found model `name` from the surrogate searches' JSON: its search's best."""
    from mnas.search.registry import load_space

    target, preset = FOUND_MODELS[name]
    if not os.path.exists(surrogate_json):
        raise ValueError(f"{name}: no --found {name}=ARCH and no {surrogate_json} (run `surrogate` first)")
    with open(surrogate_json, encoding="utf-8") as f:
        found = json.load(f)["found"].get(f"{target:g}", {}).get(preset)
    if not found:
        raise ValueError(f"{name}: {surrogate_json} has no {preset} search at T = {target:g} ms")
    source = f"the best {preset} child at T = {target:g} ms of the surrogate searches"
    return load_space(SPACE).decode(found["indices"]), f"{source} ({os.path.basename(surrogate_json)})"


def model_counts(models: dict[str, dict]) -> dict[str, dict]:
    """Predicted Pixel 1 latency, params and multiply-adds of each deployment model (224x224, 1000 classes)."""
    from mnas.measure import get_latency_model
    from mnas.search.counts import count

    latency = get_latency_model("pixel1")
    result = {}
    for name, model in models.items():
        arch = model["arch"]
        if model["multiplier"] != 1.0:
            arch = arch.replace(depth_multiplier=model["multiplier"])
        counted = count(arch, resolution=RESOLUTION)
        result[name] = {"latency_ms": latency.latency_ms(arch, RESOLUTION), "params": counted.params,
                        "madds": counted.madds, "arch": " ".join(arch.block_strings)}
        if model["source"]:
            result[name]["source"] = model["source"]
    return result


def cmd_table1(args, runner=launch_runner) -> int:
    train_args = []
    for flag in ("batch_size", "train_limit", "eval_limit", "threads"):
        value = getattr(args, flag)
        if value is not None:
            train_args += [f"--{flag.replace('_', '-')}", str(value)]
    models = table1_models(args, freeze=not args.dry_run)
    counts = model_counts(models)
    specs = {k: (v["spec"], v["extra"]) for k, v in models.items()}
    jobs = plan_jobs(args.out, specs, args.seeds, args.epochs, tuple(train_args))
    states = [j["state"] for j in jobs]
    print(f"{len(jobs)} runs: {states.count('done')} done, {states.count('resume')} to resume, "
          f"{states.count('new')} to start", file=sys.stderr)
    train_images = args.train_limit or 60000
    seen = collect(jobs, counts)
    for folder in args.speed_from or ():     # throughput measured in other table1 folders (e.g. a short test)
        for row in collect(plan_jobs(folder, specs, args.seeds, 1), {}):
            mine = next(r for r in seen if r["model"] == row["model"])
            mine["images_per_second"] = mine["images_per_second"] or row["images_per_second"]
    hours = estimate_hours(jobs, seen, args.epochs, train_images)
    if hours is not None:
        print(f"estimated: {hours:.2f} hours for the unfinished runs (from the throughput seen so far)",
              file=sys.stderr)
    if args.dry_run:
        for job in jobs:
            print(f"[{job['state']}] launch.py " + " ".join(job["argv"]))
        return 0
    started = time.perf_counter()
    run_jobs(jobs, runner, args.epochs, log=lambda text: print(text, file=sys.stderr, flush=True))
    rows = collect(jobs, counts)
    result = {"command": "python benchmarks/reproduction.py table1 " + " ".join(args.argv), "date": today(),
              "machine": machine(), "epochs": args.epochs, "seeds": args.seeds, "train_args": train_args,
              "train_images": train_images,
              "dataset": (f"fashion-mnist (the first {args.eval_limit:,} of its 10,000 test images)" if args.eval_limit
                          else "fashion-mnist (its 10,000 test images)"),
              "session_minutes": (time.perf_counter() - started) / 60, "rows": rows,
              "left": [f"{j['model']}/seed{j['seed']}" for j in jobs if j["state"] != "done"]}
    for path in (os.path.join(args.out, "table1.json"), args.json):   # the run folder's copy, and the report's
        write_json_atomic(path, jsonable(result), indent=1)
    print("\n".join(render_table1(result)))
    return 1 if result["left"] else 0


def render_table1(result: dict) -> list[str]:
    lines = ["## Table 1 analogue: Fashion-MNIST, one recipe and budget (part 3)", "",
             f"`{result['command']}` -- {result['machine']}; {result['date']}. `launch.py train` (the paper's "
             f"recipe), {result['epochs']} epoch{'' if result['epochs'] == 1 else 's'} of {result['train_images']:,} "
             f"training images, "
             f"{result['dataset']}; seeds {result['seeds']}"
             + (f"; train options {' '.join(result['train_args'])}" if result["train_args"] else "") + ". "
             f"Training took {sum(r.get('train_seconds') or 0 for r in result['rows']) / 3600:.1f} h (wall, summed "
             "over the runs; the load average says what else ran).", "",
             "| model | Pixel 1 ms (predicted) | params | multiply-adds | accuracy (mean +- sd) | per seed | "
             "ImageNet published (params, madds, top-1, Pixel 1 ms) |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        acc = ("-" if r["mean"] is None else f"{100 * r['mean']:.2f}%"
               + (f" +- {100 * r['sd']:.2f}" if r["sd"] is not None else " (1 seed)"))
        per = ", ".join(f"{100 * a:.2f}" for a in r["accuracy"]) or "-"
        pub = PUBLISHED.get(r["model"])
        pub_text = (f"{pub[0]}M, {pub[1]}M, {pub[2]}%, " + (f"{pub[3]} ms" if pub[3] else "-") if pub else "-")
        lines.append(f"| {r['model']} | {r['latency_ms']:.1f} | {r['params'] / 1e6:.2f}M | {r['madds'] / 1e6:.0f}M"
                     f" | {acc} | {per} | {pub_text} |")
    found = [r for r in result["rows"] if r["model"] in FOUND_MODELS and r.get("arch")]
    if found:
        lines += [""] + [f"* {r['model']}" + (f" -- {r['source']}" if r.get("source") else "") + f": `{r['arch']}`"
                         for r in found]
    if result["left"]:
        lines += ["", f"Not finished yet: {', '.join(result['left'])}."]
    return lines


def add_parser(sub, surrogate_json: str) -> None:
    """The `table1` subcommand of reproduction.py's CLI."""
    t = sub.add_parser("table1", help="part 3: train the found and published models with one recipe, resumable "
                                      "(hours; --dry-run plans and estimates)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--epochs", type=int, default=1,
                   help="epochs of every run (default %(default)s: with --batch-size 32, 1,875 steps, past train's "
                        "1,000-step warning; the 14 runs took 85 minutes on 2 cores beside a 2-worker search; the "
                        "paper's 350 epochs of ImageNet are out of reach here)")
    t.add_argument("--seeds", type=int, default=2, help="training seeds of each model (default %(default)s)")
    t.add_argument("--out", default=DEFAULT_TABLE1, help="the runs' folder (default: %(default)s)")
    t.add_argument("--json", default=TABLE1_JSON, help="the table for `report`, also saved as --out/table1.json "
                                                       "(default: %(default)s)")
    t.add_argument("--models", default=",".join(TABLE1_MODELS), help="default: %(default)s")
    t.add_argument("--found", action="append", metavar="NAME=ARCH",
                   help="take a found model from ARCH instead of the surrogate JSON (repeatable; NAME one of "
                        + ", ".join(FOUND_MODELS) + "; ARCH any `train --arch`, e.g. RUN_DIR:1)")
    t.add_argument("--surrogate-json", default=surrogate_json, help="where the default found models come from "
                                                                   "(default: %(default)s)")
    t.add_argument("--speed-from", nargs="+", metavar="DIR", help="table1 folders whose finished runs' images per "
                                                                 "second feed the estimate (e.g. a short test)")
    t.add_argument("--batch-size", type=int, default=32,
                   help="global batch of every run (default %(default)s: more steps for the budget; the learning "
                        "rate follows it, 0.016 per 256 images)")
    t.add_argument("--train-limit", type=int, help="train on the first N images only (tests)")
    t.add_argument("--eval-limit", type=int, help="evaluate on the first N test images only (tests)")
    t.add_argument("--threads", type=int, help="TensorFlow threads of each run (default: train's, every core)")
    t.add_argument("--dry-run", action="store_true", help="print the plan and the estimate, train nothing")
