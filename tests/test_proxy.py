"""The proxy task: config validation, the proxy adaptation of an architecture, and training tiny children.

Training runs on small random IDX files written by the tests (labels are noise, so only the contract is checked,
not learning); the real dataset is never required.
"""

import math
import pickle

import pytest

from search.registry import ARCHITECTURES
from search.space import Architecture
from workers import proxy as proxy_mod
from workers.proxy import ChildFailed, ProxyConfig, proxy_architecture, train_child

TINY_ARCH = Architecture.from_strings(["r1_k3_s11_e1_i32_o16_noskip", "r1_k3_s22_e3_i16_o24_se0.25"],
                                      stem_filters=16, head_filters=64)


@pytest.fixture(autouse=True)
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))


def tiny_config(data_dir, **changes):
    fields = dict(data_dir=data_dir, train_subset=512, heldout=256, epochs=1, batch_size=32, width=0.5,
                  strides_removed=1)
    fields.update(changes)
    return ProxyConfig(**fields)


# ---- config


def test_config_round_trips_and_rejects_unknown_keys():
    config = ProxyConfig(epochs=2, seed=7)
    assert ProxyConfig.from_dict(config.to_dict()) == config
    assert ProxyConfig.from_dict(None) == ProxyConfig()
    with pytest.raises(ValueError, match="unknown key.*'epoch'"):
        ProxyConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize("changes, message", [
    ({"dataset": "mnist-9"}, "unknown dataset 'mnist-9'"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"steps": -1}, "steps must be"),
    ({"batch_size": 20000}, "exceeds train_subset"),
    ({"optimizer": "lamb"}, "unknown optimizer 'lamb'"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"width": 0}, "width"),
    ({"strides_removed": -1}, "strides_removed"),
    ({"bn_momentum": 1.0}, "bn_momentum"),
    ({"threads": True}, "threads"),
])
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        ProxyConfig(**changes)


def test_every_field_is_documented():
    source = open(proxy_mod.__file__, encoding="utf-8").read()
    for name in ProxyConfig().to_dict():
        assert f'    {name}: ' in source
        block = source.split(f"    {name}: ", 1)[1].split("\n", 2)[1]
        assert block.strip().startswith('"""'), f"ProxyConfig.{name} has no docstring"


# ---- proxy architecture


def test_strides_removed_stem_first_then_blocks_in_order():
    a1 = ARCHITECTURES["mnasnet-a1"]
    before = [b.strides for b in a1.blocks]
    two = proxy_architecture(a1, ProxyConfig(strides_removed=2, width=0.5, image_size=32))
    assert two.stem_stride == 1
    assert [b.strides for b in two.blocks] == [(1, 1), (1, 1), (2, 2), (2, 2), (1, 1), (2, 2), (1, 1)]
    assert two.resolution == 32 and two.depth_multiplier == 0.5
    assert two is not a1 and [b.strides for b in a1.blocks] == before and a1.stem_stride == 2  # original intact
    assert [b.kernel for b in two.blocks] == [b.kernel for b in a1.blocks]
    four = proxy_architecture(a1, ProxyConfig(strides_removed=4))
    assert [b.stride for b in four.blocks] == [1, 1, 1, 1, 1, 2, 1]
    everything = proxy_architecture(a1, ProxyConfig(strides_removed=99))
    assert everything.stem_stride == 1 and all(b.stride == 1 for b in everything.blocks)
    assert proxy_architecture(a1, ProxyConfig(strides_removed=0, width=1.0, image_size=224)) == a1


def test_width_multiplies_the_architectures_own_multiplier():
    narrow = ARCHITECTURES["mobilenetv2"].replace(depth_multiplier=0.75)
    adapted = proxy_architecture(narrow, ProxyConfig(width=0.5))
    assert adapted.depth_multiplier == pytest.approx(0.375)
    assert adapted.scaled_blocks()[-1].output_filters < narrow.scaled_blocks()[-1].output_filters


# ---- training


def test_train_child_contract_and_determinism(tiny_data):
    config = tiny_config(tiny_data)
    result = train_child(TINY_ARCH, config)
    assert 0.0 <= result.accuracy <= 1.0
    assert result.steps == 512 // 32 and result.epochs == pytest.approx(1.0)
    for name in ("train_seconds", "eval_seconds", "build_seconds", "images_per_second", "cpu_seconds"):
        assert getattr(result, name) > 0, name
    assert math.isfinite(result.final_loss) and math.isfinite(result.heldout_loss)
    assert result.proxy_params > 0 and result.proxy_arch[1] == "r1_k3_s22_e3_i16_o24_se0.25"
    as_dict = result.to_dict()
    assert {"accuracy", "train_seconds", "eval_seconds", "steps", "epochs", "final_loss", "proxy_params",
            "images_per_second"} <= set(as_dict)
    again = train_child(TINY_ARCH, config.replace(steps=16))
    assert (again.accuracy, again.final_loss) == (result.accuracy, result.final_loss)  # same seed, same run
    other = train_child(TINY_ARCH, config.replace(steps=5, seed=3))
    assert other.steps == 5 and other.final_loss != result.final_loss


@pytest.mark.parametrize("optimizer, learning_rate", [("sgd", 1e12), ("rmsprop", 1e30)])
def test_nan_loss_is_a_child_failure(tiny_data, optimizer, learning_rate):
    with pytest.raises(ChildFailed) as caught:
        train_child(TINY_ARCH, tiny_config(tiny_data, optimizer=optimizer, learning_rate=learning_rate))
    assert caught.value.reason == "nan_loss" and "step" in caught.value.message


def test_build_errors_and_missing_data_are_child_failures(tiny_data, monkeypatch, tmp_path):
    with pytest.raises(ChildFailed) as caught:
        train_child(TINY_ARCH, tiny_config(str(tmp_path / "absent")))
    assert caught.value.reason == "data_error" and "apt-get install dataset-fashion-mnist" in caught.value.message

    import trainer.builder

    def broken(*args, **kwargs):
        raise TypeError("no such layer")

    monkeypatch.setattr(trainer.builder, "build_model", broken)
    with pytest.raises(ChildFailed) as caught:
        train_child(TINY_ARCH, tiny_config(tiny_data))
    assert caught.value.reason == "build_error" and "no such layer" in caught.value.message


def test_config_asking_for_too_many_images_is_a_config_error(tiny_data):
    with pytest.raises(ValueError, match="exceed the 800 training images"):
        train_child(TINY_ARCH, tiny_config(tiny_data, train_subset=600, heldout=300))


def test_child_failed_survives_pickling_and_rejects_unknown_codes():
    copy = pickle.loads(pickle.dumps(ChildFailed("oom", "12 GiB")))
    assert (copy.reason, copy.message) == ("oom", "12 GiB")
    with pytest.raises(ValueError, match="unknown failure reason 'tired'"):
        ChildFailed("tired")


def test_importing_the_worker_does_not_import_tensorflow(python):
    import subprocess

    code = "import sys; import workers.proxy; print('tensorflow' in sys.modules)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                         cwd=proxy_mod.__file__.rsplit("/workers/", 1)[0])
    assert out.stdout.strip() == "False"
