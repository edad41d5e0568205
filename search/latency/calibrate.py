"""Few-shot calibration: fit a device's latency predictor from a CSV of measured architectures.

The case the MnasNet paper could not serve: a user with one phone and an hour measures a dozen networks
(with `latency --backend adb`, or any tool) and wants LAT(m) for thousands more. The CSV has one row a
measurement:

    arch,resolution,depth_multiplier,ms
    mnasnet-a1,224,1.0,78
    "r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24 ...",192,0.75,45

`arch` is a registry name, block strings separated by spaces, or a block-string file; it may be left out when
the caller names one architecture for all rows (the seed's table). `resolution` may also be called
`input_size`; the latency column may be `ms`, `latency_ms` or any one column ending in `_ms` (so the seed's
`pixel1_latency_ms` reads as is). The `pixel1` preset is `build_pixel1`: this fit applied to the seed's 25 rows
and the published Pixel 1 figures of other families in `pixel1_published.csv` marked for fitting.
"""

from __future__ import annotations

import csv
import os
from importlib import resources
from typing import Sequence

import numpy as np

from mnas.search.latency.base import LatencyModel
from mnas.search.latency.predictor import (CalibratedPredictor, TransferPredictor, choose_tile, features_of, fit_linear,
                                      fit_spread, leave_one_out)
from mnas.search.arch import Architecture

PIXEL1_PRESET = "pixel1.json"
PIXEL1_PUBLISHED = "pixel1_published.csv"   # other published Pixel 1 figures, each with its source and use
PUBLISHED_USES = ("fit", "held-out")
_RESOLUTION_COLUMNS = ("resolution", "input_size")
_DEPTH_COLUMNS = ("depth_multiplier",)


def _latency_column(header: Sequence[str], path: str) -> str:
    for name in ("ms", "latency_ms"):
        if name in header:
            return name
    candidates = [h for h in header if h.endswith("_ms")]
    if len(candidates) == 1:
        return candidates[0]
    raise ValueError(f"{path}: need one latency column ('ms', 'latency_ms' or one '*_ms'), got {list(header)}")


def read_measurements(path: str, arch: str | None = None) -> tuple[list[Architecture], list[float]]:
    """Architectures (resolution and depth multiplier applied) and their latencies from a CSV file.

    Raises ValueError naming the file, line and bad value.
    """
    from mnas.search.registry import load_architecture

    if not os.path.isfile(path):
        raise ValueError(f"no such measurements file: {path!r}")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"cannot read {path!r}: {err}") from None
    rows = [r for r in rows if r and any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise ValueError(f"{path}: need a header line and at least one measurement")
    header = [h.strip() for h in rows[0]]
    column = {name: i for i, name in enumerate(header)}
    if "arch" not in column and arch is None:
        raise ValueError(f"{path}: no 'arch' column; add one or name the architecture of every row")
    latency = _latency_column(header, path)
    resolution_column = next((c for c in _RESOLUTION_COLUMNS if c in column), None)
    depth_column = next((c for c in _DEPTH_COLUMNS if c in column), None)
    archs, values = [], []
    loaded: dict[str, Architecture] = {}
    for number, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            raise ValueError(f"{path}:{number}: {len(row)} fields, the header has {len(header)}")
        spec = row[column["arch"]].strip() if "arch" in column else arch
        try:
            if spec not in loaded:
                loaded[spec] = load_architecture(spec)
            changes = {}
            if resolution_column:
                changes["resolution"] = int(row[column[resolution_column]])
            if depth_column:
                changes["depth_multiplier"] = float(row[column[depth_column]])
            archs.append(loaded[spec].replace(**changes))
            ms = float(row[column[latency]])
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from None
        if not np.isfinite(ms) or ms <= 0:
            raise ValueError(f"{path}:{number}: latency must be a positive number of ms, got {ms}")
        values.append(ms)
    return archs, values


def calibrate(archs: Sequence[Architecture], latencies_ms: Sequence[float], name: str,
              source: str = "", tile: int | None = None,
              priors: Sequence[LatencyModel] = ()) -> CalibratedPredictor | TransferPredictor:
    """Fits a predictor and records how well it does under leave-one-out (the honest few-shot figure).

    `tile`: the device's channel tile (`search.latency.features`); None chooses it among `TILES` by
    leave-one-out error from `MIN_TILE_CHOICE` measurements up (1 below that). The chosen tile's leave-one-out
    error is the one recorded, so with a chosen tile it is slightly optimistic (one choice among five).

    `priors`: predictors of devices already known. Given, the result is a `TransferPredictor` (the new
    device as a non-negative mix of them), and the features' own fit is only reported beside it
    (`features_loo_mape_percent`): with a few measurements the mix is the better model, and choosing between
    the two by leave-one-out error does worse than always mixing (BENCHMARKS.md, Latency)."""
    if len(archs) < 2:
        raise ValueError(f"need at least 2 measurements to calibrate, got {len(archs)}")
    y = np.asarray(latencies_ms, float)
    if priors:
        return _calibrate_transfer(archs, y, name, source, list(priors), tile)
    tile_errors = {}
    if tile is None:
        tile, tile_errors = choose_tile(archs, y)
    x = features_of(archs, tile=tile)
    coef, intercept = fit_linear(x, y)
    loo = leave_one_out(x, y)
    meta = {
        "measurements": len(y), "source": source, "channel_tile": tile,
        "tile_loo_mape_percent": ({str(t): e for t, e in tile_errors.items()} if tile_errors else None),
        "loo_mape_percent": float(np.mean(np.abs(loo / y - 1)) * 100),
        "fit_mape_percent": float(np.mean(np.abs((x @ coef + intercept) / y - 1)) * 100),
        "training": _training_rows(archs, y),
    }
    return CalibratedPredictor(coef, intercept, name=name, meta=meta, tile=tile,
                               spread=fit_spread(x, y, coef, intercept, loo))


def _calibrate_transfer(archs, y, name, source, priors, tile) -> TransferPredictor:
    p = TransferPredictor.source_matrix(priors, archs)
    loo = leave_one_out(p, y, tie=False)
    if tile is None:
        tile = choose_tile(archs, y)[0]
    own = leave_one_out(features_of(archs, tile=tile), y)
    predictor = TransferPredictor.fit(priors, archs, y, name)
    predictor.meta = {
        "measurements": len(y), "source": source, "priors": [s.name for s in priors],
        "loo_mape_percent": float(np.mean(np.abs(loo / y - 1)) * 100),
        "fit_mape_percent": float(np.mean(np.abs(np.asarray(predictor.predict(archs)) / y - 1)) * 100),
        "features_loo_mape_percent": float(np.mean(np.abs(own / y - 1)) * 100), "features_channel_tile": tile,
        "training": _training_rows(archs, y),
    }
    return predictor


def _training_rows(archs, y) -> list[dict]:
    return [{"blocks": list(a.block_strings), "stem": a.stem_filters, "head": a.head_filters,
             "resolution": a.resolution, "depth_multiplier": a.depth_multiplier, "ms": float(v)}
            for a, v in zip(archs, y)]


def training_data(predictor: CalibratedPredictor | TransferPredictor) -> tuple[list[Architecture], list[float]]:
    """The measurements a predictor file says it was fitted on (tests refit the preset from them)."""
    archs, values = [], []
    for row in predictor.meta.get("training", []):
        archs.append(Architecture.from_strings(row["blocks"], stem_filters=row["stem"], head_filters=row["head"],
                                               resolution=row["resolution"],
                                               depth_multiplier=row["depth_multiplier"]))
        values.append(row["ms"])
    return archs, values


def published_pixel1(use: str | None = None) -> list[dict]:
    """Published Pixel 1 latencies beside the seed's table (package data `pixel1_published.csv`): rows of
    {name, arch, ms, use, source}, `use` 'fit' (the preset is fitted on them) or 'held-out' (only checked).

    MobileNetV2's grid of widths and resolutions stays out on purpose (beyond the two figures at 224 px the
    MnasNet paper prints): it is the held-out test of how the preset carries to another family."""
    if use is not None and use not in PUBLISHED_USES:
        raise ValueError(f"unknown use {use!r} (known: {', '.join(PUBLISHED_USES)})")
    from mnas.search.registry import load_architecture

    text = resources.files("mnas.search.latency").joinpath(PIXEL1_PUBLISHED).read_text(encoding="utf-8")
    rows = []
    for number, row in enumerate(csv.DictReader(text.splitlines()), 2):
        try:
            spec = row["arch"].strip()
            arch = load_architecture(spec) if " " not in spec else Architecture.from_strings(spec.split())
            arch = arch.replace(stem_filters=int(row["stem"]), head_filters=int(row["head"]),
                                resolution=int(row["resolution"]), depth_multiplier=float(row["depth_multiplier"]))
            entry = {"name": row["name"], "arch": arch, "ms": float(row["ms"]), "use": row["use"],
                     "source": row["source"]}
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{PIXEL1_PUBLISHED}:{number}: {err}") from None
        if entry["use"] not in PUBLISHED_USES:
            raise ValueError(f"{PIXEL1_PUBLISHED}:{number}: unknown use {entry['use']!r}")
        if use is None or entry["use"] == use:
            rows.append(entry)
    return rows


def build_pixel1(seed_csv: str) -> CalibratedPredictor:
    """The `pixel1` preset, fitted afresh: the seed's 25 MnasNet-A1 rows and the published figures marked
    'fit' (MobileNetV2 1.0 and 1.4, MobileNetV1, MnasNet-B1 at 224 px). The other families give the fit what
    A1's grid cannot: networks whose op count, expansion and depthwise share differ from A1's."""
    archs, values = read_measurements(seed_csv, arch="mnasnet-a1")
    fitted = published_pixel1("fit")
    predictor = calibrate(archs + [r["arch"] for r in fitted], values + [r["ms"] for r in fitted],
                          name="pixel1-predicted", source=f"{seed_csv} + {PIXEL1_PUBLISHED} (use=fit)")
    return predictor


def pixel1_preset() -> CalibratedPredictor:
    """The Pixel 1 predictor (package data): `build_pixel1` of the seed's 25 MnasNet-A1 rows and four
    published figures of other families."""
    text = resources.files("mnas.search.latency").joinpath(PIXEL1_PRESET).read_text(encoding="utf-8")
    import json

    return CalibratedPredictor.from_dict(json.loads(text), source=PIXEL1_PRESET)
