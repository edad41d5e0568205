"""The Pixel 1 preset: leave-one-out on the seed's 25 rows, held-out published figures, and prediction speed.

    python benchmarks/latency_pixel1.py [--write]

Beside it, a plain multiply-adds-linear fit (ms = a * MAdds + b, least squares on the same 25 rows). Held-out
Pixel 1 latencies (never used in fitting), from the MnasNet paper (Tan et al., CVPR 2019, arXiv 1807.11626v3,
Table 1): MobileNetV2 1.0 at 224: 75 ms; MobileNetV2 1.4: 143 ms; mnasnet-small: 23.2 ms (the project
DESIGN.md headline figures). MnasNet-B1 (no SE) at 76 ms is the network the first arXiv version (1807.11626v1, Table 1)
reports as "MnasNet" with 317M multiply-adds; we treat that figure as less certain. Pure numpy: seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.latency_report import machine, today, mape, spearman, update_section  # noqa: E402
from search.counts import count  # noqa: E402
from search.latency import get_latency_model  # noqa: E402
from search.latency.calibrate import training_data  # noqa: E402
from search.latency.features import feature_matrix  # noqa: E402
from search.latency.predictor import leave_one_out  # noqa: E402
from search.registry import ARCHITECTURES, load_space  # noqa: E402

MV2 = ARCHITECTURES["mobilenetv2"]
HELD_OUT = [  # (label, architecture, published Pixel 1 ms, source)
    ("MobileNetV2 1.0 @224", MV2, 75.0, "MnasNet paper Table 1"),
    ("MobileNetV2 1.4 @224", MV2.replace(depth_multiplier=1.4, head_filters=1792), 143.0, "MnasNet paper Table 1"),
    ("mnasnet-small @224", ARCHITECTURES["mnasnet-small"], 23.2, "MnasNet headline figures, DESIGN.md"),
    ("MnasNet-B1 @224", ARCHITECTURES["mnasnet-b1"], 76.0, "arXiv 1807.11626v1 Table 1 ('MnasNet')"),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="update the section in BENCHMARKS.md")
    args = parser.parse_args(argv)
    model = get_latency_model("pixel1")
    archs, values = training_data(model)
    y = np.array(values)
    x = feature_matrix(archs, tile=model.tile)
    loo = leave_one_out(x, y)
    tile_one = mape(leave_one_out(feature_matrix(archs), y), y)
    madds = np.array([count(a).madds / 1e6 for a in archs])
    loo_linear = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        slope, intercept = np.polyfit(madds[keep], y[keep], 1)
        loo_linear[i] = slope * madds[i] + intercept
    slope, intercept = np.polyfit(madds, y, 1)
    rows = [f"| seed 25 rows, leave-one-out | MAPE {mape(loo, y):.2f}%, Spearman {spearman(loo, y):.3f} "
            f"| MAPE {mape(loo_linear, y):.2f}%, Spearman {spearman(loo_linear, y):.3f} |"]
    held = []
    for label, arch, ms, source in HELD_OUT:
        ours = model.latency_ms(arch)
        linear = slope * count(arch).madds / 1e6 + intercept
        held.append((ours, linear, ms))
        rows.append(f"| {label}: {ms:g} ms ({source}) | {ours:.1f} ms ({ours / ms - 1:+.1%}) "
                    f"| {linear:.1f} ms ({linear / ms - 1:+.1%}) |")
    ours, linear, truth = (np.array(c) for c in zip(*held))
    rows.append(f"| held-out 4, all | MAPE {mape(ours, truth):.1f}% | MAPE {mape(linear, truth):.1f}% |")
    small = [(model.latency_ms(a.replace(depth_multiplier=0.35, resolution=96)),
              slope * count(a.replace(depth_multiplier=0.35, resolution=96)).madds / 1e6 + intercept)
             for a in [ARCHITECTURES["mnasnet-small"]]]
    space = load_space("mnasnet")
    sample = [space.sample(i) for i in range(20_000)]
    start = time.perf_counter()
    model.predict(sample)
    cold = len(sample) / (time.perf_counter() - start)
    start = time.perf_counter()
    model.predict(sample)
    warm = len(sample) / (time.perf_counter() - start)
    table = "\n".join(["| check | calibrated `pixel1` preset | multiply-adds-linear fit |", "|---|---|---|"] + rows)
    print(table)
    print(f"prediction speed: {cold:,.0f} archs/s on 20,000 new random architectures, {warm:,.0f} archs/s warm")
    print(f"(mnasnet-small 0.35 @96 would be {small[0][0]:.2f} ms by the preset, {small[0][1]:.2f} ms linear)")
    if args.write:
        coef = model.describe()["coefficients"]
        terms = ", ".join(f"{k} {v:.4g}" for k, v in coef.items() if v) or "none"
        tiles = ", ".join(f"{t}: {e:.2f}%" for t, e in (model.meta.get("tile_loo_mape_percent") or {}).items())
        update_section("pixel1", f"""### Pixel 1 preset (`--backend pixel1`)

`python benchmarks/latency_pixel1.py --write` -- {machine()}; {today()}. Pure numpy, no phone.

The preset is `latency calibrate ../shared/reference/mnasnet_a1_pixel1.csv --arch mnasnet-a1`: a non-negative
linear model of analytic features (multiply-adds by op type, activation traffic, weights, op count), fitted on
relative error to the seed's 25 MnasNet-A1 rows only, with convolution output channels counted in tiles of
{model.tile} (the channel tile calibration chose by leave-one-out, `search.latency.features`; leave-one-out MAPE by
tile: {tiles}). Fitted non-zero terms (ms per million, or per op): {terms}; intercept {model.intercept:.3g} ms.

{table}

Leave-one-out MAPE {mape(loo, y):.2f}% meets the <= 4% goal (the tile was chosen by the same leave-one-out
error among five, which makes the figure slightly optimistic; at tile 1 it is {tile_one:.2f}%); the rows are rounded to whole milliseconds (8.5, 5.4,
...), which alone is worth about 1% on the small ones. On the held-out networks the preset stays within
{np.max(np.abs(ours / truth - 1)):.0%}; its worst case is MobileNetV2 1.4 (wide 1x1 convolutions at high
resolution, beyond the widest A1 row) and the MnasNet-B1 figure is the least certain reference.
The multiply-adds line does about as well on these four held-out networks: they all sit near 300-600M
multiply-adds where the line was fitted, and it is on small, wide, low-resolution models that multiply-adds
alone goes wrong (its leave-one-out error above, mostly from the 96-160 px rows). Prediction speed:
{cold:,.0f} architectures/s on 20,000 never-seen random architectures of the space, {warm:,.0f}/s when their
blocks have been seen (goal >= 10,000/s; the figures vary with the load of this shared machine).""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
