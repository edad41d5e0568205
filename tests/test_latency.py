"""search.latency without TensorFlow: the interface, the Pixel 1 preset, features, calibration, lookup tables, CLI."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import launch
from search.latency import BACKENDS, CalibratedPredictor, LookupTable, get_latency_model
from search.latency.calibrate import calibrate, read_measurements, training_data
from search.latency.features import arch_features, reference_features
from search.latency.lut import LayerKey, build_lut, layer_keys
from search.latency.predictor import fit_linear, leave_one_out, nnls
from search.counts import profile
from search.registry import ARCHITECTURES, load_space
from search.space import Architecture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A1 = ARCHITECTURES["mnasnet-a1"]


def test_import_needs_no_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
            "sys.modules['ai_edge_litert'] = None; import search.latency as L; from search.registry import "
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
    start = time.perf_counter()
    out = model.predict(archs)
    rate = len(archs) / (time.perf_counter() - start)
    assert len(out) == len(archs) and all(v > 0 for v in out)
    assert rate >= 10_000, f"{rate:.0f} architectures/s"


def test_pixel1_preset_on_the_seed_rows():
    model = get_latency_model("pixel1")
    archs, values = read_measurements(os.path.join(ROOT, "..", "shared", "reference", "mnasnet_a1_pixel1.csv"),
                                      arch="mnasnet-a1") if os.path.exists(
        os.path.join(ROOT, "..", "shared", "reference", "mnasnet_a1_pixel1.csv")) else training_data(model)
    assert len(values) == 25
    y = np.array(values)
    predicted = np.array(model.predict(archs))
    assert np.mean(np.abs(predicted / y - 1)) < 0.035
    x = np.vstack([arch_features(a) for a in archs])
    loo = leave_one_out(x, y)
    assert np.mean(np.abs(loo / y - 1)) <= 0.04
    # The preset file is exactly the fit of its own training rows.
    refit = calibrate(*training_data(model), name="again")
    np.testing.assert_allclose(refit.coef, model.coef, rtol=1e-6, atol=1e-9)
    # Held-out published Pixel 1 figures (MnasNet paper, Table 1): within 10%.
    assert model.latency_ms(ARCHITECTURES["mobilenetv2"]) == pytest.approx(75, rel=0.10)
    assert model.latency_ms(ARCHITECTURES["mnasnet-small"]) == pytest.approx(23.2, rel=0.10)


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
    assert launch.main(["latency", "calibrate", str(path), "-o", str(out), "--name", "myphone"]) == 0
    assert "myphone from 13 measurements" in capsys.readouterr().out
    model = get_latency_model(f"calibrated:{out}")
    assert model.name == "myphone"
    probe = space.sample(99)
    assert model.latency_ms(probe) == pytest.approx(truth(probe), rel=0.02)
    assert launch.main(["latency", "mnasnet-a1", "--backend", f"calibrated:{out}", "--json"]) == 0
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

    def fake_layer(key: LayerKey) -> float:
        calls.append(key)
        return cost(key)

    fixed = 1.25
    whole = lambda a: fixed + sum(cost(LayerKey.of(row)) for row in profile(a))  # noqa: E731
    lut = build_lut(archs, fake_layer, measure_arch=whole, resolution=96, fixed_cost_archs=2, name="lut-fake")
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
    more = build_lut(archs + [space.sample(7)], fake_layer, existing=model, resolution=96)
    assert set(calls) == set(layer_keys([space.sample(7)], 96)) - set(model.layers)
    assert more.fixed_ms == pytest.approx(fixed)
    with pytest.raises(ValueError, match="not in the lookup table"):
        model.latency_ms(archs[0], resolution=128)
    for key in more.layers:
        assert LayerKey.parse(str(key)) == key


def run_cli(*argv, env=None):
    return subprocess.run([sys.executable, "launch.py", *argv], capture_output=True, text=True, cwd=ROOT,
                          env=env)


def test_cli_predict_and_errors(tmp_path):
    done = run_cli("latency", "mnasnet-a1", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["source"] == "pixel1-predicted" and data["resolution"] == 224 and 70 < data["latency_ms"] < 86
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
