"""The proxy task: config validation, the proxy adaptation of an architecture, and training tiny children.

Training runs on small random IDX files written by the tests (labels are noise, so only the contract is checked,
not learning); the real dataset is never required.
"""

import collections
import math
import os
import pickle
import random

import numpy as np
import pytest

from mnas.search.failures import ChildFailed, Failure, split_reason
from mnas.search.registry import ARCHITECTURES, load_space
from mnas.search.arch import Architecture, round_filters
from mnas.search import proxy as proxy_task
from mnas.search.proxy import ProxyConfig, blind_spots, model_signature, proxy_architecture
from mnas.workers.proxy import ProxyTraining, check_proxy_data, proxy_data, split_indices, train_child
from tiny_datasets import png, write_imagenet_shards, write_npz, write_png_folder

TINY_ARCH = Architecture.from_strings(["r1_k3_s11_e1_i32_o16_noskip", "r1_k3_s22_e3_i16_o24_se0.25"],
                                      stem_filters=16, head_filters=64)


@pytest.fixture(autouse=True)
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))


def tiny_config(data_dir, **changes):
    fields = dict(data_dir=data_dir, train_subset=512, heldout=256, epochs=1, batch_size=32, width=0.5,
                  strides_removed=1, filter_divisor=8)
    fields.update(changes)
    return ProxyConfig(**fields)


# ---- config


def test_config_round_trips_and_rejects_unknown_keys():
    config = ProxyConfig(epochs=2, seed=7)
    assert ProxyConfig.from_dict(config.to_dict()) == config
    assert ProxyConfig.from_dict(None) == ProxyConfig()
    with pytest.raises(ValueError, match=r"^proxy config: unknown setting\(s\) epoch \(known: dataset, data_dir, "):
        ProxyConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize("changes, message", [
    ({"dataset": 9}, "dataset must be a name"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"steps": -1}, "steps must be"),
    ({"batch_size": 30000}, "exceeds train_subset"),
    ({"optimizer": "lamb"}, "optimizer must be one of adam, rmsprop, sgd, got 'lamb'"),
    ({"learning_rate": float("nan")}, "learning_rate must be a positive number, got nan"),
    ({"width": 0}, "width must be a positive number, got 0"),
    ({"strides_removed": -1}, "strides_removed"),
    ({"bn_momentum": 1.0}, r"bn_momentum must be in \[0, 1\), got 1.0"),
    ({"threads": True}, "threads must be a positive integer, got True"),
    ({"steps": 0}, "steps must be a positive integer or null, got 0"),
    ({"weight_decay": -1e-4}, "weight_decay must be a finite number >= 0"),
    ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ({"batch_size": 64, "train_subset": 32}, "batch_size 64 exceeds train_subset 32"),
    ({"split": "shuffled"}, "split must be one of random, file-order, got 'shuffled'"),
    ({"split_seed": 1.5}, "split_seed must be an integer, got 1.5"),
    ({"num_classes": 0}, "num_classes must be a positive integer or null, got 0"),
])
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        ProxyConfig(**changes)


def test_every_field_is_documented():
    source = open(proxy_task.__file__, encoding="utf-8").read()
    for name in ProxyConfig().to_dict():
        assert f'    {name}: ' in source
        block = source.split(f"    {name}: ", 1)[1].split("\n", 2)[1]
        assert block.strip().startswith('"""'), f"ProxyConfig.{name} has no docstring"


# ---- proxy architecture


def test_strides_removed_by_count_stem_first_then_blocks_in_order():
    a1 = ARCHITECTURES["mnasnet-a1"]
    before = [b.strides for b in a1.blocks]
    two = proxy_architecture(a1, ProxyConfig(strides_removed=2, width=0.5, image_size=32))
    assert two.stem_stride == 1
    assert [b.strides for b in two.blocks] == [(1, 1), (1, 1), (2, 2), (2, 2), (1, 1), (2, 2), (1, 1)]
    assert two.resolution == 32 and two.depth_multiplier == 1.0
    assert two is not a1 and [b.strides for b in a1.blocks] == before and a1.stem_stride == 2  # original intact
    assert [b.kernel for b in two.blocks] == [b.kernel for b in a1.blocks]
    four = proxy_architecture(a1, ProxyConfig(strides_removed=4))
    assert [b.stride for b in four.blocks] == [1, 1, 1, 1, 1, 2, 1]
    everything = proxy_architecture(a1, ProxyConfig(strides_removed=99))
    assert everything.stem_stride == 1 and all(b.stride == 1 for b in everything.blocks)
    assert proxy_architecture(a1, ProxyConfig(strides_removed=0, width=1.0, image_size=224)) == a1


def test_strides_removed_by_name():
    a1 = ARCHITECTURES["mnasnet-a1"]
    default = proxy_architecture(a1, ProxyConfig())
    assert ProxyConfig().strides_removed == ("stem", "b6")
    assert default.stem_stride == 1
    assert [b.stride for b in default.blocks] == [1, 2, 2, 2, 1, 1, 1]
    # a name for a layer that has stride 1 already is harmless; a block that does not exist is not
    assert proxy_architecture(a1, ProxyConfig(strides_removed=["b5"])) .blocks == \
        proxy_architecture(a1, ProxyConfig(strides_removed=[])).blocks
    assert proxy_architecture(a1, ProxyConfig(strides_removed=["stem", "b9"])) == \
        proxy_architecture(a1, ProxyConfig(strides_removed=["stem"]))
    with pytest.raises(ValueError, match="names 'b9' but the architecture has 7 blocks"):
        blind_spots(load_space("mnasnet"), ProxyConfig(strides_removed=["b9"]))
    assert ProxyConfig.from_dict({"strides_removed": ["stem", "b6"]}).strides_removed == ("stem", "b6")


@pytest.mark.parametrize("value, message", [
    (["stem", "block4"], "bad layer 'block4'"), (["b0"], "bad layer 'b0'"), ("stem", "a number or a list"),
    (["b4", "b4"], "names a layer twice"), (-2, ">= 0"),
])
def test_strides_removed_rejects_bad_names(value, message):
    with pytest.raises(ValueError, match=message):
        ProxyConfig(strides_removed=value)


@pytest.mark.parametrize("skip, first, rest", [
    ("identity", "noskip", ""),            # stride 2: no identity; at stride 1 it would add one
    ("pool", "poolskip", None),            # pooled at stride 2, identity at stride 1: poolskip says both
    ("none", "noskip", None),
])
def test_an_unstrided_layer_keeps_the_shortcut_it_has_at_its_stride(skip, first, rest):
    flag = {"identity": "", "pool": "_poolskip", "none": "_noskip"}[skip]
    arch = Architecture.from_strings(["r1_k3_s11_e1_i32_o16", f"r3_k3_s22_e6_i16_o16{flag}"])
    adapted = proxy_architecture(arch, ProxyConfig(strides_removed=["b2"], width=1.0))
    strings = adapted.block_strings[1:]
    if rest is None:    # no split needed: the same block at stride 1
        assert strings == (f"r3_k3_s11_e6_i16_o16{flag}",)
    else:
        assert strings == (f"r1_k3_s11_e6_i16_o16_{first}", f"r2_k3_s11_e6_i16_o16{rest}")
    # filters that differ never get an identity: a stride-removed block needs no split
    wide = Architecture.from_strings(["r1_k3_s11_e1_i32_o16", "r3_k3_s22_e6_i16_o24"])
    assert proxy_architecture(wide, ProxyConfig(strides_removed=["b2"], width=1.0)).block_strings[1:] == \
        ("r3_k3_s11_e6_i16_o24",)


def test_width_scales_the_deployment_filters_and_keeps_them_distinct():
    a1 = ARCHITECTURES["mnasnet-a1"]
    adapted = proxy_architecture(a1, ProxyConfig())
    # the deployment filters are multiples of 8; width 0.5 with divisor 4 halves them exactly
    assert [b.output_filters for b in adapted.blocks] == [b.output_filters // 2 for b in a1.blocks]
    assert adapted.stem_filters == 16 and adapted.scaled_stem() == 16 and adapted.head_filters == 1280
    assert adapted.scaled_blocks() == adapted.blocks  # what the block strings say is what is trained
    official = proxy_architecture(a1, ProxyConfig(filter_divisor=8))
    assert [b.output_filters for b in official.blocks] == [8, 16, 24, 40, 56, 80, 160]
    narrow = ARCHITECTURES["mobilenetv2"].replace(depth_multiplier=0.75)
    scaled = proxy_architecture(narrow, ProxyConfig(width=0.5))
    assert [b.output_filters for b in scaled.blocks] == [
        round_filters(b.output_filters, 0.5, 4) for b in narrow.scaled_blocks()]


def test_default_proxy_has_no_blind_spots_and_the_old_one_had_three():
    space = load_space("mnasnet")
    assert blind_spots(space, ProxyConfig()) == []
    old = blind_spots(space, ProxyConfig(strides_removed=1, filter_divisor=8))
    assert old == ["block 2 filters: 24 and 32 all train as 16 at proxy width 0.5",
                   "block 3 filters: 24 and 32 all train as 16 at proxy width 0.5",
                   "block 7 kernel: 3 and 5 act alike on its 2x2 proxy map"]


@pytest.mark.parametrize("space_name", ["mnasnet", "mnasnet-a1", "mnasnet-small"])
def test_every_decision_that_changes_the_deployment_model_changes_the_proxy_model(space_name):
    """Changes each decision of random children to each other option: whenever the deployment model changes,
    the proxy model must change too. Genotypes that decode to the same deployment model (a 1-layer block's
    -1 layer offset, filter multipliers that round alike, a skip where no shortcut can apply) are the space's own
    aliases and are not the proxy's concern; the test also counts that each decision was seen to matter."""
    space, proxy = load_space(space_name), ProxyConfig()
    rng = random.Random(0)
    seen = collections.Counter()
    for _ in range(40):
        base = space.sample_indices(rng)
        base_deploy, base_proxy = _signatures(space, base, proxy)
        for position, decision in enumerate(space.decisions):
            for option in range(len(decision.options)):
                if option == base[position]:
                    continue
                changed = list(base)
                changed[position] = option
                deploy, proxied = _signatures(space, changed, proxy)
                if deploy != base_deploy:
                    assert proxied != base_proxy, f"{decision} {decision.options[base[position]]!r} -> " \
                                                  f"{decision.options[option]!r} is invisible to the proxy"
                    seen[position] += 1
    # every decision changed the deployment model somewhere (so the assertion above was exercised for it)
    assert sorted(seen) == list(range(len(space.decisions)))
    if space_name == "mnasnet":   # and the old proxy fails this very check
        old = ProxyConfig(strides_removed=1, filter_divisor=8)
        base = space.sample_indices(random.Random(1))
        position = next(i for i, d in enumerate(space.decisions) if (d.block, d.name) == (6, "kernel"))
        other = list(base)
        other[position] = 1 - base[position]
        assert _signatures(space, base, old)[1] == _signatures(space, other, old)[1]


def _signatures(space, indices, proxy):
    arch = space.decode(indices)
    return model_signature(arch), model_signature(proxy_architecture(arch, proxy), input_channels=1)


def test_model_signature_folds_kernels_that_see_the_whole_map():
    arch = Architecture.from_strings(["r1_k3_s11_e1_i32_o16", "r1_k3_s22_e6_i16_o24"], resolution=4, stem_stride=1)
    wide = arch.replace(blocks=(arch.blocks[0], arch.blocks[1].replace(kernel=5)))
    assert model_signature(arch) != model_signature(wide)   # 4x4 map: a 5x5 kernel reaches 2 pixels away
    assert model_signature(arch.replace(resolution=2)) == model_signature(wide.replace(resolution=2))


# ---- training


def test_train_child_contract_and_determinism(tiny_data):
    config = tiny_config(tiny_data)
    result = train_child(TINY_ARCH, config)
    assert 0.0 <= result.accuracy <= 1.0
    assert result.steps == 512 // 32 and result.epochs == pytest.approx(1.0)
    for name in ("train_seconds", "eval_seconds", "build_seconds", "images_per_second", "cpu_seconds"):
        assert getattr(result, name) > 0, name
    assert math.isfinite(result.final_loss) and math.isfinite(result.heldout_loss)
    assert result.proxy_params > 0 and result.proxy_arch[1] == "r1_k3_s22_e3_i8_o16_se0.25"  # trained: half width
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
    assert caught.value.code == Failure.NAN_LOSS and "step" in caught.value.message


def test_build_errors_and_missing_data_are_child_failures(tiny_data, monkeypatch, tmp_path):
    with pytest.raises(ChildFailed) as caught:
        train_child(TINY_ARCH, tiny_config(str(tmp_path / "absent")))
    assert caught.value.code == Failure.DATA_ERROR and "apt-get install dataset-fashion-mnist" in caught.value.message

    from mnas.trainer import builder

    def broken(*args, **kwargs):
        raise TypeError("no such layer")

    monkeypatch.setattr(builder, "build_model", broken)
    with pytest.raises(ChildFailed) as caught:
        train_child(TINY_ARCH, tiny_config(tiny_data))
    assert caught.value.code == Failure.BUILD_ERROR and "no such layer" in caught.value.message


def test_config_asking_for_too_many_images_is_a_config_error(tiny_data):
    with pytest.raises(ValueError, match="exceed the 800 training images"):
        train_child(TINY_ARCH, tiny_config(tiny_data, train_subset=600, heldout=300))


def test_child_failed_survives_pickling_and_rejects_unknown_codes():
    copy = pickle.loads(pickle.dumps(ChildFailed(Failure.OOM, "12 GiB")))
    assert (copy.code, copy.message, str(copy)) == (Failure.OOM, "12 GiB", "oom: 12 GiB")
    assert ChildFailed("nan_loss").code is Failure.NAN_LOSS          # a code's value is accepted too
    with pytest.raises(ValueError, match="unknown failure code 'tired' \\(known: nan_loss, "):
        ChildFailed("tired")


@pytest.mark.parametrize("reason, code, detail", [
    ("nan_loss: training loss nan at step 3", "nan_loss", "training loss nan at step 3"),
    ("error: RuntimeError: boom (trial.py:12)", "unexpected_error", "RuntimeError: boom (trial.py:12)"),
    ("out of memory", "unexpected_error", "out of memory"),       # free text with no code keeps its whole text
    ("oom", "oom", ""),
    (None, None, None),
])
def test_a_free_text_reason_of_an_old_store_splits_into_code_and_detail(reason, code, detail):
    assert split_reason(reason) == (code, detail)


def test_importing_the_worker_does_not_import_tensorflow(python):
    import subprocess

    code = "import sys; import mnas.workers.proxy; print('tensorflow' in sys.modules)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                         cwd=proxy_task.__file__.rsplit("/search/", 1)[0])
    assert out.stdout.strip() == "False"


# ---- the data: a training subset and a held-out sample


def test_split_indices_random_and_file_order():
    train, held = split_indices(1000, 600, 100, "random", seed=0)
    assert len(train) == 600 and len(held) == 100 and not set(train) & set(held)
    assert sorted(held) != list(range(900, 1000))                      # not a slice in file order
    again_train, again_held = split_indices(1000, 300, 100, "random", seed=0)
    assert list(again_held) == list(held)                              # the sample does not depend on train_subset
    assert set(again_train) <= set(train) | set(range(1000)) - set(held)
    assert list(split_indices(1000, 600, 100, "random", seed=1)[1]) != list(held)
    assert split_indices(1000, 600, 100, "file-order") == (slice(0, 600), slice(900, 1000))
    with pytest.raises(ValueError, match="train_subset 950 \\+ heldout 100 exceed the 1000 training images"):
        split_indices(1000, 950, 100)


def test_file_order_keeps_the_old_slices_as_views_of_the_loaded_arrays(tiny_data):
    """The MNAS-Bench collection's children were trained on x[:train_subset] and scored on x[-heldout:]; the
    file-order split hands exactly those arrays (views, no copy) to the same pipeline calls."""
    from mnas.trainer.data import load_dataset

    arrays = load_dataset("fashion-mnist", tiny_data)
    with ProxyTraining(TINY_ARCH, tiny_config(tiny_data, split="file-order", steps=1)) as training:
        (x, y), (hx, hy) = training.train_data, training.held_data
        assert np.shares_memory(x, arrays.x_train) and np.shares_memory(hx, arrays.x_train)
        assert np.array_equal(x, arrays.x_train[:512]) and np.array_equal(y, arrays.y_train[:512])
        assert np.array_equal(hx, arrays.x_train[-256:]) and np.array_equal(hy, arrays.y_train[-256:])


def test_the_random_split_is_the_same_for_every_child_whatever_its_training_seed(tiny_data):
    first = proxy_data(tiny_config(tiny_data, seed=0))
    other_seed = proxy_data(tiny_config(tiny_data, seed=5))
    assert np.array_equal(first.heldout.images, other_seed.heldout.images)
    assert np.array_equal(first.train.labels, other_seed.train.labels)
    moved = proxy_data(tiny_config(tiny_data, split_seed=1))
    assert not np.array_equal(first.heldout.labels, moved.heldout.labels)


def test_a_class_ordered_file_is_refused_in_file_order_and_fine_at_random(tmp_path):
    path = write_npz(tmp_path / "sorted.npz", 800, classes=4)          # 200 images of class 0, then class 1, ...
    ordered = tiny_config(path, dataset="npz", split="file-order", image_size=8, heldout=200)
    with pytest.raises(ValueError, match=r"all 200 held-out images of npz \(.*sorted.npz\) are of class 3 only.*"
                                         "use split: random"):
        check_proxy_data(ordered)
    with pytest.raises(ChildFailed) as caught:
        train_child(TINY_ARCH, ordered)
    assert caught.value.code == Failure.DATA_ERROR and "of class 3 only" in caught.value.message
    summary = check_proxy_data(ordered.replace(split="random"))
    assert (summary.heldout_classes, summary.num_classes, summary.labels_read) == (4, 4, 200)
    assert "random split, seed 0; 4 classes" in summary.describe() and not summary.streamed


def test_labels_beyond_num_classes_are_refused_before_and_fail_the_child(tmp_path):
    path = write_npz(tmp_path / "ten.npz", 800, classes=10, sorted_by_class=False)
    config = tiny_config(path, dataset="npz", num_classes=6, image_size=8)
    with pytest.raises(ValueError, match="training label 9 does not fit 6 classes"):
        check_proxy_data(config)
    with pytest.raises(ChildFailed) as caught:
        train_child(TINY_ARCH, config)
    assert caught.value.code == Failure.DATA_ERROR and "does not fit 6 classes" in caught.value.message
    assert check_proxy_data(config.replace(num_classes=None)).num_classes == 10   # from the data


def test_a_child_trains_on_streamed_tfrecords_and_the_run_is_fixed_by_its_seed(tmp_path):
    root = write_imagenet_shards(tmp_path / "r", train=160, shards=3, classes=4)
    config = tiny_config(root, dataset="imagenet", num_classes=4, image_size=16, train_subset=96, heldout=48,
                         batch_size=16, epochs=2)
    summary = check_proxy_data(config)
    assert summary.streamed and (summary.images, summary.heldout_classes, summary.channels) == (160, 4, 3)
    result = train_child(TINY_ARCH, config)
    assert result.steps == 12 and result.epochs == pytest.approx(2.0) and 0 <= result.accuracy <= 1
    assert math.isfinite(result.final_loss) and math.isfinite(result.heldout_loss)
    again = train_child(TINY_ARCH, config)
    assert (again.accuracy, again.final_loss, again.heldout_loss) == \
        (result.accuracy, result.final_loss, result.heldout_loss)
    with ProxyTraining(TINY_ARCH, config) as training:
        training.train_to(4)
        assert 0 <= training.score(limit=10)[0] <= 1                  # a rung: the first 10 held-out records


def test_a_one_class_held_out_sample_inside_tfrecords_fails_the_child(tmp_path):
    root = write_imagenet_shards(tmp_path / "r", train=120, shards=2, classes=2, labels=[0] * 60 + [1] * 60)
    config = tiny_config(root, dataset="imagenet", num_classes=2, image_size=16, train_subset=48, heldout=32,
                         batch_size=16, split="file-order")
    with pytest.raises(ValueError, match="all 32 held-out images of imagenet .* are of class 1 only"):
        check_proxy_data(config)
    with pytest.raises(ChildFailed) as caught:       # labels live in the records: known once they were scored
        train_child(TINY_ARCH, config.replace(steps=1))
    assert caught.value.code == Failure.DATA_ERROR and "of class 1 only" in caught.value.message


def test_a_corrupt_image_in_a_folder_is_a_recorded_data_error(tmp_path):
    root = write_png_folder(tmp_path / "f", classes=2, per_class=40)
    config = tiny_config(root, dataset="folder", image_size=16, train_subset=32, heldout=16, batch_size=16)
    held = proxy_data(config).heldout
    with open(held.source.paths[held.indices[3]], "wb") as handle:
        handle.write(png(0, 0)[:40])                       # a PNG cut short: its header passes, its pixels do not
    check_proxy_data(config)                               # the cheap pre-flight reads one image of each subset
    with pytest.raises(ChildFailed) as caught:
        train_child(TINY_ARCH, config)
    assert caught.value.code == Failure.DATA_ERROR
    assert caught.value.message.startswith(f"reading folder ({root}): InvalidArgumentError")
    assert os.path.isfile(held.source.paths[held.indices[3]])
