"""The learned per-layer latency model: boosted trees, the layer model, and lookup tables that use it. No TensorFlow."""

import json

import numpy as np
import pytest

from mnas.search.counts import profile
from mnas.measure import get_latency_model
from mnas.search.latency.features import layer_features
from mnas.search.latency.layer_model import MIN_LAYERS, LayerModel
from mnas.search.latency.lut import LayerKey, LookupTable, build_lut, layer_keys, row_of
from mnas.search.latency.trees import BoostedTrees
from mnas.search.registry import ARCHITECTURES, load_space

SPACE = load_space("mnasnet")


def quirky_device(key: LayerKey) -> float:
    """A device whose kernels waste a third of their time on a channel count that is not a multiple of 16
    (as XNNPACK's depthwise kernels do on the AVX-512 host): linear in the features, and then not."""
    row = row_of(key)
    linear = float(np.array(layer_features(row)) @ np.array([0.02, 0.02, 0.05, 0.01, 0.05, 0.002]))
    return linear * (1.35 if row.expand_filters % 16 else 1.0) * (1.2 if row.in_hw >= 56 else 1.0)


def quirky_layers(keys) -> list[float]:
    """That device as `build_lut` measures: a batch of layers at a time."""
    return [quirky_device(key) for key in keys]


def test_boosted_trees_learn_a_nonlinear_function_and_round_trip():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (400, 3))
    y = np.where(x[:, 0] > 0.5, 2.0, 0.0) + (x[:, 1] - 0.5) ** 2
    model = BoostedTrees.fit(x[:300], y[:300], trees=200)
    error = np.mean((model.predict(x[300:]) - y[300:]) ** 2)
    assert error < 0.01 < np.var(y[300:])
    again = BoostedTrees.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    assert len(model.trees) == 200 and max(len(t) for t in model.trees) <= 15     # depth 3: at most 15 nodes
    with pytest.raises(ValueError, match="finite"):
        BoostedTrees.fit(np.array([[0.0], [np.nan]]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="boosted-trees"):
        BoostedTrees.from_dict({"format": "x"})


def test_a_layer_key_gives_back_its_profile_row():
    archs = [SPACE.sample(i) for i in range(60)] + list(ARCHITECTURES.values())
    for arch in archs:
        for row in profile(arch):
            assert row_of(LayerKey.of(row)) == row._replace(name=row_of(LayerKey.of(row)).name)


def test_layer_model_learns_a_quirk_the_linear_features_cannot():
    seen = layer_keys([SPACE.sample(500 + i).replace(resolution=160) for i in range(60)])
    unseen = [k for k in layer_keys([SPACE.sample(900 + i).replace(resolution=160) for i in range(30)])
              if k not in set(seen)]
    assert len(unseen) > 50
    model = LayerModel.fit([row_of(k) for k in seen], [quirky_device(k) for k in seen])
    truth = np.array([quirky_device(k) for k in unseen])
    error = np.abs(model.predict_rows([row_of(k) for k in unseen]) / truth - 1)
    linear = np.abs(model.linear_ms([row_of(k) for k in unseen]) / truth - 1)
    assert np.mean(error) < 0.04 and np.mean(linear) > 0.08, (np.mean(error), np.mean(linear))
    assert model.meta["layers"] == len(seen) and model.meta["channel_tile"] in (1, 4, 8, 16, 32)
    with pytest.raises(ValueError, match=f"at least {MIN_LAYERS} measured layers"):
        LayerModel.fit([row_of(k) for k in seen[:5]], [1.0] * 5)
    with pytest.raises(ValueError, match="positive"):
        LayerModel.fit([row_of(k) for k in seen], [0.0] * len(seen))


def test_a_table_with_a_layer_model_predicts_architectures_it_never_measured(tmp_path):
    built = [SPACE.sample(100 + i).replace(resolution=128) for i in range(50)]
    table = build_lut(built, quirky_layers, layer_model="missing", name="quirky")
    assert table.model is not None and table.model_for == "missing"
    new = [SPACE.sample(7000 + i).replace(resolution=128) for i in range(20)]
    assert any(k not in table.layers for k in layer_keys(new))
    truth = [sum(quirky_device(LayerKey.of(r)) for r in profile(a)) for a in new]
    predicted = table.predict(new)
    assert np.mean(np.abs(np.array(predicted) / truth - 1)) < 0.03
    # 'missing' uses a measured entry where there is one, 'all' the model everywhere
    known = built[0]
    assert table.latency_ms(known) == pytest.approx(sum(quirky_device(LayerKey.of(r)) for r in profile(known)))
    key = LayerKey.of(profile(known)[3])
    table.layers[key] += 100.0
    table.fit_model("missing")
    assert table.latency_ms(known) > 100
    table.fit_model("all")
    assert table.latency_ms(known) < 100
    # the model travels in the file; the backend spec reads it
    path = tmp_path / "quirky.json"
    table.save(str(path))
    again = get_latency_model(f"lut:{path}")
    assert again.model_for == "all" and again.predict(new) == pytest.approx(table.predict(new))
    assert again.describe()["layer_model"]["used_for"] == "all"
    # one architecture at a time gives what a batch gives
    assert [again.latency_ms(a) for a in new[:3]] == pytest.approx(again.predict(new[:3]))
    data = json.loads(path.read_text())
    data["layer_model"]["trees"]["format"] = "something-else"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"quirky\.json: malformed lookup table.*boosted-trees"):
        LookupTable.load(str(path))


def test_without_a_model_a_missing_layer_says_how_to_add_one():
    table = build_lut([SPACE.sample(3)], quirky_layers)
    with pytest.raises(ValueError, match="--layer-model"):
        table.latency_ms(SPACE.sample(3).replace(resolution=64))
    with pytest.raises(ValueError, match="missing or all"):
        LookupTable({}, model_for="some")


def test_cli_build_lut_with_a_layer_model(tmp_path, monkeypatch, capsys):
    """`latency build-lut --layer-model` end to end, with this host's measurements replaced by the quirky device."""
    from mnas import cli
    import mnas.measure.host as host
    import mnas.measure.layers as layers_module

    events = []

    class Device:
        name, passes = "quirky-host", 3

        def __init__(self, **options):
            pass

        def settings(self):
            return {"backend": "quirky"}

        def measure(self, arch):
            return type("M", (), {"ms": 0.3 + sum(quirky_device(LayerKey.of(r)) for r in profile(arch))})()

        def measure_many(self, archs, resolution=None, between=None):     # as HostTFLite: passes, work between
            for done in range(1, self.passes + 1):
                events.append(f"networks pass {done}")
                if done < self.passes:
                    between(done)
            return [self.measure(a) for a in archs]

    def layers(keys):
        events.append("layers")
        return quirky_layers(keys)

    monkeypatch.setattr(host, "HostTFLite", Device)
    monkeypatch.setattr(layers_module, "host_layer_measurer", lambda *a, **k: layers)
    out = tmp_path / "quirky.json"
    assert cli.main(["latency", "build-lut", "-o", str(out), "--space", "mnasnet", "--samples", "40",
                        "--resolution", "128", "--fixed-cost-archs", "10", "--layer-model", "--no-cache"]) == 0
    # the calibration networks' passes spread over the build, the table's layers measured between them
    assert events == ["networks pass 1", "layers", "networks pass 2", "layers", "networks pass 3"]
    assert "a layer model for all layers" in capsys.readouterr().out
    table = get_latency_model(f"lut:{out}")
    assert table.model is not None and table.model_for == "all" and table.backend == {"backend": "quirky"}
    new = [SPACE.sample(8000 + i).replace(resolution=128) for i in range(10)]
    truth = [Device().measure(a).ms for a in new]
    assert np.mean(np.abs(np.array(table.predict(new)) / truth - 1)) < 0.03
    assert cli.main(["latency", "mnasnet-a1", "--backend", f"lut:{out}", "--resolution", "128", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["layer_model"]["used_for"] == "all" and data["latency_ms"] > 0
    # a table without a model, extended with one: its layers are not measured twice
    monkeypatch.setattr(layers_module, "host_layer_measurer", lambda *a, **k: lambda keys: pytest.fail(f"measured {keys}"))
    assert cli.main(["latency", "build-lut", "-o", str(out), "--space", "mnasnet", "--samples", "5",
                        "--resolution", "128", "--fixed-cost-archs", "5", "--layer-model", "missing",
                        "--no-cache"]) == 0
    assert get_latency_model(f"lut:{out}").model_for == "missing"
