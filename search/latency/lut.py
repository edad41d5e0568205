"""Per-layer latency lookup tables, as ProxylessNAS (Cai et al., ICLR 2019) and FBNet (Wu et al., CVPR 2019) use.

Every distinct layer configuration (op, input size, input/expanded/output filters, kernel, stride, SE width,
the shortcut actually built) is built alone as a one-layer model, converted to TFLite and timed once on a
backend (this host, where a batch of layers is timed in interleaved passes and each keeps its fastest, or a
phone over adb). A network's latency is then

    fixed_ms + scale * (sum of its layers' entries) + weights_ms * (millions of weights)

calibrated on a few whole-network measurements. A layer timed alone runs with its weights and its input hot in
the cache, so the plain sum (ProxylessNAS's and FBNet's model: scale 1, no weights term) misses what a network
pays for streaming every layer's weights from memory and for the cache the other layers evict: on this host
networks took longer than their sums, by amounts that varied between networks (BENCHMARKS.md, host latency).
With fewer than `FULL_CALIBRATION` networks only the fixed cost is fitted (the median gap). Build once, ship the
JSON file, predict for free.

File format (JSON): {"format": "mnas-latency-lut/1", "name": ..., "backend": {...settings}, "fixed_ms": float,
"scale": float, "weights_ms": float, "layers": {"<layer key>": ms, ...}, "meta": {...}} (scale 1 and weights_ms
0 when absent). Layer keys read like `mbconv6_hw56_i24_m144_o40_k5_s2_se6_none`.
"""

from __future__ import annotations

import statistics
import sys
from typing import Callable, Iterable, NamedTuple, Sequence

from mnas.search.counts import LayerProfile, classifier_profile, head_profile, layer_profile, profile, stem_profile
from mnas.search.latency.base import LatencyModel, Progress, check_resolution
from mnas.search.latency.features import FeatureCache
from mnas.search.latency.layer_model import LayerModel
from mnas.search.fileio import read_json, write_json_atomic
from mnas.search.arch import CONV_REGULAR, SKIP_IDENTITY, SKIP_NONE, SKIP_POOL, Architecture, Block

FORMAT = "mnas-latency-lut/1"
FULL_CALIBRATION = 5   # whole networks needed to fit the scale and the weights term beside the fixed cost
MODEL_USES = ("missing", "all")   # the layers a table's LayerModel predicts


class LayerKey(NamedTuple):
    """What determines a layer's latency; `search.counts.LayerProfile` minus its name and derived counts."""

    op: str
    in_hw: int
    in_filters: int
    expand_filters: int
    out_filters: int
    kernel: int
    stride: int
    se_filters: int
    skip: str

    @classmethod
    def of(cls, row: LayerProfile) -> "LayerKey":
        return cls(row.op, row.in_hw, row.in_filters, row.expand_filters, row.out_filters, row.kernel, row.stride,
                   row.se_filters, row.skip)

    def __str__(self) -> str:
        return (f"{self.op}_hw{self.in_hw}_i{self.in_filters}_m{self.expand_filters}_o{self.out_filters}"
                f"_k{self.kernel}_s{self.stride}_se{self.se_filters}_{self.skip}")

    @classmethod
    def parse(cls, text: str) -> "LayerKey":
        parts = text.split("_")
        try:
            op, skip = parts[0], parts[-1]
            numbers = dict((p[:2] if p[:2] in ("hw", "se") else p[:1], int(p[2:] if p[:2] in ("hw", "se")
                                                                             else p[1:])) for p in parts[1:-1])
            return cls(op, numbers["hw"], numbers["i"], numbers["m"], numbers["o"], numbers["k"], numbers["s"],
                       numbers["se"], skip)
        except (KeyError, ValueError, IndexError):
            raise ValueError(f"bad layer key {text!r}") from None


def layer_keys(archs: Iterable[Architecture], resolution: int | None = None,
               num_classes: int = 1000) -> list[LayerKey]:
    """The distinct layers of `archs`, in first-seen order."""
    seen: dict[LayerKey, None] = {}
    for arch in archs:
        for row in profile(arch, num_classes, resolution=resolution):
            seen.setdefault(LayerKey.of(row), None)
    return list(seen)


def block_of(key: LayerKey) -> tuple[Block, int]:
    """(a one-repeat block, its declared input filters) that builds exactly the layer `key` describes."""
    conv, expand = (CONV_REGULAR, 1) if key.op == "conv" else ("mbconv", int(key.op[6:] or 1))
    if key.op == "dsconv":
        expand = 1
    declared = key.expand_filters // expand if expand > 1 else (
        key.out_filters if key.skip == SKIP_IDENTITY else key.in_filters)
    se_ratio = min(1.0, (key.se_filters + 0.5) / declared) if key.se_filters else 0.0
    skip = {"identity": SKIP_IDENTITY, "pool": SKIP_POOL}.get(key.skip, SKIP_NONE)
    return Block(1, key.kernel, (key.stride, key.stride), expand, declared, key.out_filters, se_ratio, skip, conv), declared


def row_of(key: LayerKey) -> LayerProfile:
    """The `search.counts` profile row of the layer `key` describes (what the layer model's features need)."""
    if key.op == "stem":
        return stem_profile(key.in_hw, key.in_filters, key.out_filters, key.stride)
    if key.op == "head":
        return head_profile(key.in_hw, key.in_filters, key.out_filters)
    if key.op == "fc":
        return classifier_profile(key.in_filters, key.out_filters)
    block, declared = block_of(key)
    return layer_profile("", block, key.in_hw, key.in_filters, declared, key.stride)


class _Unpredicted(Exception):
    """A layer the table lacks and its model has not predicted yet (`LookupTable._sums` batches them)."""


def _check_use(model_for: str) -> str:
    if model_for not in MODEL_USES:
        raise ValueError(f"a layer model is used for {' or '.join(MODEL_USES)} layers, not {model_for!r}")
    return model_for


class LookupTable(LatencyModel):
    """Latency = fixed cost + scale x (the sum of the table's entries for the network's layers) + a weights term.

    With a `model` (`fit_model`, `latency build-lut --layer-model`), a `LayerModel` learned from the table's
    layers predicts the ones it lacks (`model_for="missing"`), so the table serves every architecture, or every
    layer (`model_for="all"`: the measured layers only train the model, so the calibration networks and the
    predicted ones go through the same kind of numbers; on this host the two uses came within a few points of
    each other, BENCHMARKS.md). Without a model, a missing layer is an error that says how to add it."""

    def __init__(self, layers: dict, fixed_ms: float = 0.0, name: str = "lut", backend: dict | None = None,
                 meta: dict | None = None, source: str = "<table>", num_classes: int = 1000, scale: float = 1.0,
                 weights_ms: float = 0.0, model: LayerModel | None = None, model_for: str = "missing"):
        self.layers = {k if isinstance(k, LayerKey) else LayerKey.parse(k): float(v) for k, v in layers.items()}
        self.fixed_ms, self.scale, self.weights_ms = float(fixed_ms), float(scale), float(weights_ms)
        self.name, self.backend, self.meta, self.source = name, dict(backend or {}), dict(meta or {}), source
        self.num_classes = num_classes
        self.model, self.model_for = model, _check_use(model_for)
        self._forget()

    def fit_model(self, model_for: str | None = None, **options) -> LayerModel:
        """Learns a `LayerModel` from the table's layers (options go to `LayerModel.fit`) and uses it for the
        layers the table lacks, or for all (`model_for`; default: as before)."""
        if model_for is not None:
            self.model_for = _check_use(model_for)
        keys = list(self.layers)
        self.model = LayerModel.fit([row_of(k) for k in keys], [self.layers[k] for k in keys], **options)
        self._forget()
        return self.model

    def _forget(self) -> None:
        """Drops the layer model's predictions and the per-block memo (both depend on the model)."""
        self._predicted: dict[LayerKey, float] = {}
        self._memo = FeatureCache(self._row, size=2)

    def _row(self, row: LayerProfile) -> tuple[float, float]:
        """(the layer's table entry in ms, its millions of weights)."""
        key = LayerKey.of(row)
        ms = self.layers.get(key) if self.model_for == "missing" or self.model is None else None
        if ms is None:
            ms = self._predicted.get(key)
        if ms is None:
            if self.model is None:
                raise ValueError(f"layer {key} is not in the lookup table {self.source} ({len(self.layers)} layers): "
                                 "rebuild it with 'latency build-lut' over these architectures, or give it a "
                                 "layer model (--layer-model)")
            raise _Unpredicted(key)
        return (ms, row.params * 1e-6)

    def _predict_missing(self, archs: Sequence[Architecture], resolution: int | None) -> None:
        """Runs the layer model once over every layer of `archs` that neither the table nor earlier calls have."""
        missing: dict[LayerKey, LayerProfile] = {}
        for arch in archs:
            for row in profile(arch, self.num_classes, resolution=resolution):
                key = LayerKey.of(row)
                if key not in self._predicted and (self.model_for == "all" or key not in self.layers):
                    missing.setdefault(key, row)
        if missing:
            self._predicted.update(zip(missing, self.model.predict_rows(list(missing.values())).tolist()))

    def _sums(self, archs: Sequence[Architecture], resolution: int | None) -> list[tuple[float, float]]:
        """(layer sum in ms, millions of weights) of each architecture. The memo answers networks whose blocks
        it has seen; the first one with a layer the model has not predicted yet sends the whole batch through
        the model once (the trees are fast over many layers at a time, slow one at a time)."""
        try:
            return [self._memo.features(a, resolution, self.num_classes) for a in archs]
        except _Unpredicted:
            self._predict_missing(archs, resolution)
            return [self._memo.features(a, resolution, self.num_classes) for a in archs]

    def layer_sum(self, arch: Architecture, resolution: int | None = None) -> float:
        return self._sums([arch], resolution)[0][0]

    def predict(self, archs: Sequence[Architecture], resolution: int | None = None) -> list[float]:
        check_resolution(resolution)
        return [self.fixed_ms + self.scale * ms + self.weights_ms * weights
                for ms, weights in self._sums(archs, resolution)]

    def calibrate(self, archs: Sequence[Architecture], measured_ms: Sequence[float],
                  resolution: int | None = None) -> None:
        """Fits the table's fixed cost -- and, from `FULL_CALIBRATION` networks up, its scale and weights term --
        to whole-network measurements of `archs` (least squares on relative error; records the gaps in meta)."""
        import numpy as np

        y = np.asarray(measured_ms, float)
        if len(y) == 0 or len(y) != len(archs) or (y <= 0).any():
            raise ValueError(f"need positive measurements, one per architecture (got {len(y)} for {len(archs)})")
        sums, weights = np.array(self._sums(archs, resolution)).reshape(len(archs), 2).T
        if len(y) < FULL_CALIBRATION:
            self.scale, self.weights_ms, self.fixed_ms = 1.0, 0.0, float(statistics.median(y - sums))
        else:
            design = np.c_[sums, weights, np.ones(len(y))] / y[:, None]
            self.scale, self.weights_ms, self.fixed_ms = (float(v) for v in
                                                          np.linalg.lstsq(design, np.ones(len(y)), rcond=None)[0])
        self.meta["fixed_cost_gaps_ms"] = (y - sums).tolist()
        self.meta["calibration"] = {"networks": len(y), "fit_mape_percent": float(np.mean(np.abs(
            np.array(self.predict(archs, resolution)) / y - 1)) * 100)}

    def describe(self) -> dict:
        out = {"source": self.name, "kind": "per-layer lookup table", "file": self.source,
               "layers": len(self.layers), "fixed_ms": self.fixed_ms, "scale": self.scale,
               "weights_ms_per_million": self.weights_ms, "built_on": self.backend}
        if self.model is not None:
            out["layer_model"] = {k: self.model.meta.get(k) for k in ("layers", "channel_tile", "fit_mape_percent")}
            out["layer_model"]["used_for"] = self.model_for
        return out

    def to_dict(self) -> dict:
        return {"format": FORMAT, "name": self.name, "backend": self.backend, "fixed_ms": self.fixed_ms,
                "scale": self.scale, "weights_ms": self.weights_ms, "num_classes": self.num_classes,
                "layers": {str(k): v for k, v in self.layers.items()}, "meta": self.meta,
                **({"layer_model": self.model.to_dict(), "layer_model_for": self.model_for}
                   if self.model is not None else {})}

    def save(self, path: str) -> None:
        write_json_atomic(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str) -> "LookupTable":
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not a latency lookup table (expected format {FORMAT!r})")
        try:
            return cls(data["layers"], data.get("fixed_ms", 0.0), name=str(data.get("name", "lut")),
                       backend=data.get("backend"), meta=data.get("meta"), source=path,
                       num_classes=int(data.get("num_classes", 1000)), scale=data.get("scale", 1.0),
                       weights_ms=data.get("weights_ms", 0.0),
                       model=LayerModel.from_dict(data["layer_model"]) if "layer_model" in data else None,
                       model_for=data.get("layer_model_for", "missing"))
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise ValueError(f"{path}: malformed lookup table ({err})") from None


# Settings that describe how long a timing ran, not what it ran on: a table may be extended across them.
_PROTOCOL_SETTINGS = ("versions", "warmup", "runs", "rounds", "passes", "min_seconds")


def _device(settings: dict | None) -> dict:
    return {k: v for k, v in (settings or {}).items() if k not in _PROTOCOL_SETTINGS}


def same_device(a: dict | None, b: dict | None) -> bool:
    """Whether two backends' settings describe the same device (a table without settings matches any)."""
    if not a or not b:
        return True
    shared = set(_device(a)) & set(_device(b))
    return all(a[k] == b[k] for k in shared)


def build_lut(archs: Sequence[Architecture], measure_layers: Callable[[Sequence[LayerKey]], Sequence[float]],
              measure_networks: Callable[..., Sequence[float]] | None = None,
              resolution: int | None = None,
              fixed_cost_archs: int = 3, name: str = "lut", backend: dict | None = None,
              existing: LookupTable | None = None, progress: bool = False, num_classes: int = 1000,
              layer_model: str | None = None, network_passes: int = 1) -> LookupTable:
    """Measures every distinct layer of `archs` once (skipping those `existing` has), in one batch
    (`measure_layers`: `host_layer_measurer`, `adb_layer_measurer`), and calibrates the table.

    The first `fixed_cost_archs` architectures are measured whole, in one batch (`measure_networks`, e.g. a
    measured backend's `predict`), and `LookupTable.calibrate` fits the table to them: the fixed cost alone
    below `FULL_CALIBRATION` networks, with the scale and the weights term from there up. Without
    `measure_networks` the calibration stays `existing`'s (or none). With `network_passes` > 1,
    `measure_networks(networks, between)` times the networks in that many passes and calls `between(done)`
    after each but the last (`HostTFLite.measure_many`): the layers are measured there, in `network_passes` - 1
    parts, so that the networks' passes spread over the whole build and a load that lasts minutes cannot cover
    them all (what `between` was not called for is measured after). `layer_model` ('missing' or 'all',
    `LookupTable.model_for`; or an `existing` table that has a model) fits the table's `LayerModel` on all its
    layers before the calibration.
    """
    check_resolution(resolution)
    if existing is not None and existing.layers and not same_device(existing.backend, backend):
        raise ValueError(f"{existing.source} was measured on {_device(existing.backend)}, not on this backend "
                         f"({_device(backend)}): its layers would be mixed with another device's; write to another "
                         "--output")
    table = dict(existing.layers) if existing else {}
    todo = [k for k in layer_keys(archs, resolution, num_classes) if k not in table]
    if todo and progress:
        print(f"measuring {len(todo)} layers ({len(table)} already in the table)", file=sys.stderr, flush=True)
    calibrating = measure_networks is not None and fixed_cost_archs > 0
    parts = max(network_passes - 1, 1) if calibrating else 1
    pending = [todo[i * len(todo) // parts:(i + 1) * len(todo) // parts] for i in range(parts)]

    def measure_next_part(_done: int | None = None) -> None:
        part = pending.pop(0) if pending else []
        if part:
            measured = [float(ms) for ms in measure_layers(part)]
            if len(measured) != len(part):
                raise ValueError(f"measure_layers gave {len(measured)} latencies for {len(part)} layers")
            table.update(zip(part, measured))

    networks, whole = [], None
    if calibrating:
        networks = [arch.replace(resolution=resolution) if resolution else arch
                    for arch in list(archs)[:fixed_cost_archs]]
        if network_passes > 1:
            if progress:
                print(f"measuring {len(networks)} whole networks to calibrate the table, in {network_passes} passes "
                      "with the layers between them", file=sys.stderr, flush=True)
            whole = measure_networks(networks, measure_next_part)
        else:
            while pending:
                measure_next_part()
            if progress:
                print(f"measuring {len(networks)} whole networks to calibrate the table", file=sys.stderr,
                      flush=True)
            whole = measure_networks(networks)
        whole = [float(ms) for ms in whole]
        if len(whole) != len(networks):
            raise ValueError(f"measure_networks gave {len(whole)} latencies for {len(networks)} networks")
    while pending:
        measure_next_part()
    lut = LookupTable(table, existing.fixed_ms if existing else 0.0, name=name, backend=backend,
                      meta=dict(existing.meta) if existing else {}, num_classes=num_classes,
                      scale=existing.scale if existing else 1.0, weights_ms=existing.weights_ms if existing else 0.0)
    if layer_model or (existing is not None and existing.model is not None):
        lut.fit_model(layer_model or existing.model_for)
    if whole is not None:
        steps = Progress(len(networks), "calibration network", progress)
        for arch, ms in zip(networks, whole):
            steps.step(f"{ms:.3f} ms, layers sum to {lut.layer_sum(arch):.3f}")
        lut.calibrate(networks, whole)
    lut.meta["layers_measured"] = len(table)
    return lut
