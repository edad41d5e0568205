"""The surrogate of the proxy task: features, fitting, held-out quality, files, noise. No TensorFlow needed."""

import json
import math
import os
import random
import sys

import numpy as np
import pytest

from mnas.search.counts import count
from mnas.search.proxy import ProxyConfig, proxy_architecture
from mnas.search.registry import ARCHITECTURES, load_space
from mnas.search.surrogate import (FORMAT, RidgeModel, Surrogate, cross_validate, feature_names, features, kendall,
                                   proxy_settings, rank_quality, spearman, trained_network)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _truth(arch):
    """A made-up 'accuracy' with interactions: more filters help, 5x5 kernels help only with SE, conv hurts."""
    value = 0.6
    for block in arch.scaled_blocks():
        value += 0.0004 * block.output_filters
        value += 0.01 * (block.kernel == 5 and block.se_ratio > 0)
        value -= 0.01 * (block.conv == "conv")
    return value


@pytest.fixture(scope="module")
def data():
    space = load_space("mnasnet")
    rng = random.Random(0)
    archs = [space.decode(space.sample_indices(rng)) for _ in range(240)]
    return space, archs, [_truth(a) for a in archs]


def test_features_describe_each_block_the_whole_and_the_trained_network():
    a1 = ARCHITECTURES["mnasnet-a1"]
    row = features(a1)
    names = feature_names(len(a1.blocks))
    assert len(row) == len(names) == 7 * 7 + 11
    values = dict(zip(names, row))
    assert (values["b3_kernel"], values["b3_se"], values["b3_expand"], values["b3_filters"]) == (5, 0.25, 3, 40)
    assert values["b1_skip"] == 0 and values["b2_skip"] == 1      # noskip, identity
    assert values["log_params"] == pytest.approx(math.log10(3887038))
    # the network the proxy trains: half width, stem and b6 unstrided, 10 classes of 1-channel 28x28 images
    trained = count(proxy_architecture(a1, ProxyConfig(width=0.5, filter_divisor=4, strides_removed=("stem", "b6"),
                                                       image_size=28)), num_classes=10, input_channels=1)
    assert values["log_proxy_params"] == pytest.approx(math.log10(trained.params))
    assert values["log_proxy_madds"] == pytest.approx(math.log10(trained.madds))
    # a1's 16 layers: the first of each block has no shortcut (filters change), the other 9 an identity; SE in
    # blocks 3, 5 and 6 (3 + 2 + 3 layers); the longest plain run is b1.1, b2.1
    structure = [values[f"proxy_{name}"] for name in ("layers", "plain_layers", "identity_layers", "pooled_layers",
                                                      "se_layers", "conv_layers", "longest_plain_run")]
    assert structure == [16, 7, 9, 0, 8, 0, 2]


def test_the_proxy_counted_is_the_one_the_bench_children_trained():
    """The surrogate's default proxy adaptation reproduces the collection's own count of the trained model."""
    import pandas as pd

    table = pd.read_csv(os.path.join(ROOT, "benchmarks", "results", "mnas_bench.csv"), nrows=20)
    space = load_space("mnasnet")
    for indices, params in zip(table["indices"], table["proxy_params"]):
        assert trained_network(space.decode(json.loads(indices)))[0].params == params


def test_proxy_settings_take_a_config_and_refuse_bad_values():
    assert proxy_settings(ProxyConfig(width=1.0, strides_removed=2), num_classes=100, input_channels=3) == {
        "width": 1.0, "filter_divisor": 4, "strides_removed": 2, "image_size": 28, "num_classes": 100,
        "input_channels": 3}
    a1 = ARCHITECTURES["mnasnet-a1"]
    at = feature_names(len(a1.blocks)).index("log_proxy_params")
    assert features(a1, {"width": 1.0})[at] > features(a1)[at] + 0.4        # a twice as wide trained model
    with pytest.raises(ValueError):
        proxy_settings({"strides_removed": ["b0"]})


def test_the_target_is_winsorized_at_its_5th_percentile_and_predictions_are_not():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = 0.8 + 0.01 * x[:, 0]
    y[:5] = 0.3                                                     # a few children that barely trained
    model = RidgeModel.fit(x, y, alpha=1.0)
    assert model.floor == pytest.approx(np.quantile(y, 0.05))
    same = RidgeModel.fit(x, np.maximum(y, model.floor), alpha=1.0, clip_quantile=0.0)
    assert np.allclose(model.predict(x), same.predict(x))          # the outliers weigh no more than the floor
    assert np.allclose(RidgeModel.from_dict(json.loads(json.dumps(model.to_dict()))).predict(x), model.predict(x))
    far = np.array([[10.0, 0.0, 0.0]])
    assert model.predict(far)[0] > y.max()                          # no clipping at the top: the best can be beaten


def test_rank_correlations_match_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)      # 2 concordant, 1 discordant pair
    assert kendall([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(2 * 3))   # tau-b with a tie


def test_surrogate_learns_an_interacting_function_held_out(data):
    space, archs, accuracy = data
    result = cross_validate(space, archs, accuracy, folds=4)
    assert result["children"] == 240 and len(result["predicted"]) == 240
    assert result["spearman"] > 0.8 and result["kendall"] > 0.6
    spread = float(np.std(accuracy))
    assert result["rmse"] < 0.6 * spread      # far better than predicting the mean
    assert result["spearman_top_quartile"] > 0.3 and "sd" not in result


def test_repeated_cross_validation_reports_means_and_spreads(data):
    space, archs, accuracy = data
    result = cross_validate(space, archs[:100], accuracy[:100], folds=4, repeats=3)
    assert result["repeats"] == 3 and len(result["predicted"]) == 100
    assert set(result["sd"]) == {"spearman", "kendall", "mae", "rmse", "spearman_top_half", "spearman_top_quartile"}
    first = cross_validate(space, archs[:100], accuracy[:100], folds=4)
    assert result["predicted"] == first["predicted"]                          # the first shuffle's predictions


def test_rank_quality_within_the_top_is_chosen_by_the_measurement():
    measured = np.arange(8.0)
    predicted = np.array([7, 6, 5, 4, 0, 1, 2, 3.0])                # wrong at the bottom, right at the top
    quality = rank_quality(predicted, measured)
    assert quality["spearman_top_half"] == pytest.approx(1.0) and quality["spearman"] < 0


def test_save_load_round_trip_and_space_check(data, tmp_path):
    space, archs, accuracy = data
    surrogate = Surrogate.fit(space, archs[:100], accuracy[:100], noise=0.01, info={"fitted_on": 100})
    path = tmp_path / "s.json"
    surrogate.save(str(path))
    again = Surrogate.load(str(path))
    assert np.allclose(again.predict(archs[100:120]), surrogate.predict(archs[100:120]))
    assert again.noise == 0.01 and again.info == {"fitted_on": 100}
    again.check_space(space)
    with pytest.raises(ValueError, match="fitted on space 'mnasnet'.*not 'mnasnet-small'"):
        again.check_space(load_space("mnasnet-small"))
    assert again.proxy == surrogate.proxy == proxy_settings()
    path.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a surrogate model"):
        Surrogate.load(str(path))


def test_an_older_surrogate_file_is_refused_with_the_command_that_refits_it(data, tmp_path):
    space, archs, accuracy = data
    old = Surrogate.fit(space, archs[:60], accuracy[:60]).to_dict()
    old.update({"format": "mnas-surrogate/1", "features": old["features"][:51],
                "model": {"format": "mnas-boosted-trees/1", "bias": 0.8, "trees": []}})
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError) as err:
        Surrogate.load(str(path))
    message = str(err.value)
    assert "\n" not in message and "mnas-surrogate/1" in message and FORMAT in message
    assert message.endswith("refit it with `benchmarks/mnas_bench.py fit`")
    with pytest.raises(ValueError, match="cannot read surrogate"):
        Surrogate.load(str(tmp_path / "missing.json"))


def test_noise_is_drawn_from_genotype_and_seed(data):
    space, archs, accuracy = data
    surrogate = Surrogate.fit(space, archs[:60], accuracy[:60], noise=0.02)
    indices = space.encode(archs[0])
    clean = surrogate.evaluate(archs[0], indices, noisy=False)
    assert clean == pytest.approx(float(surrogate.predict([archs[0]])[0]))
    first = surrogate.evaluate(archs[0], indices, seed=0)
    assert surrogate.evaluate(archs[0], indices, seed=0) == first           # same draw for the same child
    draws = [surrogate.evaluate(archs[0], indices, seed=s) for s in range(200)]
    assert 0.01 < float(np.std(draws)) < 0.03                                  # sigma 0.02
    assert abs(float(np.mean(draws)) - clean) < 0.01


def test_surrogate_imports_no_tensorflow_or_ray(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("mnas.search") or m.split(".")[0] in ("tensorflow", "ray")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.setitem(sys.modules, "ray", None)
    import mnas.search.surrogate  # noqa: F401 -- must not raise
