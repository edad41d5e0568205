#!/usr/bin/env python
"""Lookup table and calibrated predictor against latency measured on this host, on random architectures.

    python benchmarks/latency_host.py [--test 100] [--calib 20] [--resolution 224] [--write]

Ground truth: Keras -> TFLite float32 -> LiteRT, one thread, the fastest of agreeing rounds of 30 timed runs
(`search.latency.host`). Architectures: `--test` random ones of the `mnasnet` space (seeds 20000...) to judge on,
and `--calib` others (seeds 10000...) to calibrate on -- the few-shot case of a user with one device and an hour.
Every network, and every distinct layer of all of them, is measured in this run, one after another (start it
with nothing else running: the other core's load shifts this one's timings by a few percent).

Compared on the test networks:
* the lookup table as ProxylessNAS and FBNet use it: layer sum + a fixed cost from 3 calibration networks;
* the lookup table calibrated on the calibration networks (`LookupTable.calibrate`: scale, weights term, fixed);
* the calibrated predictor fitted on the calibration networks, with the channel tile calibration chooses, and
  with tile 1 (the features before tiles);
* multiply-adds alone (a least-squares line on the calibration networks), for reference.

The calibrated table is kept as benchmarks/results/lut_host_224.json: `--backend lut:FILE` predicts this host
at 224x224 for networks made of its 957 layers, and `latency build-lut -o FILE --arch ...` extends it to others
(measuring only the layers it lacks). Also: what a new measurement costs (conversion, timing) and its spread,
from `--repeat` networks measured three times each from scratch; and the prediction speed of each model. Measurements are cached in --cache (default
/tmp/mnas-bench-latency), so an interrupted run resumes where it stopped. Writes benchmarks/results/
latency_host.json. Expected duration: ~25 minutes on one idle core of this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from benchmarks.latency_report import machine, spearman, today, update_section  # noqa: E402
from search.counts import count  # noqa: E402
from search.latency.host import HostTFLite  # noqa: E402
from search.latency.lut import LookupTable, build_lut, host_layer_measurer, layer_keys  # noqa: E402
from search.latency.predictor import CalibratedPredictor  # noqa: E402
from search.registry import load_space  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "latency_host.json")
TABLE = os.path.join("benchmarks", "results", "lut_host_224.json")   # the calibrated table, relative to ROOT


def scores(pred, true) -> dict:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    rel = pred / true - 1
    return {"within10": float(np.mean(np.abs(rel) <= 0.10)), "mape": float(np.mean(np.abs(rel)) * 100),
            "worst": float(np.max(np.abs(rel)) * 100), "spearman": spearman(pred, true)}


def speed(model, archs) -> float:
    """Architectures per second of `model.predict` on `archs` (their blocks not seen before by this model)."""
    started = time.perf_counter()
    model.predict(archs)
    return len(archs) / (time.perf_counter() - started)


def measure(args, space, calib, test) -> dict:
    """Every measurement of the benchmark (cached): cost and spread, the networks, the table's layers."""
    out = {"resolution": args.resolution, "space": args.space}
    fresh = HostTFLite(cache_dir=None)
    out["cost"] = []
    for arch in test[:args.repeat]:
        repeats = [fresh.measure(arch) for _ in range(3)]
        out["cost"].append({"convert_s": [r.convert_s for r in repeats], "measure_s": [r.measure_s for r in repeats],
                            "ms": [r.ms for r in repeats], "cv_within": [r.cv for r in repeats],
                            "rounds": [r.rounds for r in repeats]})
        print(f"cost: convert {statistics.median(out['cost'][-1]['convert_s']):.1f} s, ms "
              f"{', '.join(f'{m:.2f}' for m in out['cost'][-1]['ms'])}", file=sys.stderr, flush=True)
    host = HostTFLite(cache_dir=os.path.join(args.cache, "host"))
    measured = {}
    for what, archs in (("calib", calib), ("test", test)):
        measured[what] = []
        for i, arch in enumerate(archs, 1):
            started = time.perf_counter()
            measured[what].append(host.measure(arch).ms)
            print(f"{what} network {i}/{len(archs)}: {measured[what][-1]:.2f} ms "
                  f"({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    out["measured_ms"] = measured
    # The table over every network of the benchmark, saved after each so that a rerun resumes.
    lut_path = os.path.join(args.cache, f"lut_{args.resolution}.json")
    lut = LookupTable.load(lut_path) if os.path.exists(lut_path) else None
    measure_layer = host_layer_measurer()
    total = len(layer_keys(test + calib))
    for i, arch in enumerate(test + calib, 1):
        lut = build_lut([arch], measure_layer, existing=lut, fixed_cost_archs=0, name="lut-host-tflite",
                        backend=host.settings())
        lut.save(lut_path)
        print(f"lut: network {i}/{len(test) + len(calib)}, {len(lut.layers)}/{total} layers", file=sys.stderr,
              flush=True)
    shutil.copyfile(lut_path, os.path.join(ROOT, TABLE))
    out["lut_file"] = TABLE
    return out


def analyse(args, data: dict, space, calib, test) -> tuple[dict, str]:
    y_calib, y_test = np.array(data["measured_ms"]["calib"]), np.array(data["measured_ms"]["test"])
    table = LookupTable.load(os.path.join(ROOT, data["lut_file"]))
    models = {}
    plain = LookupTable(table.layers, name="lut-host-tflite")
    plain.calibrate(calib[:3], y_calib[:3])
    models["lookup table, layer sum + fixed cost (3 networks)"] = plain
    backend = table.backend or HostTFLite(cache_dir=None).settings()
    full = LookupTable(table.layers, name="lut-host-tflite", backend=backend, meta=table.meta)
    full.calibrate(calib, y_calib)
    full.save(os.path.join(ROOT, data["lut_file"]))      # the table as shipped: `--backend lut:FILE`
    models[f"lookup table, calibrated ({len(calib)} networks)"] = full
    tiled = CalibratedPredictor.fit(calib, y_calib, name="host-predicted", tile=None)
    models[f"calibrated predictor ({len(calib)} networks, channel tile {tiled.tile})"] = tiled
    models[f"calibrated predictor ({len(calib)} networks, tile 1)"] = CalibratedPredictor.fit(
        calib, y_calib, name="host-predicted", tile=1)
    results = {name: scores(model.predict(test), y_test) for name, model in models.items()}
    # The calibration draw matters with 20 networks: the same protocol over 40 random draws of the calibration
    # networks from all of them, each judged on the rest.
    pool, y_pool = calib + test, np.r_[y_calib, y_test]
    draws = {"table": [], "predictor": []}
    for seed in range(args.draws):
        pick = np.random.default_rng(seed).permutation(len(pool))
        fit_on, judge = pick[:len(calib)], pick[len(calib):]
        redrawn = LookupTable(table.layers)
        redrawn.calibrate([pool[i] for i in fit_on], y_pool[fit_on])
        draws["table"].append(scores(redrawn.predict([pool[i] for i in judge]), y_pool[judge])["within10"])
        refit = CalibratedPredictor.fit([pool[i] for i in fit_on], y_pool[fit_on], name="draw", tile=tiled.tile)
        draws["predictor"].append(scores(refit.predict([pool[i] for i in judge]), y_pool[judge])["within10"])
    # the features' ceiling: fitted on every network, test ones included (in-sample)
    ceiling = CalibratedPredictor.fit(calib + test, np.r_[y_calib, y_test], name="host-predicted", tile=tiled.tile)
    ceiling = scores(ceiling.predict(test), y_test)
    madds = lambda archs: np.array([count(a).madds / 1e6 for a in archs])  # noqa: E731
    slope, intercept = np.polyfit(madds(calib), y_calib, 1)
    results["multiply-adds line"] = scores(slope * madds(test) + intercept, y_test)
    fresh = [space.sample(900_000 + i).replace(resolution=args.resolution) for i in range(10_000)]
    speeds = {"lookup table": speed(full, test * 100),
              "calibrated predictor": speed(tiled, fresh)}
    cost = data["cost"]
    convert = [c for entry in cost for c in entry["convert_s"]]
    timing = [m for entry in cost for m in entry["measure_s"]]
    between = [statistics.pstdev(e["ms"]) / statistics.fmean(e["ms"]) for e in cost]
    within = [v for e in cost for v in e["cv_within"]]
    gaps = y_test / np.array([table.layer_sum(a) for a in test])

    rows = [f"| {name} | {r['within10']:.0%} | {r['mape']:.1f}% | {r['worst']:.0f}% | {r['spearman']:.3f} |"
            for name, r in results.items()]
    lut_name, pred_name = list(models)[1], list(models)[2]
    met = [n for n in (lut_name, pred_name) if results[n]["within10"] >= 0.95]
    missed = [n for n in (lut_name, pred_name) if n not in met]
    text = f"""### Measured on this host; lookup table and predictor against it

`python benchmarks/latency_host.py --test {len(test)} --calib {len(calib)} --write` -- {machine(shared=False)};
{today()}. Ground truth: MnasNet-space networks at {args.resolution}x{args.resolution},
float32, LiteRT on one thread, the fastest of agreeing rounds of 30 timed runs. {len(test)} random test networks;
the models are calibrated on {len(calib)} other random networks; the table holds every distinct layer of all
{len(test) + len(calib)} ({len(table.layers)} layers), each timed alone.

| model, on {len(test)} test networks | within +-10% | MAPE | worst | Spearman |
|---|---|---|---|---|
{chr(10).join(rows)}

Over {args.draws} random draws of the {len(calib)} calibration networks from all {len(pool)} (each judged on the
other {len(pool) - len(calib)}): the calibrated table puts {np.mean(draws['table']):.0%} within 10% (10th-90th
percentile {np.percentile(draws['table'], 10):.0%}-{np.percentile(draws['table'], 90):.0%}), the predictor (tile
{tiled.tile}) {np.mean(draws['predictor']):.0%} ({np.percentile(draws['predictor'], 10):.0%}-{np.percentile(draws['predictor'], 90):.0%}): the fixed draw above is {'an unlucky' if results[pred_name]['within10'] < np.percentile(draws['predictor'], 10) else 'a typical'} one for the predictor.

Goal (>= 95% within +-10%): {'met by ' + ' and '.join(met) if met else 'not met'}{'; missed by ' + ' and '.join(f'{n} ({results[n]["within10"]:.0%})' for n in missed) if missed else ''}.

* **The table**: a network took {np.mean(gaps):.2f}x the sum of its layers on average ({np.min(gaps):.2f}-{np.max(gaps):.2f}x):
  layers timed alone keep their weights and inputs in cache, a network streams its weights from memory and
  evicts its own activations. The plain sum plus a fixed cost (ProxylessNAS, FBNet) ranks networks almost
  perfectly but misses the level by that spread ({results[list(models)[0]]['within10']:.0%} within 10%); calibrated on
  {len(calib)} networks (latency = {full.fixed_ms:.3f} ms + {full.scale:.3f} x layers + {full.weights_ms:.3f} ms per
  million weights) it puts {results[lut_name]['within10']:.0%} of the test networks within 10%.
* **The predictor**: six analytic features (multiply-adds by op type, activation traffic, weights, op count),
  non-negative, fitted on {len(calib)} measurements. Counting every convolution's output channels in tiles of
  {tiled.tile} (an AVX-512 register holds 16 floats; calibration picked the tile by leave-one-out
  error) takes it from {results[list(models)[3]]['within10']:.0%} to {results[pred_name]['within10']:.0%} within
  10%: a convolution to 24 channels costs about as much as one to 32 here. What is left is shape-dependent
  efficiency that six linear terms cannot follow: fitted on all {len(calib) + len(test)} networks, test ones
  included, the same predictor still puts only {ceiling['within10']:.0%} of the test networks within 10% (and timed
  alone, the table's layers deviate from the same features' best per-layer fit by about 12% each). On this host,
  a table built once is the model to use; on the Pixel 1 the same features reach 3.2% leave-one-out (above).
* **Cost of a measurement**: conversion {min(convert):.1f}-{max(convert):.1f} s a network (Keras -> TFLite),
  timing {min(timing):.1f}-{max(timing):.1f} s; a table layer about 0.5 s. Spread: within one measurement the
  timed runs vary by {100 * min(within):.0f}-{100 * max(within):.0f}% (coefficient of variation); the same
  network converted and measured three times from scratch gives {', '.join(f'{100 * b:.1f}%' for b in between)}
  between runs. That run-to-run spread of a few percent is the floor under any +-10% figure.
* **Prediction speed**: {speeds['calibrated predictor']:,.0f} networks/s for the predictor on 10,000 new
  random networks, {speeds['lookup table']:,.0f}/s for the table on networks whose layers it holds (goal >= 10,000/s).
"""
    return {"results": results, "ceiling": ceiling, "draws": draws, "speeds": speeds,
            "table": full.to_dict() | {"layers": len(table.layers)},
            "predictor": tiled.to_dict()}, text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="mnasnet")
    parser.add_argument("--test", type=int, default=100, help="test networks (default 100)")
    parser.add_argument("--calib", type=int, default=20, help="calibration networks (default 20)")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--cache", default="/tmp/mnas-bench-latency")
    parser.add_argument("--repeat", type=int, default=3, help="networks re-measured from scratch for the spread")
    parser.add_argument("--draws", type=int, default=40, help="random calibration draws for the spread (default 40)")
    parser.add_argument("--from-results", action="store_true",
                        help=f"measure nothing: analyse the measurements in {os.path.relpath(RESULTS, ROOT)}")
    parser.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.calib < 5 or args.test < 1:
        parser.error("need --calib >= 5 and --test >= 1")
    space = load_space(args.space)
    calib = [space.sample(10_000 + i).replace(resolution=args.resolution) for i in range(args.calib)]
    test = [space.sample(20_000 + i).replace(resolution=args.resolution) for i in range(args.test)]
    if args.from_results:
        with open(RESULTS, encoding="utf-8") as handle:
            data = json.load(handle)
    else:
        data = measure(args, space, calib, test)
    summary, text = analyse(args, data, space, calib, test)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS + ".tmp", "w", encoding="utf-8") as handle:
        json.dump({**data, "analysis": summary}, handle, indent=1)
    os.replace(RESULTS + ".tmp", RESULTS)
    print(text)
    if args.write:
        update_section("host", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
