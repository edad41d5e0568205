"""The Keras model builder against the analytic counts, and the official block details."""

import random

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from mnas.search.counts import count  # noqa: E402
from mnas.search.registry import ARCHITECTURES, load_space  # noqa: E402
from mnas.search.arch import Architecture  # noqa: E402
from mnas.trainer.builder import build_model  # noqa: E402


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_named_architectures_match_the_analytic_count_exactly(name):
    arch = ARCHITECTURES[name]
    model = build_model(arch)
    counts = count(arch)
    assert model.count_params() == counts.weights
    assert _trainable(model) == counts.params
    assert model.output_shape == (None, 1000)


def test_random_samples_of_every_space_match_exactly():
    rng = random.Random(11)
    for space_name in ("mnasnet", "mnasnet-small"):
        space = load_space(space_name)
        for _ in range(4):
            arch = space.sample(rng).replace(depth_multiplier=rng.choice([0.35, 0.5, 1.0]))
            resolution = rng.choice([28, 32, 64])
            model = build_model(arch, num_classes=10, input_shape=(resolution, resolution, 1))
            counts = count(arch, num_classes=10, input_channels=1, resolution=resolution)
            assert model.count_params() == counts.weights, arch
            assert _trainable(model) == counts.params, arch


def test_official_block_details():
    arch = Architecture.from_strings(["r2_k5_s22_e6_i16_o24_se0.25", "r1_k3_s11_e1_i24_o24_noskip",
                                      "r1_k3_s22_e1_i24_o32_poolskip_conv"], stem_filters=16, head_filters=64)
    model = build_model(arch, num_classes=5, input_shape=(32, 32, 3))
    names = {layer.name: layer for layer in model.layers}
    # SE width comes from the block's input filters: 16 * 0.25 = 4 on the first repeat, 24 * 0.25 = 6 after.
    assert names["b1_1_se_reduce"].filters == 4
    assert names["b1_2_se_reduce"].filters == 6
    # residual: not on the strided first repeat, yes on the second, never with noskip
    assert "b1_1_add" not in names and "b1_2_add" in names and "b2_1_add" not in names
    # pooling skip on a strided regular conv: pooled and projected shortcut
    assert "b3_1_skip_pool" in names and "b3_1_skip_proj" in names and "b3_1_conv" in names
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.momentum == 0.99 and layer.epsilon == 1e-3
    assert names["head_conv"].filters == 64


def test_head_is_not_scaled_and_dropout_is_the_architectures():
    model = build_model(ARCHITECTURES["mnasnet-a1"].replace(depth_multiplier=0.5), num_classes=10,
                        input_shape=(64, 64, 3))
    names = {layer.name: layer for layer in model.layers}
    assert names["head_conv"].filters == 1280
    assert names["stem_conv"].filters == 16
    assert names["dropout"].rate == pytest.approx(0.2)
    small = build_model(ARCHITECTURES["mnasnet-small"], num_classes=10, input_shape=(64, 64, 3))
    assert "dropout" not in {layer.name for layer in small.layers}


def test_model_runs_forward_at_any_size():
    model = build_model(ARCHITECTURES["mnasnet-small"], num_classes=7, input_shape=(40, 40, 3))
    out = model(np.zeros((2, 40, 40, 3), np.float32), training=False)
    assert out.shape == (2, 7)
    assert np.all(np.isfinite(np.asarray(out)))
