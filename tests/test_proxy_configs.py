"""The shipped proxy configs for real data -- configs/paper.yaml (ImageNet TFRecords) and configs/folder.yaml (your
own image folder) -- against tiny datasets written here: a search's start-up accepts each, and one child trains
and is scored through the proxy in-process.

Only what cannot run on this CPU machine in seconds is shrunk in the test's copy: the number of images (the tiny
data holds a few hundred) and, for the paper, the 224x224 resolution and the batch of 256. Everything else --
dataset, split, optimizer, width, strides, gpus_per_worker -- is the config's own.
"""

import os

import pytest
import yaml

from mnas import cli
from mnas.search.arch import Architecture
from mnas.search.proxy import ProxyConfig
from mnas.workers.proxy import check_proxy_data, train_child
from tiny_datasets import write_imagenet_shards, write_png_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHRUNK = {"paper": {"train_subset": 96, "heldout": 48, "image_size": 32, "batch_size": 16, "epochs": 1},
          "folder": {"train_subset": 128, "heldout": 48, "epochs": 1}}
# A small child keeps the training to seconds; what is under test is the config's data path, not the space.
CHILD = Architecture.from_strings(["r1_k3_s11_e1_i32_o16_noskip", "r1_k3_s22_e3_i16_o24_se0.25"],
                                  stem_filters=16, head_filters=64)


def tiny_data_for(name, tmp_path) -> str:
    if name == "paper":
        return write_imagenet_shards(tmp_path / "imagenet", train=160, shards=4, classes=5, side=40)
    return write_png_folder(tmp_path / "images", classes=3, per_class=70, side=48)


def shipped(name: str) -> dict:
    with open(os.path.join(ROOT, "configs", f"{name}.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize("name", ["paper", "folder"])
def test_the_shipped_config_says_what_the_issue_asks(name):
    config = shipped(name)
    proxy = ProxyConfig.from_dict(config["proxy"])
    assert proxy.split == "random" and proxy.data_dir.startswith("/path/to/")     # a placeholder to set
    if name == "paper":
        assert (proxy.dataset, proxy.image_size, proxy.epochs, proxy.heldout) == ("imagenet", 224, 5, 50000)
        assert proxy.train_subset + proxy.heldout == 1281167                    # all of ImageNet's training set
        assert config["reward"] == {"preset": "soft", "target_ms": 75} and config["gpus_per_worker"] == 1
        assert (proxy.width, proxy.strides_removed) == (1.0, ())                 # the child itself, every stride
    else:
        assert proxy.dataset == "folder"


@pytest.mark.parametrize("name", ["paper", "folder"])
def test_one_child_trains_and_scores_through_the_shipped_proxy(name, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    config = shipped(name)
    proxy = ProxyConfig.from_dict({**config["proxy"], **SHRUNK[name], "data_dir": tiny_data_for(name, tmp_path),
                                   "threads": 1, **({"num_classes": 5} if name == "paper" else {})})
    summary = check_proxy_data(proxy)
    assert summary.streamed and summary.heldout_classes == (5 if name == "paper" else 3)
    result = train_child(CHILD, proxy)
    assert result.steps == proxy.train_subset // proxy.batch_size and 0 <= result.accuracy <= 1
    assert result.epochs == pytest.approx(1.0) and result.proxy_params > 0


@pytest.mark.parametrize("name", ["paper", "folder"])
def test_a_search_start_up_accepts_the_shipped_config(name, tmp_path, monkeypatch, capsys):
    """Everything a search checks before Ray starts passes; the sentinel stops it where Ray would start."""
    import ray

    class RayReached(Exception):
        pass

    def reached(*args, **kwargs):
        raise RayReached()

    config = shipped(name)
    config["proxy"].update(SHRUNK[name], data_dir=tiny_data_for(name, tmp_path))
    if name == "paper":
        config["proxy"]["num_classes"] = 5
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(ray, "init", reached)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RayReached):
        cli.main(["search", "--config", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    dataset = "imagenet" if name == "paper" else "folder"
    assert f"proxy data: {dataset} ({tmp_path}" in err and "error" not in err.lower(), err
