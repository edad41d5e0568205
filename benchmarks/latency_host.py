#!/usr/bin/env python
"""Lookup table and predictors against latency measured on this host, on random architectures.

    python benchmarks/latency_host.py [--test 100] [--calib 20] [--train 100] [--resolution 224] [--write]

Ground truth: Keras -> TFLite float32 -> LiteRT, one thread, each network the fastest of --passes passes of 30
timed runs over all the networks, each layer the same over a chunk of networks' layers
(`measure.host`, `measure.layers.host_layer_measurer`); the layer chunks are measured between the
networks' passes, so that these span the whole run. Architectures: `--test` random ones of the
`mnasnet` space (seeds 20000...) to judge on, `--calib` others (seeds 10000...) to calibrate on -- the few-shot
case of a user with one device and an hour -- and `--train` more (seeds 30000...) whose layers, and only their
layers, train the layer model. Every test and
calibration network, and every distinct layer of all three sets, is measured in this run, one after another
(start it with nothing else running: the other core's load shifts this one's timings by a few percent).

Compared on the test networks:
* the lookup table as ProxylessNAS and FBNet use it: layer sum + a fixed cost from 3 calibration networks;
* the lookup table calibrated on the calibration networks (`LookupTable.calibrate`: scale, weights term, fixed);
* the layer model (`search.latency.layer_model`, `latency build-lut --layer-model`) learned from the layers of
  the training and calibration networks, for every layer or only for the layers a table lacks, calibrated on the
  calibration networks like the table;
* the six-feature calibrated predictor fitted on the calibration networks, with the channel tile calibration
  chooses, and with tile 1 (the features before tiles);
* multiply-adds alone (a least-squares line on the calibration networks), for reference.

The calibrated table is kept as benchmarks/results/lut_host_224.json (every layer measured here, and a layer
model for the layers it lacks): `--backend lut:FILE` predicts this host at 224x224 for any network of the
space, and `latency build-lut -o FILE --arch ...` extends it (measuring only the layers it lacks). Also: what a
new measurement costs (conversion, timing) and its spread, from `--repeat` networks measured three times each
from scratch; and the prediction speed of each model. Measurements are cached in --cache (default
/tmp/mnas-bench-latency), so an interrupted run resumes where it stopped: the layers a chunk at a time, the
networks as one batch (all their passes again, with the chunks still to measure between them). `--from-results`
measures nothing and analyses the shipped measurements. Writes benchmarks/results/latency_host.json. Expected
duration: 25-35 minutes on one idle core of this machine (about 2 minutes with --from-results).
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

from benchmarks.common import report  # noqa: E402
from benchmarks.latency_report import machine, spearman, today  # noqa: E402
from mnas.search.counts import count  # noqa: E402
from mnas.measure.host import HostTFLite  # noqa: E402
from mnas.measure.layers import host_layer_measurer  # noqa: E402
from mnas.search.latency.lut import LookupTable, build_lut, layer_keys, row_of, same_device  # noqa: E402
from mnas.search.latency.predictor import CalibratedPredictor  # noqa: E402
from mnas.search.registry import load_space  # noqa: E402

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


def measure(args, space, calib, test, train) -> dict:
    """Every measurement of the benchmark (cached): cost and spread, the networks, the table's layers."""
    out = {"resolution": args.resolution, "space": args.space}
    fresh = HostTFLite(cache_dir=None, passes=args.passes)
    out["cost"] = []
    for arch in test[:args.repeat]:
        repeats = [fresh.measure(arch) for _ in range(3)]
        out["cost"].append({"convert_s": [r.convert_s for r in repeats], "measure_s": [r.measure_s for r in repeats],
                            "ms": [r.ms for r in repeats], "cv_within": [r.cv for r in repeats],
                            "rounds": [r.rounds for r in repeats]})
        print(f"cost: convert {statistics.median(out['cost'][-1]['convert_s']):.1f} s, ms "
              f"{', '.join(f'{m:.2f}' for m in out['cost'][-1]['ms'])}", file=sys.stderr, flush=True)
    # The table over every network of the benchmark, its layers timed in passes over a chunk of networks at a
    # time, saved after each chunk so that a rerun resumes.
    lut_path = os.path.join(args.cache, f"lut_{args.resolution}.json")
    lut = LookupTable.load(lut_path) if os.path.exists(lut_path) else None
    host = HostTFLite(cache_dir=os.path.join(args.cache, "host"), passes=args.passes, progress=True)
    if lut is not None and not same_device(lut.backend, host.settings()):
        print(f"{lut_path} was measured on another machine ({lut.backend.get('cpu', 'unrecorded CPU')}): measuring "
              "every layer again", file=sys.stderr, flush=True)
        lut = None
    measure_layers = host_layer_measurer(passes=args.passes, progress=True)
    every = test + calib + train
    total = len(layer_keys(every))
    chunks = [every[start:start + args.layer_chunk] for start in range(0, len(every), args.layer_chunk)]
    done = []

    def layer_chunks(count: int) -> None:
        nonlocal lut
        for chunk in chunks[len(done):len(done) + count]:
            lut = build_lut(chunk, measure_layers, existing=lut, fixed_cost_archs=0, name="lut-host-tflite",
                            backend=host.settings(), progress=True)
            lut.save(lut_path)
            done.append(chunk)
            print(f"lut: networks {sum(map(len, done))}/{len(every)}, {len(lut.layers)}/{total} layers",
                  file=sys.stderr, flush=True)

    # The calibration and test networks in one batch: converted, then timed in passes over all of them, with the
    # layer chunks spread evenly between the passes, so that the passes span the whole run and a load that lasts
    # minutes cannot cover all of a network's (what is left runs after: all of it if the networks were cached).
    gaps, started, pass_ends = max(args.passes - 1, 1), time.perf_counter(), []

    def between(passed: int) -> None:
        pass_ends.append((time.perf_counter() - started) / 60)
        layer_chunks(len(chunks) * passed // gaps - len(done))

    networks = host.measure_many(calib + test, between=between)
    if host.measured:       # timed now, not served from the cache: minutes from the conversion's start to each pass's end
        out["pass_ends_min"] = pass_ends + [(time.perf_counter() - started) / 60]
    layer_chunks(len(chunks) - len(done))
    measured = {"calib": [m.ms for m in networks[:len(calib)]], "test": [m.ms for m in networks[len(calib):]]}
    out["passes"], out["layer_chunk"] = args.passes, args.layer_chunk
    out["pass_spread"] = [m.pass_spread for m in networks]
    out["measured_ms"] = measured
    shutil.copyfile(lut_path, os.path.join(ROOT, TABLE))
    out["lut_file"] = TABLE
    out["train_networks"] = len(train)
    return out


def learned(table: LookupTable, archs, calib, y_calib, model_for: str) -> LookupTable:
    """A table of only the layers of `archs` (the training networks and the calibration ones), with a layer
    model for `model_for` layers, calibrated on the calibration networks: what `latency build-lut --layer-model`
    builds from those networks."""
    model = LookupTable({k: table.layers[k] for k in layer_keys(archs)}, name="lut-host-learned",
                        backend=table.backend)
    model.fit_model(model_for)
    model.calibrate(calib, y_calib)
    return model


def analyse(args, data: dict, space, calib, test, train) -> tuple[dict, str]:
    y_calib, y_test = np.array(data["measured_ms"]["calib"]), np.array(data["measured_ms"]["test"])
    table = LookupTable.load(os.path.join(ROOT, data["lut_file"]))
    lacking = [k for k in layer_keys(train) if k not in table.layers]
    if lacking:
        raise SystemExit(f"the table lacks {len(lacking)} layers of the {len(train)} training networks: run without "
                         "--from-results to measure them")
    models = {}
    plain = LookupTable(table.layers, name="lut-host-tflite")
    plain.calibrate(calib[:3], y_calib[:3])
    models["lookup table, layer sum + fixed cost (3 networks)"] = plain
    backend = table.backend or HostTFLite(cache_dir=None).settings()
    full = LookupTable(table.layers, name="lut-host-tflite", backend=backend, meta=table.meta)
    full.fit_model("missing")       # shipped: measured layers as measured, a learned estimate for any other
    full.calibrate(calib, y_calib)
    full.save(os.path.join(ROOT, data["lut_file"]))      # the table as shipped: `--backend lut:FILE`
    models[f"lookup table, calibrated ({len(calib)} networks)"] = full
    layer_all = learned(table, train + calib, calib, y_calib, "all")
    models[f"layer model, every layer ({len(train)} + {len(calib)} networks' layers, {len(calib)} networks)"] = \
        layer_all
    models["layer model, missing layers only (same)"] = learned(table, train + calib, calib, y_calib, "missing")
    tiled = CalibratedPredictor.fit(calib, y_calib, name="host-predicted", tile=None)
    models[f"calibrated predictor ({len(calib)} networks, channel tile {tiled.tile})"] = tiled
    models[f"calibrated predictor ({len(calib)} networks, tile 1)"] = CalibratedPredictor.fit(
        calib, y_calib, name="host-predicted", tile=1)
    results = {name: scores(model.predict(test), y_test) for name, model in models.items()}
    # The calibration draw matters with 20 networks: the same protocol over 40 random draws of the calibration
    # networks from all of them, each judged on the rest.
    pool, y_pool = calib + test, np.r_[y_calib, y_test]
    draws = {"table": [], "predictor": [], "layer model": []}
    for seed in range(args.draws):
        pick = np.random.default_rng(seed).permutation(len(pool))
        fit_on, judge = pick[:len(calib)], pick[len(calib):]
        redrawn = LookupTable(table.layers)
        redrawn.calibrate([pool[i] for i in fit_on], y_pool[fit_on])
        draws["table"].append(scores(redrawn.predict([pool[i] for i in judge]), y_pool[judge])["within10"])
        refit = CalibratedPredictor.fit([pool[i] for i in fit_on], y_pool[fit_on], name="draw", tile=tiled.tile)
        draws["predictor"].append(scores(refit.predict([pool[i] for i in judge]), y_pool[judge])["within10"])
        relearned = learned(table, train + [pool[i] for i in fit_on], [pool[i] for i in fit_on], y_pool[fit_on],
                            "all")
        draws["layer model"].append(scores(relearned.predict([pool[i] for i in judge]), y_pool[judge])["within10"])
    # the features' ceiling: fitted on every network, test ones included (in-sample)
    ceiling = CalibratedPredictor.fit(calib + test, np.r_[y_calib, y_test], name="host-predicted", tile=tiled.tile)
    ceiling = scores(ceiling.predict(test), y_test)
    madds = lambda archs: np.array([count(a).madds / 1e6 for a in archs])  # noqa: E731
    slope, intercept = np.polyfit(madds(calib), y_calib, 1)
    results["multiply-adds line"] = scores(slope * madds(test) + intercept, y_test)
    fresh = [space.sample(900_000 + i).replace(resolution=args.resolution) for i in range(10_000)]
    speeds = {"lookup table": speed(full, test * 100),
              "calibrated predictor": speed(tiled, fresh),
              "layer model": speed(layer_all, fresh)}
    # the layer model on the test networks' layers it never saw (not among the training networks' layers)
    seen = set(layer_keys(train + calib))
    unseen = [k for k in layer_keys(test) if k not in seen]
    unseen_rows, unseen_ms = [row_of(k) for k in unseen], np.array([table.layers[k] for k in unseen])
    unseen_error = np.abs(layer_all.model.predict_rows(unseen_rows) / unseen_ms - 1)
    linear_error = np.abs(layer_all.model.linear_ms(unseen_rows) / unseen_ms - 1)
    cost = data["cost"]
    convert = [c for entry in cost for c in entry["convert_s"]]
    timing = [m for entry in cost for m in entry["measure_s"]]
    between = [statistics.pstdev(e["ms"]) / statistics.fmean(e["ms"]) for e in cost]
    within = [v for e in cost for v in e["cv_within"]]
    gaps = y_test / np.array([table.layer_sum(a) for a in test])
    passes, pass_spread = data.get("passes", 1), np.array(data.get("pass_spread", [0.0]))

    rows = [f"| {name} | {r['within10']:.0%} | {r['mape']:.1f}% | {r['worst']:.0f}% | {r['spearman']:.3f} |"
            for name, r in results.items()]
    names = list(models)
    plain_name, lut_name, layer_name, missing_name, pred_name, tile1_name = names
    judged = (lut_name, layer_name, pred_name)
    met = [n for n in judged if results[n]["within10"] >= 0.95]
    missed = [n for n in judged if n not in met]

    if tiled.tile == 1:
        tile_text = "without a channel tile (leave-one-out chose tile 1 here)"
    else:
        tile_text = (f"counting every convolution's output channels in tiles of {tiled.tile} (chosen by leave-one-out; "
                     f"{results[tile1_name]['within10']:.0%} within 10% at tile 1)")

    def spread(values) -> str:
        return (f"{np.mean(values):.0%} (10th-90th percentile {np.percentile(values, 10):.0%}-"
                f"{np.percentile(values, 90):.0%})")

    ends = data.get("pass_ends_min")
    pass_text = (f", the table's layers measured between the passes, which ended {', '.join(f'{m:.0f}' for m in ends)} "
                 "minutes after the networks' conversion began" if ends else "")

    text = f"""### Measured on this host; lookup table and predictors against it

`python benchmarks/latency_host.py --test {len(test)} --calib {len(calib)} --train {len(train)} --write` --
{machine(shared=False)}; {today()}. Ground truth: MnasNet-space networks at {args.resolution}x{args.resolution},
float32, LiteRT on one thread, each the fastest of {passes} passes of 30 timed runs, each pass over all
{len(calib) + len(test)} networks (`measure.host`){pass_text}. {len(test)} random test networks; the models are calibrated on
{len(calib)} other random networks. The table holds every distinct layer of the test and calibration networks, each
timed alone, the fastest of {passes} passes over the layers of {data.get('layer_chunk')} networks at a time; the layer model learns
only from the layers of the calibration networks and of {len(train)} further random networks ({len(seen)} layers),
whose whole latency is never used.

| model, on {len(test)} test networks | within +-10% | MAPE | worst | Spearman |
|---|---|---|---|---|
{chr(10).join(rows)}

Over {args.draws} random draws of the {len(calib)} calibration networks from all {len(pool)} (each judged on the
other {len(pool) - len(calib)}; the layer model refitted on each draw's layers): within 10%, the calibrated table
{spread(draws['table'])}, the layer model {spread(draws['layer model'])}, the six-feature predictor (tile
{tiled.tile}) {spread(draws['predictor'])}.

Goal (>= 95% within +-10%): {'met by ' + ' and '.join(met) if met else 'not met'}{'; missed by ' + ' and '.join(f'{n} ({results[n]["within10"]:.0%})' for n in missed) if missed else ''}.

* **The table**: a network took {np.mean(gaps):.2f}x the sum of its layers on average ({np.min(gaps):.2f}-{np.max(gaps):.2f}x):
  layers timed alone keep their weights and inputs in cache, a network streams its weights from memory and
  evicts its own activations. The plain sum plus a fixed cost (ProxylessNAS, FBNet) ranks networks almost
  perfectly but misses the level by that spread ({results[plain_name]['within10']:.0%} within 10%); calibrated on
  {len(calib)} networks (latency = {full.fixed_ms:.3f} ms + {full.scale:.3f} x layers + {full.weights_ms:.3f} ms per
  million weights) it puts {results[lut_name]['within10']:.0%} of the test networks within 10%.
* **The six-feature predictor** (multiply-adds by op type, activation traffic, weights, op count; the Pixel 1
  preset's model), non-negative, fitted on {len(calib)} measurements, {tile_text}. Fitted on all
  {len(calib) + len(test)} networks, test ones included, it still puts only {ceiling['within10']:.0%} of the test networks within 10%:
  six linear terms cannot follow the shape-dependent efficiency of this host's kernels. On the Pixel 1 the same
  features reach 3.2% leave-one-out (above).
* **The layer model** (`latency build-lut --layer-model`, `search/latency/layer_model.py`): each layer's
  latency is the same six features, fitted per layer, times the exponential of boosted trees over the layer's
  shape (op, expansion, input size, filters and their remainder modulo the tile, kernel, stride, SE width,
  shortcut). The trees learn what the linear part cannot: here a depthwise convolution over 24 channels takes
  longer than one over 32, and a regular one costs the same to 24 or 32 output channels, then jumps at 40. On
  the {len(unseen)} layers of the test networks that it never saw, it is off by {100 * np.mean(unseen_error):.1f}% on average (median
  {100 * np.median(unseen_error):.1f}%; the linear part alone: {100 * np.mean(linear_error):.1f}%). Summed over a network and calibrated like the table,
  it puts {results[layer_name]['within10']:.0%} of the test networks within 10%, beside {results[lut_name]['within10']:.0%} for the table that measured all
  their layers; used only for the layers a table lacks (`--layer-model missing`), {results[missing_name]['within10']:.0%}. The layer model
  is {'about as good as' if abs(results[layer_name]['within10'] - results[lut_name]['within10']) <= 0.05 else 'not as good as'} the table it learned from{"; what limits both is how far a network's latency is from its layers'" if results[lut_name]['within10'] < 0.95 else ''}.
* **Passes**: this machine is shared with other tenants, whose load comes and goes over seconds and slows a
  network by up to a quarter while it lasts. A network's {passes} passes, spread over {f'{ends[-1]:.0f}' if ends else 'several'} minutes, differed by
  {100 * np.median(pass_spread):.0f}% at the median (90th percentile {100 * np.percentile(pass_spread, 90):.0f}%); its rounds, taken back to back, agree with each
  other and cannot see it. Timed in one pass, networks and layers, an earlier session left the same table at
  78% within 10% (latency:drift, below).
* **Cost of a measurement**: conversion {min(convert):.1f}-{max(convert):.1f} s a network (Keras -> TFLite),
  timing {min(timing):.1f}-{max(timing):.1f} s ({passes} passes); a table layer 0.5-0.7 s (mostly its conversion), so the layer model's
  {len(seen)} layers take {len(seen) * 0.5 / 60:.0f}-{len(seen) * 0.7 / 60:.0f} minutes. Spread: within one measurement the timed runs vary by
  {100 * min(within):.0f}-{100 * max(within):.0f}% (coefficient of variation); the same network converted and measured three
  times from scratch gives {', '.join(f'{100 * b:.1f}%' for b in between)} between runs. That run-to-run spread of a
  few percent is the floor under any +-10% figure.
* **Prediction speed**: {speeds['calibrated predictor']:,.0f} networks/s for the six-feature predictor and
  {speeds['layer model']:,.0f}/s for the layer model on 10,000 new random networks, {speeds['lookup table']:,.0f}/s for the
  shipped table on networks whose layers it holds (goal >= 10,000/s).
"""
    return {"results": results, "ceiling": ceiling, "draws": draws, "speeds": speeds,
            "table": full.to_dict() | {"layers": len(table.layers), "layer_model": "(in the table file)"},
            "predictor": tiled.to_dict(), "unseen_layers": len(unseen),
            "unseen_layer_mape_percent": float(100 * np.mean(unseen_error))}, text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="mnasnet", help="the search space sampled (default %(default)s)")
    parser.add_argument("--test", type=int, default=100, help="test networks (default 100)")
    parser.add_argument("--calib", type=int, default=20, help="calibration networks (default 20)")
    parser.add_argument("--train", type=int, default=100,
                        help="networks whose layers (only) train the layer model (default 100)")
    parser.add_argument("--resolution", type=int, default=224, help="input size of every network "
                                                                   "(default %(default)s)")
    parser.add_argument("--cache", default="/tmp/mnas-bench-latency",
                        help="folder of the measurement caches and layer tables; a re-run reuses them "
                             "(default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="networks re-measured from scratch for the spread")
    parser.add_argument("--passes", type=int, default=5,
                        help="timing passes over all the networks, and over each chunk's layers; each keeps its "
                             "fastest (default 5, as measure.host)")
    parser.add_argument("--layer-chunk", type=int, default=55,
                        help="networks whose new layers are measured (and saved) together (default 55)")
    parser.add_argument("--draws", type=int, default=40, help="random calibration draws for the spread (default 40)")
    parser.add_argument("--from-results", action="store_true",
                        help=f"measure nothing: analyse the measurements in {os.path.relpath(RESULTS, ROOT)}")
    parser.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.calib < 5 or args.test < 1 or args.repeat < 1:
        parser.error("need --calib >= 5, --test >= 1 and --repeat >= 1")
    space = load_space(args.space)
    calib = [space.sample(10_000 + i).replace(resolution=args.resolution) for i in range(args.calib)]
    test = [space.sample(20_000 + i).replace(resolution=args.resolution) for i in range(args.test)]
    train = [space.sample(30_000 + i).replace(resolution=args.resolution) for i in range(args.train)]
    if args.from_results:
        with open(RESULTS, encoding="utf-8") as handle:
            data = json.load(handle)
    else:
        data = measure(args, space, calib, test, train)
    summary, text = analyse(args, data, space, calib, test, train)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS + ".tmp", "w", encoding="utf-8") as handle:
        json.dump({**data, "analysis": summary}, handle, indent=1)
    os.replace(RESULTS + ".tmp", RESULTS)
    report(text, "latency:host", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
