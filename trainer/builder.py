"""Architecture -> Keras 3 model.

The official MnasNet details (tensorflow/tpu, models/official/mnasnet/mnasnet_model.py): batch norm with
momentum 0.99 and epsilon 1e-3 after every conv, ReLU activations, squeeze-excite width from the block's
*input* filters, an identity residual only at stride 1 with equal input and output filters and no `noskip`,
a 3x3 stride-2 stem, a 1x1 conv head of 1280 filters (never scaled), global average pooling, dropout and a
dense classifier. The two ops the release lacks follow `search.arch`: a regular conv layer is conv-BN-ReLU
(then SE), and a pooling skip averages the shortcut over the stride and projects it (1x1 conv + BN) when the
filters change.

Parameter counts equal `search.counts` exactly (tests check every named architecture and random samples).
"""

from __future__ import annotations

import keras
from keras import layers

from mnas.search.counts import residual_kind
from mnas.search.arch import CONV_REGULAR, SKIP_IDENTITY, SKIP_POOL, Architecture, Block

BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3

# The official initializers: conv kernels N(0, sqrt(2 / fan_out)), dense U(-1/sqrt(fan_out), 1/sqrt(fan_out)).
_CONV_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}
_DENSE_INIT = {"class_name": "VarianceScaling",
               "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


def _bn(name: str) -> layers.Layer:
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _conv(filters: int, kernel: int, stride: int, name: str, use_bias: bool = False) -> layers.Layer:
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=use_bias,
                         kernel_initializer=keras.initializers.get(_CONV_INIT), name=name)


def build_layer(x, block: Block, declared_in: int, stride: int, prefix: str):
    """One repeat of a block: expansion, depthwise (or regular) conv, SE, projection, shortcut.

    Public so that per-layer latency tables (search.latency.lut) time exactly the layers models are made of.
    """
    inputs = x
    cin = x.shape[-1]
    cout, k = block.output_filters, block.kernel
    if block.conv == CONV_REGULAR:
        x = _conv(cout, k, stride, f"{prefix}conv")(x)
        x = _bn(f"{prefix}conv_bn")(x)
        x = layers.ReLU(name=f"{prefix}conv_relu")(x)
    else:
        if block.expand_ratio != 1:
            x = _conv(declared_in * block.expand_ratio, 1, 1, f"{prefix}expand")(x)
            x = _bn(f"{prefix}expand_bn")(x)
            x = layers.ReLU(name=f"{prefix}expand_relu")(x)
        x = layers.DepthwiseConv2D(k, strides=stride, padding="same", use_bias=False,
                                   depthwise_initializer=keras.initializers.get(_CONV_INIT),
                                   name=f"{prefix}dw")(x)
        x = _bn(f"{prefix}dw_bn")(x)
        x = layers.ReLU(name=f"{prefix}dw_relu")(x)
    if block.se_ratio > 0:
        mid = x.shape[-1]
        squeezed = max(1, int(declared_in * block.se_ratio))
        s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}se_pool")(x)
        s = _conv(squeezed, 1, 1, f"{prefix}se_reduce", use_bias=True)(s)
        s = layers.ReLU(name=f"{prefix}se_relu")(s)
        s = _conv(mid, 1, 1, f"{prefix}se_expand", use_bias=True)(s)
        s = layers.Activation("sigmoid", name=f"{prefix}se_sigmoid")(s)
        x = layers.Multiply(name=f"{prefix}se_scale")([x, s])
    if block.conv != CONV_REGULAR:
        x = _conv(cout, 1, 1, f"{prefix}project")(x)
        x = _bn(f"{prefix}project_bn")(x)
    kind = residual_kind(block.skip, stride, declared_in, cin, cout)
    if kind == SKIP_IDENTITY:
        x = layers.Add(name=f"{prefix}add")([x, inputs])
    elif kind == SKIP_POOL:
        shortcut = inputs
        if stride > 1:
            shortcut = layers.AveragePooling2D(stride, strides=stride, padding="same",
                                               name=f"{prefix}skip_pool")(shortcut)
        if cin != cout:
            shortcut = _conv(cout, 1, 1, f"{prefix}skip_proj")(shortcut)
            shortcut = _bn(f"{prefix}skip_proj_bn")(shortcut)
        x = layers.Add(name=f"{prefix}add")([x, shortcut])
    return x


def build_model(arch: Architecture, num_classes: int = 1000, input_shape: tuple[int, int, int] | None = None,
                name: str = "mnas", include_top: bool = True) -> keras.Model:
    """Builds `arch` as a functional Keras model that outputs logits.

    Args:
        arch: the architecture; its depth multiplier is applied with the official rounding.
        num_classes: classifier width.
        input_shape: (height, width, channels); default (arch.resolution, arch.resolution, 3). Any size works:
            'same' padding everywhere, global pooling before the classifier.
        name: the Keras model name.
        include_top: False stops after the head's global pooling (features for transfer learning).
    """
    if input_shape is None:
        input_shape = (arch.resolution, arch.resolution, 3)
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv(arch.scaled_stem(), 3, arch.stem_stride, "stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for b, block in enumerate(arch.scaled_blocks(), 1):
        for r in range(block.repeats):
            first = r == 0
            x = build_layer(x, block, block.input_filters if first else block.output_filters,
                       block.stride if first else 1, f"b{b}_{r + 1}_")
    x = _conv(arch.head_filters, 1, 1, "head_conv")(x)
    x = _bn("head_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if include_top:
        if arch.dropout > 0:
            x = layers.Dropout(arch.dropout, name="dropout")(x)
        x = layers.Dense(num_classes, kernel_initializer=keras.initializers.get(_DENSE_INIT), name="logits")(x)
    return keras.Model(inputs, x, name=name)
