"""Lookup table and calibrated predictor against latency measured on this host, on random architectures.

    python benchmarks/latency_host.py [--test 100] [--calib 20] [--lut-archs 100] [--resolution 224]

Host ground truth: Keras -> TFLite float32 -> LiteRT, one thread, median of 30 timed runs (search.latency.host).
The predictor is fitted on `--calib` other random architectures of the same space measured the same way (the
few-shot case); the lookup table measures every distinct layer of the first `--lut-archs` test architectures
once and fits its fixed cost on 3 calibration architectures. Measurements are cached in --cache (default
/tmp/mnas-bench-latency), so an interrupted run resumes where it stopped. Prints a table and writes
benchmarks/results/latency_host.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from search.latency.host import HostTFLite  # noqa: E402
from search.latency.lut import LookupTable, build_lut, host_layer_measurer, layer_keys  # noqa: E402
from search.latency.predictor import CalibratedPredictor  # noqa: E402
from search.registry import load_space  # noqa: E402


def within(pred, true, tol=0.10):
    pred, true = np.asarray(pred), np.asarray(true)
    return float(np.mean(np.abs(pred / true - 1) <= tol))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="mnasnet")
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--calib", type=int, default=20)
    parser.add_argument("--lut-archs", type=int, default=100)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--cache", default="/tmp/mnas-bench-latency")
    parser.add_argument("--repeat", type=int, default=3, help="archs re-measured uncached for the spread")
    args = parser.parse_args(argv)
    space = load_space(args.space)
    calib = [space.sample(10_000 + i).replace(resolution=args.resolution) for i in range(args.calib)]
    test = [space.sample(20_000 + i).replace(resolution=args.resolution) for i in range(args.test)]
    host = HostTFLite(cache_dir=os.path.join(args.cache, "host"), progress=False)
    out = {"resolution": args.resolution, "space": args.space}

    # Cost of one new measurement and its run-to-run spread (uncached, repeated).
    fresh = HostTFLite(cache_dir=None)
    costs = []
    for arch in test[:args.repeat]:
        repeats = [fresh.measure(arch) for _ in range(3)]
        costs.append({"convert_s": [r.convert_s for r in repeats], "measure_s": [r.measure_s for r in repeats],
                      "ms": [r.ms for r in repeats], "cv_within": [r.cv for r in repeats]})
        print(f"cost: convert {statistics.median(costs[-1]['convert_s']):.1f} s, medians "
              f"{', '.join(f'{m:.2f}' for m in costs[-1]['ms'])} ms", file=sys.stderr, flush=True)
    out["cost"] = costs

    def measure_all(archs, what):
        values = []
        for i, arch in enumerate(archs, 1):
            start = time.perf_counter()
            values.append(host.measure(arch).ms)
            print(f"{what} {i}/{len(archs)}: {values[-1]:.2f} ms ({time.perf_counter() - start:.1f} s)",
                  file=sys.stderr, flush=True)
        return values

    y_calib = measure_all(calib, "calibration arch")
    y_test = measure_all(test, "test arch")
    predictor = CalibratedPredictor.fit(calib, y_calib, name="host-predicted")
    p_pred = predictor.predict(test)
    out["predictor"] = {"calib": len(calib), "test": len(test), "within10": within(p_pred, y_test),
                        "mape": float(np.mean(np.abs(np.array(p_pred) / y_test - 1))),
                        "coef": predictor.describe()}

    # Lookup table over the first --lut-archs test architectures, saved after each so a rerun resumes.
    lut_path = os.path.join(args.cache, f"lut_{args.resolution}.json")
    lut = LookupTable.load(lut_path) if os.path.exists(lut_path) else None
    measure_layer = host_layer_measurer()
    covered = test[:args.lut_archs]
    total = len(layer_keys(covered + calib))
    for i, arch in enumerate(covered + calib, 1):
        lut = build_lut([arch], measure_layer, existing=lut, fixed_cost_archs=0, name="lut-host-tflite")
        lut.save(lut_path)
        print(f"lut: arch {i}/{len(covered) + len(calib)}, {len(lut.layers)}/{total} layers", file=sys.stderr, flush=True)
    gaps = [y - lut.layer_sum(a) for a, y in zip(calib[:3], y_calib[:3]) if _covered(lut, a)]
    if len(gaps) < 3:  # fit the fixed cost on calibration archs; measure their layers if needed
        lut = build_lut(calib[:3], measure_layer, existing=lut, fixed_cost_archs=0, name="lut-host-tflite")
        gaps = [y - lut.layer_sum(a) for a, y in zip(calib[:3], y_calib[:3])]
    lut.fixed_ms = statistics.median(gaps)
    lut.save(lut_path)
    l_pred = lut.predict(covered)
    out["lut"] = {"archs": len(covered), "layers": len(lut.layers), "fixed_ms": lut.fixed_ms,
                  "within10": within(l_pred, y_test[:len(covered)]),
                  "mape": float(np.mean(np.abs(np.array(l_pred) / y_test[:len(covered)] - 1)))}
    out["measured_ms"] = {"calib": y_calib, "test": y_test}
    os.makedirs(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "latency_host.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"{'model':<22} {'archs':>6} {'within +-10%':>13} {'MAPE':>7}")
    print(f"{'calibrated predictor':<22} {len(test):>6} {out['predictor']['within10']:>12.0%} "
          f"{out['predictor']['mape']:>7.1%}")
    print(f"{'lookup table':<22} {len(covered):>6} {out['lut']['within10']:>12.0%} {out['lut']['mape']:>7.1%}")
    return 0


def _covered(lut, arch) -> bool:
    try:
        lut.layer_sum(arch)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
