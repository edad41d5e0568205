"""Analytic latency features of an architecture: what a phone spends its time on, counted without a graph.

A mobile CPU running TensorFlow Lite does not take time in proportion to multiply-adds alone. Dense and 1x1
convolutions run near the arithmetic peak, depthwise convolutions are bound by memory bandwidth, every op pays a
dispatch cost, and weights must be streamed from memory once per inference. This is why a multiply-adds-linear
latency fit is off by tens of percent on small models (the MnasNet paper, Sec. 3, makes the same point to
motivate measuring real latency). The features below count each of these separately, from the analytic
per-layer profile of `search.counts`, so that a small linear model with non-negative coefficients
(`search.latency.predictor`) can be calibrated from a handful of measurements.

Kernels compute in tiles. XNNPACK's convolution kernels produce output channels a SIMD tile at a time, so a
convolution to 24 channels can cost what one to 32 does: timed alone on this project's AVX-512 host, regular
convolutions took 12.8 ps per multiply-add at 24 output channels against 7.1 at 32 and 64. The `tile` of a
device (1: no tiling) rounds every convolution's output channels up to a multiple of it before its multiply-adds
are counted; calibration picks it by leave-one-out error (`search.latency.predictor.choose_tile`): 16 for the
Pixel 1 rows, by a small margin, and 16 or 1 for this host depending on the session's network timings.

Features are additive over layers, so they are memoised per block (a block's features depend only on the scaled
block, the input size and the channels that arrive) and an architecture costs seven dictionary look-ups once
its blocks have been seen. Pure Python and numpy; no TensorFlow.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from mnas.search.counts import LayerProfile, profile
from mnas.search.counts import layer_profile  # the per-layer counter behind profile()
from mnas.search.arch import SKIP_IDENTITY, SKIP_POOL, Architecture, Block

# The feature vector, in order. Multiply-adds, activations and weights are in millions; ops is a plain count.
FEATURES: tuple[str, ...] = (
    "dense_madds",      # regular k x k convolutions (the stem, the 'conv' op): compute-bound
    "pointwise_madds",  # 1x1 convolutions and the classifier: compute-bound, the bulk of an MBConv
    "depthwise_madds",  # depthwise convolutions: low arithmetic intensity, bandwidth-bound
    "activations",      # activation elements read and written by every op (memory traffic)
    "weights",          # parameters, streamed from memory once per inference
    "ops",              # number of TFLite ops: a fixed dispatch cost each
)
N_FEATURES = len(FEATURES)
_M = 1e-6


def _tiled(channels: int, tile: int) -> int:
    """`channels` rounded up to a multiple of `tile`: what a kernel computing `tile` channels at once does."""
    return -(-channels // tile) * tile


def layer_features(row: LayerProfile, tile: int = 1) -> tuple[float, ...]:
    """The features of one row of `search.counts.profile` (a layer as the builder builds it), with every
    convolution's output channels rounded up to a multiple of `tile` (see the module docstring)."""
    dense = pointwise = depthwise = act = 0.0
    ops = 0
    hi, ho = row.in_hw * row.in_hw, row.out_hw * row.out_hw
    cin, cout, mid, k = row.in_filters, row.out_filters, row.expand_filters, row.kernel
    tcout, tmid = _tiled(cout, tile), _tiled(mid, tile)
    if row.op == "fc":
        pointwise, act, ops = cin * tcout, cin + cout, 1
    elif row.op == "head":  # 1x1 conv + BN/ReLU (fused), then the global pooling
        pointwise, act, ops = hi * cin * tcout, hi * (cin + cout) + hi * cout, 2
    elif row.op in ("stem", "conv"):
        dense = ho * k * k * cin * tcout
        act, ops = hi * cin + ho * cout, 1
    else:  # (inverted) bottleneck: [expand] -> depthwise -> [SE] -> project
        if row.op != "dsconv":
            pointwise += hi * cin * tmid
            act += hi * (cin + mid)
            ops += 1
        depthwise = ho * k * k * tmid
        act += hi * mid + ho * mid
        pointwise += ho * mid * tcout
        act += ho * (mid + cout)
        ops += 2
    if row.se_filters:  # pool, reduce, expand, sigmoid-scale: two tiny convs over a full-map read and rescale
        pointwise += 2 * mid * row.se_filters
        act += 3 * ho * mid
        ops += 4
    if row.skip == SKIP_IDENTITY:
        act += 3 * ho * cout
        ops += 1
    elif row.skip == SKIP_POOL:
        if row.stride > 1:
            act += hi * cin + ho * cin
            ops += 1
        if cin != cout:
            pointwise += ho * cin * tcout
            act += ho * (cin + cout)
            ops += 1
        act += 3 * ho * cout
        ops += 1
    return (dense * _M, pointwise * _M, depthwise * _M, act * _M, row.params * _M, float(ops))


def _sum(vectors: Iterable[Sequence[float]], size: int = N_FEATURES) -> tuple[float, ...]:
    total = [0.0] * size
    for vector in vectors:
        for i, value in enumerate(vector):
            total[i] += value
    return tuple(total)


class FeatureCache:
    """Memoised architecture -> feature vector, block by block.

    `row_features` maps a `LayerProfile` to a tuple of `size` numbers to be summed over the network (default:
    `layer_features` at channel tile `tile`; the lookup table passes its per-layer latency).

    A block's layers depend only on the scaled block, its input size and the channels that actually arrive, so
    one synthetic single-block profile per distinct (block, size, channels) is enough; the search revisits the
    same blocks constantly. The memo is bounded: it is cleared when it passes `max_entries`.
    """

    def __init__(self, row_features=None, size: int = N_FEATURES, max_entries: int = 200_000, tile: int = 1):
        self.row_features = row_features or (layer_features if tile == 1 else
                                             lambda row: layer_features(row, tile))
        self.size = size
        self.max_entries = max_entries
        self._blocks: dict[tuple, tuple] = {}
        self._ends: dict[tuple, tuple[float, ...]] = {}

    def features(self, arch: Architecture, resolution: int | None = None, num_classes: int = 1000) -> tuple:
        hw = resolution or arch.resolution
        stem = arch.scaled_stem()
        key = ("stem", hw, stem, arch.stem_stride)
        start = self._ends.get(key)
        if start is None:
            start = self._ends[key] = self.row_features(profile(
                Architecture(blocks=arch.blocks[:1], stem_filters=arch.stem_filters, stem_stride=arch.stem_stride,
                             depth_multiplier=arch.depth_multiplier), resolution=hw)[0])
        hw = -(-hw // arch.stem_stride)
        parts = [start]
        channels = stem
        for block in arch.scaled_blocks():
            entry = self._block(block, hw, channels)
            parts.append(entry[0])
            hw, channels = entry[1], entry[2]
        key = ("head", hw, channels, arch.head_filters, num_classes)
        end = self._ends.get(key)
        if end is None:
            rows = profile(Architecture(blocks=(Block(1, 1, (1, 1), 1, channels, channels, skip="none"),),
                                        stem_filters=channels, head_filters=arch.head_filters, stem_stride=1,
                                        resolution=hw), num_classes)
            end = self._ends[key] = _sum((self.row_features(r) for r in rows[-2:]), self.size)
        parts.append(end)
        return _sum(parts, self.size)

    def matrix(self, archs: Sequence[Architecture], resolution: int | None = None,
               num_classes: int = 1000) -> np.ndarray:
        """Features of many architectures as an (n, N_FEATURES) array."""
        if len(self._blocks) + len(self._ends) > self.max_entries:
            self._blocks.clear()
            self._ends.clear()
        return np.array([self.features(a, resolution, num_classes) for a in archs],
                        dtype=np.float64).reshape(len(archs), self.size)

    def _block(self, block: Block, hw: int, channels: int) -> tuple:
        key = (block, hw, channels)
        entry = self._blocks.get(key)
        if entry is None:
            # The layers exactly as `search.counts.profile` walks them (its per-layer function, so the two
            # can never disagree; a test compares against the full profile).
            total = [0.0] * self.size
            for r in range(block.repeats):
                first = r == 0
                row = layer_profile("", block, hw, channels, block.input_filters if first else block.output_filters,
                                   block.stride if first else 1)
                for i, value in enumerate(self.row_features(row)):
                    total[i] += value
                hw, channels = row.out_hw, row.out_filters
            entry = self._blocks[key] = (tuple(total), hw, channels)
        return entry


TILES = (1, 4, 8, 16, 32)       # channel tiles calibration chooses among
_CACHES: dict[int, FeatureCache] = {}


def check_tile(tile) -> int:
    """`tile` if it is a valid channel tile (a positive integer); ValueError naming it otherwise."""
    if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
        raise ValueError(f"channel tile must be a positive integer, got {tile!r}")
    return tile


def _cache(tile: int) -> FeatureCache:
    check_tile(tile)
    if tile not in _CACHES:
        _CACHES[tile] = FeatureCache(tile=tile)
    return _CACHES[tile]


def arch_features(arch: Architecture, resolution: int | None = None, num_classes: int = 1000,
                  tile: int = 1) -> np.ndarray:
    """The feature vector of one architecture (a fresh array)."""
    return np.array(_cache(tile).features(arch, resolution, num_classes))


def feature_matrix(archs: Sequence[Architecture], resolution: int | None = None, num_classes: int = 1000,
                   tile: int = 1) -> np.ndarray:
    """Features of many architectures, using the shared block memo of that channel tile."""
    return _cache(tile).matrix(archs, resolution, num_classes)


def reference_features(arch: Architecture, resolution: int | None = None, num_classes: int = 1000,
                       tile: int = 1) -> np.ndarray:
    """Features summed straight from the full profile, without the memo (tests compare the two)."""
    return np.array(_sum(layer_features(r, tile) for r in profile(arch, num_classes, resolution=resolution)))
