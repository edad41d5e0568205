"""A learned model of one layer's latency, fitted on a lookup table's measured layers (nn-Meter's idea).

A lookup table knows the layers it measured and nothing else. On a phone, six linear features predict whole
networks within a few percent, but on this project's AVX-512 host the kernels' efficiency depends on shapes in
ways no linear term follows: a depthwise convolution over 24 channels takes longer than one over 32 (0.114 vs
0.096 ms at 56x56, kernel 5), and a regular convolution costs the same to 24 or 32 output channels, then jumps at
40. Linear in the features, a layer is off by 8-10%; a network, dominated by a few large layers, does not
average that away (BENCHMARKS.md, Latency). nn-Meter (Zhang et al., MobiSys 2021) learns each kernel's latency
instead; this model does the same in two stages:

    ms = linear(features of the layer) x exp(trees(descriptors of the layer))

The linear part is `search.latency.features` at a channel tile (non-negative, relative error), so a layer far
from anything measured still gets a physical estimate. Boosted trees (`search.latency.trees`) then learn the
log-ratio from the layer's shape: op kind, expansion, input size, filters and their remainder modulo the tile,
kernel, stride, SE width, shortcut, and the linear estimate itself. Fitted on the layers of about a hundred
random networks, the model predicts layers it never saw within about 3% on average, and networks about as
well as a table that measured all their layers (BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mnas.search.counts import LayerProfile
from mnas.search.latency.features import TILES, check_tile, layer_features
from mnas.search.latency.predictor import fit_linear
from mnas.search.latency.trees import BoostedTrees

FORMAT = "mnas-layer-model/1"
MIN_LAYERS = 30            # measured layers below which there is no model to learn
KINDS = ("stem", "conv", "dsconv", "mbconv", "head", "fc")
SKIPS = ("none", "identity", "pool")
DESCRIPTORS = ("kind", "expansion", "in_hw", "stride", "kernel", "in_filters", "expand_filters", "out_filters",
               "in_remainder", "expand_remainder", "out_remainder", "se_filters", "skip", "log_linear_ms")
TREE_OPTIONS = {"trees": 400, "depth": 3, "rate": 0.1, "subsample": 0.8, "min_leaf": 3}


def _kind(op: str) -> int:
    name = "mbconv" if op.startswith("mbconv") else op
    if name not in KINDS:
        raise ValueError(f"the layer model knows ops {', '.join(KINDS)}, not {op!r}")
    return KINDS.index(name)


def descriptors(rows: Sequence[LayerProfile], tile: int, linear_ms: np.ndarray) -> np.ndarray:
    """(n, len(DESCRIPTORS)): what the trees see of each layer."""
    out = np.empty((len(rows), len(DESCRIPTORS)))
    for i, (r, ms) in enumerate(zip(rows, linear_ms)):
        out[i] = (_kind(r.op), r.expand_filters / r.in_filters, r.in_hw, r.stride, r.kernel, r.in_filters,
                  r.expand_filters, r.out_filters, r.in_filters % tile, r.expand_filters % tile,
                  r.out_filters % tile, r.se_filters, SKIPS.index(r.skip), np.log(ms))
    return out


class LayerModel:
    """Latency of single layers in ms, learned from measured ones; `LookupTable` asks it for layers it lacks."""

    def __init__(self, coef: Sequence[float], intercept: float, tile: int, trees: BoostedTrees,
                 meta: dict | None = None):
        self.coef = np.asarray(coef, dtype=float)
        self.intercept = float(intercept)
        self.tile = check_tile(tile)
        self.trees = trees
        self.meta = dict(meta or {})
        self._floor = float(self.meta.get("floor_ms", 1e-4))

    @classmethod
    def fit(cls, rows: Sequence[LayerProfile], measured_ms: Sequence[float], tile: int | None = None,
            seed: int = 0, **tree_options) -> "LayerModel":
        """Fits the model to measured layers. `tile`: the linear part's channel tile (None: the tile among
        `TILES` whose linear fit has the smallest relative error on these layers)."""
        y = np.asarray(measured_ms, dtype=float)
        if len(rows) != len(y):
            raise ValueError(f"need one measurement per layer, got {len(y)} for {len(rows)}")
        if len(y) < MIN_LAYERS:
            raise ValueError(f"a layer model needs at least {MIN_LAYERS} measured layers, got {len(y)}: "
                             "measure the layers of more networks (latency build-lut --space ... --samples N)")
        if not (np.isfinite(y).all() and (y > 0).all()):
            raise ValueError("measured layer latencies must be positive numbers of ms")
        errors = {}
        for t in ([tile] if tile else TILES):
            x = np.array([layer_features(r, t) for r in rows])
            coef, intercept = fit_linear(x, y)
            errors[t] = (float(np.mean(np.abs((x @ coef + intercept) / y - 1))), coef, intercept)
        tile = min(errors, key=lambda t: errors[t][0])
        _, coef, intercept = errors[tile]
        options = {**TREE_OPTIONS, **tree_options}
        model = cls(coef, intercept, tile, BoostedTrees(), meta={"floor_ms": float(y.min()) / 10})
        linear = model.linear_ms(rows)
        model.trees = BoostedTrees.fit(descriptors(rows, tile, linear), np.log(y / linear), seed=seed, **options)
        fitted = model.predict_rows(rows)
        model.meta.update({"layers": len(y), "channel_tile": tile, "trees": options,
                           "linear_fit_mape_percent": errors[tile][0] * 100,
                           "fit_mape_percent": float(np.mean(np.abs(fitted / y - 1)) * 100)})
        return model

    def linear_ms(self, rows: Sequence[LayerProfile]) -> np.ndarray:
        """The linear part alone (the six features at the model's tile), floored above zero."""
        x = np.array([layer_features(r, self.tile) for r in rows]).reshape(len(rows), -1)
        return np.maximum(x @ self.coef + self.intercept, self._floor)

    def predict_rows(self, rows: Sequence[LayerProfile]) -> np.ndarray:
        """ms of each layer (a batch: the trees run once over all of them)."""
        if not rows:
            return np.zeros(0)
        linear = self.linear_ms(rows)
        return linear * np.exp(self.trees.predict(descriptors(rows, self.tile, linear)))

    def to_dict(self) -> dict:
        return {"format": FORMAT, "coef": self.coef.tolist(), "intercept": self.intercept, "channel_tile": self.tile,
                "trees": self.trees.to_dict(), "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict) -> "LayerModel":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a layer model (expected format {FORMAT!r})")
        return cls(data["coef"], data["intercept"], data["channel_tile"], BoostedTrees.from_dict(data["trees"]),
                   data.get("meta"))
