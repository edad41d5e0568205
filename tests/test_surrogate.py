"""The surrogate of the proxy task: features, fitting, held-out quality, files, noise. No TensorFlow needed."""

import math
import random
import sys

import numpy as np
import pytest

from mnas.search.registry import ARCHITECTURES, load_space
from mnas.search.surrogate import Surrogate, cross_validate, feature_names, features, kendall, spearman


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


def test_features_describe_each_block_and_the_whole():
    a1 = ARCHITECTURES["mnasnet-a1"]
    row = features(a1)
    names = feature_names(len(a1.blocks))
    assert len(row) == len(names) == 7 * 7 + 2
    values = dict(zip(names, row))
    assert (values["b3_kernel"], values["b3_se"], values["b3_expand"], values["b3_filters"]) == (5, 0.25, 3, 40)
    assert values["b1_skip"] == 0 and values["b2_skip"] == 1      # noskip, identity
    assert values["log_params"] == pytest.approx(math.log10(3887038))


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
    path.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a surrogate model"):
        Surrogate.load(str(path))
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
