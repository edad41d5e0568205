"""Analytic parameter and multiply-add counts, layer by layer, with no graph built.

The counts follow the Keras model of `trainer.builder` exactly (a test checks them against the built model):
`params` are the trainable parameters, as the paper's tables count them (batch norm adds a scale and an offset
per channel); `weights` add batch norm's moving mean and variance, which is what Keras `count_params()` reports.
Squeeze-excite convs and the classifier carry biases, other convs do not. Multiply-adds count convolutions,
squeeze-excite and the classifier; batch norm, activations, pooling and residual adds are free, as in the
MnasNet paper's tables.

Spatial sizes use 'same' padding: a stride-s layer maps H to ceil(H / s).

Pure Python and fast (tens of thousands of architectures a second), for latency predictors in the search loop.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from mnas.search.arch import CONV_REGULAR, SKIP_IDENTITY, SKIP_NONE, SKIP_POOL, Architecture


class LayerProfile(NamedTuple):
    # `params` counts every stored number (as Keras count_params()); `bn_channels` says how many of them are
    # batch-norm moving statistics (two per channel), so trainable = params - 2 * bn_channels.
    """One layer of a network as the counts see it (the first repeat of a block is one layer)."""

    name: str          # stem, b3.1 (block 3, repeat 1), head, classifier
    op: str            # conv, dsconv, mbconv6, ..., stem, head, fc
    in_hw: int         # input height = width
    out_hw: int
    in_filters: int    # channels actually arriving
    out_filters: int
    kernel: int
    stride: int
    expand_filters: int  # channels after the expansion (== in_filters when there is none)
    se_filters: int      # squeeze-excite bottleneck width, 0 without SE
    skip: str            # identity, pool (projected/pooled shortcut) or none: what is actually built
    params: int
    madds: int
    bn_channels: int


@dataclasses.dataclass(frozen=True)
class Counts:
    params: int   # trainable parameters (the papers' "params")
    madds: int    # multiply-adds
    weights: int  # every stored number, batch-norm moving statistics included (Keras count_params())


def _bn(channels: int) -> int:
    return 4 * channels


def _out(hw: int, stride: int) -> int:
    return -(-hw // stride)


def residual_kind(skip: str, stride: int, declared_in: int, in_filters: int, out_filters: int) -> str:
    """What shortcut a layer really gets.

    The official rule: an identity residual only at stride 1 with equal (declared) input and output filters and
    without `noskip`. A `poolskip` layer gets the identity in that case and a pooled / projected shortcut
    otherwise. The official code would fail to build a block string whose declared input filters match its
    output while the channels that actually arrive do not (released models never do this; a space with a
    declared `input_filters` can); such a layer gets no identity here.
    """
    if skip == SKIP_NONE:
        return SKIP_NONE
    if stride == 1 and declared_in == out_filters == in_filters:
        return SKIP_IDENTITY
    return SKIP_POOL if skip == SKIP_POOL else SKIP_NONE


def profile(arch: Architecture, num_classes: int = 1000, input_channels: int = 3,
            resolution: int | None = None) -> list[LayerProfile]:
    """Per-layer shapes, parameters and multiply-adds of `arch` at its (or the given) resolution."""
    hw = resolution or arch.resolution
    rows: list[LayerProfile] = []
    stem = arch.scaled_stem()
    out_hw = _out(hw, arch.stem_stride)
    rows.append(stem_profile(hw, input_channels, stem, arch.stem_stride))
    hw, channels = out_hw, stem
    for b, block in enumerate(arch.scaled_blocks(), 1):
        for r in range(block.repeats):
            first = r == 0
            stride = block.stride if first else 1
            declared = block.input_filters if first else block.output_filters
            row = layer_profile(f"b{b}.{r + 1}", block, hw, channels, declared, stride)
            rows.append(row)
            hw, channels = row.out_hw, row.out_filters
    head = arch.head_filters
    rows.append(head_profile(hw, channels, head))
    rows.append(classifier_profile(head, num_classes))
    return rows


def stem_profile(hw: int, cin: int, cout: int, stride: int) -> LayerProfile:
    """The 3x3 stem convolution (+ BN, ReLU) on an `hw` x `hw` x `cin` image."""
    out_hw = _out(hw, stride)
    return LayerProfile("stem", "stem", hw, out_hw, cin, cout, 3, stride, cin, 0, SKIP_NONE, 9 * cin * cout + _bn(cout),
                        out_hw * out_hw * 9 * cin * cout, cout)


def head_profile(hw: int, cin: int, cout: int) -> LayerProfile:
    """The 1x1 head convolution (+ BN, ReLU) before the global pooling."""
    return LayerProfile("head", "head", hw, hw, cin, cout, 1, 1, cin, 0, SKIP_NONE, cin * cout + _bn(cout),
                        hw * hw * cin * cout, cout)


def classifier_profile(cin: int, classes: int) -> LayerProfile:
    """The fully connected classifier."""
    return LayerProfile("classifier", "fc", 1, 1, cin, classes, 1, 1, cin, 0, SKIP_NONE, cin * classes + classes,
                        cin * classes, 0)


def layer_profile(name: str, block, hw: int, cin: int, declared: int, stride: int) -> LayerProfile:
    """One repeat of `block` on an `hw` x `hw` x `cin` input (`declared`: the input filters its string declares)."""
    k, cout = block.kernel, block.output_filters
    out_hw = _out(hw, stride)
    area_in, area_out = hw * hw, out_hw * out_hw
    params = madds = bn = 0
    se = max(1, int(declared * block.se_ratio)) if block.se_ratio > 0 else 0
    if block.conv == CONV_REGULAR:
        mid = cout
        params += k * k * cin * cout + _bn(cout)
        madds += area_out * k * k * cin * cout
        bn += cout
    else:
        if block.expand_ratio != 1:
            mid = declared * block.expand_ratio
            params += cin * mid + _bn(mid)
            madds += area_in * cin * mid
            bn += mid
        else:
            mid = cin
        params += k * k * mid + _bn(mid)
        madds += area_out * k * k * mid
        bn += mid
    if se:
        params += mid * se + se + se * mid + mid
        madds += 2 * mid * se
    if block.conv != CONV_REGULAR:
        params += mid * cout + _bn(cout)
        madds += area_out * mid * cout
        bn += cout
    skip = residual_kind(block.skip, stride, declared, cin, cout)
    if skip == SKIP_POOL and cin != cout:
        params += cin * cout + _bn(cout)
        madds += area_out * cin * cout
        bn += cout
    return LayerProfile(name, block.op, hw, out_hw, cin, cout, k, stride, mid, se, skip, params, madds, bn)


def count(arch: Architecture, num_classes: int = 1000, input_channels: int = 3,
          resolution: int | None = None) -> Counts:
    """Total parameters and multiply-adds of `arch`."""
    rows = profile(arch, num_classes, input_channels, resolution)
    weights = sum(r.params for r in rows)
    return Counts(params=weights - 2 * sum(r.bn_channels for r in rows), madds=sum(r.madds for r in rows),
                  weights=weights)
