"""search.latency without TensorFlow: the interface, the Pixel 1 preset, features, calibration, lookup tables, CLI."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mnas import cli
from mnas.measure import BACKENDS, get_latency_model
from mnas.search.latency import CalibratedPredictor, LookupTable
from mnas.search.latency.calibrate import calibrate, published_pixel1, read_measurements, training_data
from mnas.search.latency.features import arch_features, reference_features
from mnas.search.latency.lut import LayerKey, build_lut, layer_keys
from mnas.search.latency.predictor import leave_one_out, nnls
from mnas.search.counts import count, profile
from mnas.search.registry import ARCHITECTURES, load_space
from mnas.search.arch import Architecture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A1 = ARCHITECTURES["mnasnet-a1"]


def test_predicting_imports_no_tensorflow_even_through_the_registry():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
            "sys.modules['ai_edge_litert'] = None; import mnas.measure as L; from mnas.search.registry import "
            "ARCHITECTURES as A; m = L.get_latency_model('pixel1'); print(m.latency_ms(A['mnasnet-a1']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert 70 < float(done.stdout) < 86


def test_spec_parsing_and_unknown_backend(tmp_path):
    model = get_latency_model("pixel1")
    assert model.name == "pixel1-predicted"
    assert model.predict([]) == []
    assert model.latency_ms(A1) == pytest.approx(model.predict([A1])[0])
    with pytest.raises(ValueError, match=r"unknown latency backend 'phone'.*pixel1.*host.*lut:FILE.*adb"):
        get_latency_model("phone")
    with pytest.raises(ValueError, match="needs a file"):
        get_latency_model("lut")
    with pytest.raises(ValueError, match="no such file"):
        get_latency_model(f"lut:{tmp_path / 'missing.json'}")
    with pytest.raises(ValueError, match="not a latency lookup table"):
        (tmp_path / "x.json").write_text("{}")
        get_latency_model(f"lut:{tmp_path / 'x.json'}")
    with pytest.raises(ValueError, match="resolution"):
        model.predict([A1], resolution=0)
    assert set(BACKENDS) == {"pixel1", "host", "lut", "calibrated", "adb"}


def test_features_memo_matches_full_profile():
    space = load_space("mnasnet")
    archs = [space.sample(i) for i in range(30)] + list(ARCHITECTURES.values())
    for arch in archs:
        for resolution in (224, 97):
            np.testing.assert_allclose(arch_features(arch, resolution), reference_features(arch, resolution),
                                       rtol=1e-12)


def test_predictor_speed():
    model = get_latency_model("pixel1")
    space = load_space("mnasnet")
    archs = [space.sample(i) for i in range(20_000)]
    model.predict(archs[:2_000])  # the search revisits blocks; a warm memo is the realistic case
    rate = 0.0
    for _ in range(3):        # the best of three passes: what the code can do, not what a busy machine left it
        start = time.perf_counter()
        out = model.predict(archs)
        rate = max(rate, len(archs) / (time.perf_counter() - start))
        assert len(out) == len(archs) and all(v > 0 for v in out)
    assert rate >= 10_000, f"{rate:.0f} architectures/s"


def test_pixel1_preset_on_the_seed_rows():
    model = get_latency_model("pixel1")
    seed_csv = os.path.join(ROOT, "..", "shared", "reference", "mnasnet_a1_pixel1.csv")
    if os.path.exists(seed_csv):
        archs, values = read_measurements(seed_csv, arch="mnasnet-a1")
    else:   # a checkout alone: the seed's rows as the preset file keeps them, beside the published figures
        a1 = ARCHITECTURES["mnasnet-a1"].block_strings
        archs, values = map(list, zip(*[(a, v) for a, v in zip(*training_data(model)) if a.block_strings == a1]))
    assert len(values) == 25
    y = np.array(values)
    predicted = np.array(model.predict(archs))
    assert np.mean(np.abs(predicted / y - 1)) < 0.035
    x = np.vstack([arch_features(a, tile=model.tile) for a in archs])
    loo = leave_one_out(x, y)
    assert np.mean(np.abs(loo / y - 1)) <= 0.04
    # The preset file is exactly the fit of its own training rows, channel tile included.
    refit = calibrate(*training_data(model), name="again")
    assert refit.tile == model.tile == model.meta["channel_tile"]
    np.testing.assert_allclose(refit.coef, model.coef, rtol=1e-6, atol=1e-9)
    # Held-out published Pixel 1 figures (MnasNet paper, Table 1): within 10%.
    assert model.latency_ms(ARCHITECTURES["mobilenetv2"]) == pytest.approx(75, rel=0.10)
    assert model.latency_ms(ARCHITECTURES["mnasnet-small"]) == pytest.approx(23.2, rel=0.10)


def test_published_pixel1_figures():
    rows = published_pixel1()
    assert {r["use"] for r in rows} == {"fit", "held-out"} and all(r["source"] for r in rows)
    by_name = {r["name"]: r for r in rows}
    # MobileNetV1 in block strings counts as published (Howard et al. 2017: 4.2M parameters, 569M multiply-adds).
    v1 = count(by_name["MobileNetV1 1.0"]["arch"])
    assert v1.params == pytest.approx(4.2e6, rel=0.01) and v1.madds == pytest.approx(569e6, rel=0.01)
    assert by_name["MobileNetV2 1.4"]["arch"].head_filters == 1792
    assert [r["name"] for r in published_pixel1("held-out")] == ["mnasnet-small"]
    # The preset was fitted on the seed's rows and the 'fit' figures, never on the held-out ones.
    model = get_latency_model("pixel1")
    archs, values = training_data(model)
    assert len(values) == 25 + len(published_pixel1("fit"))
    assert by_name["mnasnet-small"]["arch"] not in archs
    for row in rows:
        assert model.latency_ms(row["arch"]) == pytest.approx(row["ms"], rel=0.07), row["name"]
    with pytest.raises(ValueError, match="unknown use 'train'"):
        published_pixel1("train")


def test_uncertainty_grows_away_from_the_fitted_rows(tmp_path):
    model = get_latency_model("pixel1")
    archs, _ = training_data(model)
    fitted = model.uncertainty(archs)
    ratios = np.array([u["leverage_ratio"] for u in fitted])
    assert ratios.max() == pytest.approx(1.0, rel=1e-6) and not any(u["extrapolating"] for u in fitted)
    predicted = model.predict(archs)
    for u, p in zip(fitted, predicted):
        assert u["interval_ms"][0] < p < u["interval_ms"][1]
    # MobileNetV2 at 0.35 / 96 px: another family's op count and depthwise share at A1's smallest size, the
    # region where the preset was found to over-predict (issue 22): flagged, with a wider interval.
    mv2 = ARCHITECTURES["mobilenetv2"]
    small, large = model.uncertainty([mv2.replace(depth_multiplier=0.35, resolution=96), mv2])
    assert small["extrapolating"] and not large["extrapolating"]
    width = lambda u: (u["interval_ms"][1] - u["interval_ms"][0]) / sum(u["interval_ms"])  # noqa: E731
    assert width(small) > 3 * width(large)
    # Saved and loaded, the predictor keeps its spread; a file without one (an old file) reports None.
    path = tmp_path / "p.json"
    model.save(str(path))
    again = CalibratedPredictor.load(str(path))
    assert again.uncertainty([mv2]) == model.uncertainty([mv2])
    data = json.loads(path.read_text())
    del data["spread"]
    assert CalibratedPredictor.from_dict(data).uncertainty([mv2, A1]) == [None, None]
    data["spread"] = {"gram_inv": [[1.0]], "scale": [1.0], "max_leverage": 1.0, "loo_rms_relative": 0.1}
    with pytest.raises(ValueError, match="malformed latency predictor"):
        CalibratedPredictor.from_dict(data)


def test_monotonic_wider_deeper_bigger_is_slower():
    model = get_latency_model("pixel1")
    wider = A1.replace(depth_multiplier=1.25)
    deeper = A1.replace(blocks=(A1.blocks[0], A1.blocks[1].replace(repeats=3)) + A1.blocks[2:])
    base = model.latency_ms(A1)
    assert model.latency_ms(wider) > base
    assert model.latency_ms(deeper) > base
    assert model.latency_ms(A1, resolution=256) > base > model.latency_ms(A1, resolution=192)


def test_nnls_matches_brute_force():
    rng = np.random.default_rng(0)
    a = rng.random((30, 4))
    b = a @ np.array([1.0, 0.0, 2.0, 0.5]) + 0.01 * rng.standard_normal(30)
    x = nnls(a, b)
    assert (x >= 0).all()
    np.testing.assert_allclose(x, [1.0, 0.0, 2.0, 0.5], atol=0.05)
    b2 = a @ np.array([1.0, -1.0, 0.5, 0.0])
    x2 = nnls(a, b2)
    assert (x2 >= 0).all() and x2[1] == 0.0
    best = min((np.linalg.norm(a[:, list(s)] @ np.clip(np.linalg.lstsq(a[:, list(s)], b2, rcond=None)[0], 0, None)
                               - b2), s) for s in [(0,), (0, 2), (0, 2, 3), (2, 3), (0, 3)])
    assert np.linalg.norm(a @ x2 - b2) <= best[0] + 1e-9


def _write_csv(path, rows):
    path.write_text("arch,resolution,depth_multiplier,ms\n" + "".join(f"{a},{r},{d},{m}\n" for a, r, d, m in rows))


def test_calibrate_from_csv_and_use_it(tmp_path, capsys):
    # a device whose dense convs cost per multiply-add what its 1x1 convs cost, as the fit assumes (TIED)
    truth = lambda a: 3.0 + float(arch_features(a) @ np.array([0.07, 0.07, 0.5, 1.0, 2.0, 0.01]))  # noqa: E731
    space = load_space("mnasnet")
    archs = [space.sample(i) for i in range(12)]
    path = tmp_path / "phone.csv"
    (tmp_path / "a.txt").write_text(archs[0].to_text())
    rows = [(f'"{" ".join(a.block_strings)}"', 224, 1.0, truth(a)) for a in archs[1:]]
    rows.append((str(tmp_path / "a.txt"), 224, 1.0, truth(archs[0])))
    rows.append(("mnasnet-a1", 192, 0.75, truth(A1.replace(resolution=192, depth_multiplier=0.75))))
    _write_csv(path, rows)
    out = tmp_path / "phone.json"
    assert cli.main(["latency", "calibrate", str(path), "-o", str(out), "--name", "myphone"]) == 0
    assert "myphone from 13 measurements" in capsys.readouterr().out
    model = get_latency_model(f"calibrated:{out}")
    assert model.name == "myphone"
    probe = space.sample(99)
    assert model.latency_ms(probe) == pytest.approx(truth(probe), rel=0.02)
    assert cli.main(["latency", "mnasnet-a1", "--backend", f"calibrated:{out}", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "myphone" and data["latency_ms"] == pytest.approx(truth(A1), rel=0.02)


@pytest.mark.parametrize("text, message", [
    ("arch,resolution,ms\nmnasnet-a1,224\n", "2 fields"),
    ("arch,resolution,ms\nmnasnet-a1,big,3\n", "invalid literal"),
    ("arch,resolution,ms\nmnasnet-a1,224,-3\n", "positive"),
    ("arch,resolution,speed\nmnasnet-a1,224,3\n", "latency column"),
    ("arch,resolution,ms\nnot-a-net,224,3\n", "unknown architecture 'not-a-net'"),
])
def test_calibrate_rejects_malformed_csv(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_measurements(str(path))
    done = subprocess.run([sys.executable, "launch.py", "latency", "calibrate", str(path), "-o",
                           str(tmp_path / "o.json")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "bad.csv" in done.stderr


def test_lut_build_with_a_fake_measurer_and_predict_the_sum(tmp_path):
    space = load_space("mnasnet")
    archs = [space.sample(i) for i in range(3)]
    calls = []

    def cost(key: LayerKey) -> float:
        return 0.001 * key.in_hw * key.out_filters + (0.5 if key.se_filters else 0.0)

    def fake_layers(keys) -> list[float]:
        calls.extend(keys)
        return [cost(key) for key in keys]

    fixed = 1.25
    whole = lambda a: fixed + sum(cost(LayerKey.of(row)) for row in profile(a))  # noqa: E731
    lut = build_lut(archs, fake_layers, measure_networks=lambda nets: [whole(a) for a in nets], resolution=96,
                    fixed_cost_archs=2, name="lut-fake")
    assert len(calls) == len(set(calls)) == len(layer_keys(archs, 96)) == len(lut.layers)
    assert lut.fixed_ms == pytest.approx(fixed)
    path = tmp_path / "t.json"
    lut.save(str(path))
    model = get_latency_model(f"lut:{path}")
    calls.clear()
    for arch in archs:
        expected = fixed + sum(cost(LayerKey.of(row)) for row in profile(arch, resolution=96))
        assert model.latency_ms(arch, resolution=96) == pytest.approx(expected)
    # Extending an existing table measures only the new layers.
    calls.clear()
    more = build_lut(archs + [space.sample(7)], fake_layers, existing=model, resolution=96)
    assert set(calls) == set(layer_keys([space.sample(7)], 96)) - set(model.layers)
    assert more.fixed_ms == pytest.approx(fixed)
    with pytest.raises(ValueError, match="not in the lookup table"):
        model.latency_ms(archs[0], resolution=128)
    for key in more.layers:
        assert LayerKey.parse(str(key)) == key


def test_lut_measures_its_layers_between_the_calibration_networks_passes():
    """With network_passes, the networks' measurer times its passes and calls `between` after each but the last:
    the layers are measured there, in parts, so the passes spread over the build; what it did not ask for (all
    of it when the networks came from a cache) is measured after, and the calibration sees every layer."""
    space = load_space("mnasnet")
    archs = [space.sample(60 + i).replace(resolution=96) for i in range(6)]
    events, keys = [], layer_keys(archs)

    def cost(key):
        return 0.01 * key.in_hw * key.out_filters / 16

    def layers(part) -> list[float]:
        events.append(("layers", len(part)))
        return [cost(key) for key in part]

    def whole(arch):
        return 1.2 * sum(cost(LayerKey.of(r)) for r in profile(arch)) + 0.3

    def in_passes(networks, between):
        for done in (1, 2):
            events.append(("pass", done))
            between(done)
        events.append(("pass", 3))
        return [whole(a) for a in networks]

    lut = build_lut(archs, layers, in_passes, fixed_cost_archs=5, network_passes=3)
    split = len(keys) // 2
    assert events == [("pass", 1), ("layers", split), ("pass", 2), ("layers", len(keys) - split), ("pass", 3)]
    assert len(lut.layers) == len(keys)
    assert (lut.scale, lut.weights_ms, lut.fixed_ms) == pytest.approx((1.2, 0.0, 0.3), abs=1e-6)
    events.clear()
    cached = build_lut(archs, layers, lambda networks, between: [whole(a) for a in networks], fixed_cost_archs=5,
                       network_passes=3)
    assert events == [("layers", split), ("layers", len(keys) - split)] and len(cached.layers) == len(keys)
    assert cached.predict(archs) == pytest.approx(lut.predict(archs))


def test_lut_calibration_fits_scale_weights_and_fixed_cost_from_five_networks(tmp_path):
    """Whole networks that cost 1.1x their layers, 0.2 ms per million weights and 0.5 ms more: recovered."""
    space = load_space("mnasnet")
    archs = [space.sample(40 + i).replace(resolution=96) for i in range(8)]

    def cost(keys) -> list[float]:
        return [0.002 * key.in_hw * key.out_filters / 16 + 0.01 * key.kernel for key in keys]

    def whole(arch):
        rows = profile(arch)
        return 1.1 * sum(cost([LayerKey.of(r) for r in rows])) + 0.2 * sum(r.params for r in rows) * 1e-6 + 0.5

    lut = build_lut(archs, cost, measure_networks=lambda nets: [whole(a) for a in nets], fixed_cost_archs=6,
                    name="lut-fake")
    assert (lut.scale, lut.weights_ms, lut.fixed_ms) == pytest.approx((1.1, 0.2, 0.5))
    assert lut.predict(archs[6:]) == pytest.approx([whole(a) for a in archs[6:]])     # networks it did not see
    assert lut.meta["calibration"]["networks"] == 6 and lut.meta["calibration"]["fit_mape_percent"] < 1e-6
    path = tmp_path / "t.json"
    lut.save(str(path))
    again = LookupTable.load(str(path))
    assert (again.scale, again.weights_ms, again.fixed_ms) == pytest.approx((1.1, 0.2, 0.5))
    # below five networks only the fixed cost moves (the median gap), as in ProxylessNAS' tables
    few = build_lut(archs, cost, measure_networks=lambda nets: [whole(a) for a in nets], fixed_cost_archs=3)
    assert (few.scale, few.weights_ms) == (1.0, 0.0)
    gaps = [whole(a) - few.layer_sum(a) for a in archs[:3]]
    assert few.fixed_ms == pytest.approx(sorted(gaps)[1])
    # a table file from before the calibration terms reads as the plain sum plus its fixed cost
    data = json.loads(path.read_text())
    del data["scale"], data["weights_ms"]
    path.write_text(json.dumps(data))
    old = LookupTable.load(str(path))
    assert old.predict([archs[0]]) == pytest.approx([0.5 + old.layer_sum(archs[0])])
    with pytest.raises(ValueError, match="positive measurements"):
        lut.calibrate(archs[:2], [1.0])


def run_cli(*argv, env=None):
    return subprocess.run([sys.executable, "launch.py", *argv], capture_output=True, text=True, cwd=ROOT,
                          env=env)


def test_cli_predict_and_errors(tmp_path):
    done = run_cli("latency", "mnasnet-a1", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["source"] == "pixel1-predicted" and data["resolution"] == 224 and 70 < data["latency_ms"] < 86
    low, high = data["uncertainty"]["interval_ms"]
    assert low < data["latency_ms"] < high and data["uncertainty"]["extrapolating"] is False
    done = run_cli("latency", "mobilenetv2", "--resolution", "96", "--depth-multiplier", "0.35", "--json")
    assert json.loads(done.stdout)["uncertainty"]["extrapolating"] is True
    done = run_cli("latency", "predict", "mnasnet-small", "--resolution", "160", "--depth-multiplier", "0.5")
    assert done.returncode == 0 and "pixel1-predicted" in done.stdout
    for argv, needle in [(("latency", "mnasnet-a1", "--backend", "gpu9"), "unknown latency backend 'gpu9'"),
                         (("latency", "mnasnet-a1", "--backend", f"lut:{tmp_path}/none.json"), "no such file"),
                         (("latency", "no-such-net"), "unknown architecture"),
                         (("latency", "mnasnet-a1", "--resolution", "0"), "resolution"),
                         (("latency", "build-lut", "-o", str(tmp_path / "x.json")), "nothing to measure")]:
        done = run_cli(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and needle in done.stderr, done.stderr
    assert "build-lut" in run_cli("latency", "--help").stdout


def test_channel_tile_counts_convolutions_in_whole_tiles():
    # A 1x1 expansion to 24 channels computes 32 on a 16-wide kernel; 32 and 64 channels fill their tiles.
    arch = Architecture.from_strings(["r1_k3_s11_e1_i16_o16", "r1_k3_s22_e3_i16_o24", "r1_k3_s11_e2_i24_o32"],
                                     stem_filters=16, head_filters=64, resolution=32)
    rows = profile(arch, 10)
    from mnas.search.latency.features import FEATURES, layer_features

    pointwise, depthwise = FEATURES.index("pointwise_madds"), FEATURES.index("depthwise_madds")
    block = rows[2]                     # i16 -> e3 (48) -> o24, at 32 -> 16 pixels
    assert (block.expand_filters, block.out_filters) == (48, 24)
    one, sixteen = layer_features(block, 1), layer_features(block, 16)
    hi, ho = block.in_hw ** 2, block.out_hw ** 2
    assert one[pointwise] == pytest.approx((hi * 16 * 48 + ho * 48 * 24) * 1e-6)
    assert sixteen[pointwise] == pytest.approx((hi * 16 * 48 + ho * 48 * 32) * 1e-6)   # 24 -> 32
    assert sixteen[depthwise] == one[depthwise]                                        # 48 fills 3 tiles
    assert layer_features(rows[3], 16)[pointwise] == layer_features(rows[3], 1)[pointwise]  # 48 -> 32
    for field in ("activations", "weights", "ops"):     # only computed multiply-adds change
        assert sixteen[FEATURES.index(field)] == one[FEATURES.index(field)]
    # the memoised features equal the straight sum over the profile, at every tile
    space = load_space("mnasnet")
    for seed in range(20):
        sample = space.sample(seed)
        for tile in (1, 16, 32):
            np.testing.assert_allclose(arch_features(sample, tile=tile), reference_features(sample, tile=tile))
    with pytest.raises(ValueError, match="channel tile"):
        arch_features(A1, tile=0)


def test_calibration_recovers_a_devices_channel_tile(tmp_path):
    from mnas.search.latency.features import feature_matrix
    from mnas.search.latency.predictor import choose_tile

    space = load_space("mnasnet")
    archs = [space.sample(100 + i) for i in range(16)]
    truth = np.array([0.02, 0.02, 0.03, 0.05, 0.1, 0.002])   # a device whose kernels work 16 channels at a time
    y = feature_matrix(archs, tile=16) @ truth + 0.3
    tile, errors = choose_tile(archs, y)
    assert tile == 16 and errors[16] < 1e-6 < min(e for t, e in errors.items() if t != 16)
    predictor = calibrate(archs, y, name="tiled")
    assert predictor.tile == 16 and predictor.meta["loo_mape_percent"] < 1e-3
    assert calibrate(archs[:6], y[:6], name="few").tile == 1         # too few measurements to choose
    assert calibrate(archs, y, name="fixed", tile=8).tile == 8
    # the tile is part of the file, and a bad one names the file
    path = tmp_path / "device.json"
    predictor.save(str(path))
    again = CalibratedPredictor.load(str(path))
    assert again.tile == 16 and again.predict(archs[:3]) == pytest.approx(predictor.predict(archs[:3]))
    data = json.loads(path.read_text())
    data["channel_tile"] = "sixteen"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"device\.json.*channel tile"):
        CalibratedPredictor.load(str(path))


def test_transfer_calibration_from_a_few_measurements(tmp_path, capsys):
    # a new phone that is "a Pixel 1, 1.4x slower, plus 2 ms", plus a second known device it is not like
    from mnas.search.latency import TransferPredictor

    pixel1 = get_latency_model("pixel1")
    other = CalibratedPredictor([0.0, 0.0, 0.9, 0.0, 3.0, 0.0], 1.0, name="other-phone")
    other_file = tmp_path / "other.json"
    other.save(str(other_file))
    space = load_space("mnasnet")
    archs = [space.sample(300 + i) for i in range(6)]
    truth = lambda a: 2.0 + 1.4 * pixel1.latency_ms(a)  # noqa: E731
    _write_csv(tmp_path / "new.csv", [(f'"{" ".join(a.block_strings)}"', a.resolution, 1.0, truth(a)) for a in archs])
    out = tmp_path / "new.json"
    assert cli.main(["latency", "calibrate", str(tmp_path / "new.csv"), "-o", str(out), "--prior", "pixel1",
                        "--prior", str(other_file), "--name", "newphone"]) == 0
    printed = capsys.readouterr().out
    assert "pixel1-predicted x1.400" in printed and "other-phone x0.000" in printed, printed
    model = get_latency_model(f"calibrated:{out}")
    assert isinstance(model, TransferPredictor) and model.name == "newphone"
    assert model.weights == pytest.approx([1.4, 0.0], abs=1e-6) and model.intercept == pytest.approx(2.0, abs=1e-4)
    assert model.meta["loo_mape_percent"] < 1e-3 < model.meta["features_loo_mape_percent"]
    probes = [space.sample(900 + i) for i in range(5)] + [A1.replace(resolution=160)]
    assert model.predict(probes) == pytest.approx([truth(a) for a in probes], rel=1e-5)
    assert model.predict(probes[:2], resolution=192) == pytest.approx(
        [truth(a.replace(resolution=192)) for a in probes[:2]], rel=1e-5)
    # sources travel inside the file; a transfer predictor can itself be a prior
    again = TransferPredictor.fit([model], archs, [2 * truth(a) for a in archs], name="twice")
    assert again.latency_ms(A1) == pytest.approx(2 * truth(A1), rel=1e-4)
    assert cli.main(["latency", "mnasnet-a1", "--backend", f"calibrated:{out}", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["kind"] == "transfer predictor" and data["latency_ms"] == pytest.approx(truth(A1), rel=1e-5)


def test_transfer_rejects_bad_priors_and_files(tmp_path):
    from mnas.search.latency import TransferPredictor, load_predictor
    from mnas.search.latency.predictor import fit_linear

    with pytest.raises(ValueError, match="one weight per source"):
        TransferPredictor([get_latency_model("pixel1")], [1.0, 2.0])
    with pytest.raises(ValueError, match="calibrated predictors"):
        TransferPredictor([LookupTable({}, name="t")], [1.0])
    with pytest.raises(ValueError, match="tied features need the 6 columns"):
        fit_linear(np.ones((3, 2)), np.ones(3))
    path = tmp_path / "t.json"
    TransferPredictor([get_latency_model("pixel1")], [1.0], 0.5, name="t").save(str(path))
    data = json.loads(path.read_text())
    data["sources"][0]["coef"] = [1.0]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"t\.json, source 1: malformed latency predictor"):
        load_predictor(str(path))
    _write_csv(tmp_path / "m.csv", [("mnasnet-a1", 224, 1.0, 80.0), ("mnasnet-a1", 192, 1.0, 60.0)])
    done = subprocess.run([sys.executable, "launch.py", "latency", "calibrate", str(tmp_path / "m.csv"), "-o",
                           str(tmp_path / "o.json"), "--prior", str(tmp_path / "none.json")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "none.json" in done.stderr and not (tmp_path / "o.json").exists()


def test_a_table_is_never_extended_with_another_devices_layers(tmp_path):
    from mnas.measure.host import HostTFLite, cpu_model
    from mnas.search.latency.lut import same_device

    here = HostTFLite(cache_dir=None).settings()
    assert here["cpu"] == cpu_model() and here["cpu"]
    archs = [load_space("mnasnet").sample(i) for i in range(2)]
    cost = lambda keys: [0.01 * key.kernel for key in keys]  # noqa: E731
    table = build_lut(archs[:1], cost, backend=here)
    more = build_lut(archs, cost, backend=here | {"runs": 99, "versions": {"tensorflow": "9"}}, existing=table)
    assert len(more.layers) > len(table.layers)           # the timing protocol may differ; the device may not
    elsewhere = here | {"cpu": "Some Other CPU"}
    assert not same_device(here, elsewhere) and same_device(here, None)
    with pytest.raises(ValueError, match="Some Other CPU.*another --output"):
        build_lut(archs, cost, backend=here, existing=LookupTable(table.layers, backend=elsewhere))
