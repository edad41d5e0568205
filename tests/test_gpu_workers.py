"""GPU workers: `gpus_per_worker` reaches Ray as each child's resources, children get distinct GPUs, a fraction
packs several children on one GPU, and a GPU count no node has is refused before anything is written.

This machine has no GPU: the end-to-end test starts a Ray node with logical GPUs (`num_gpus=2`). Ray schedules
and assigns them exactly as real ones (CUDA_VISIBLE_DEVICES, `ray.get_gpu_ids()`); only TensorFlow, finding no
CUDA device, still trains on the CPU."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

import pytest
import yaml

from conftest import TINY_ARCH

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")


def test_gpus_per_worker_is_a_checked_setting_with_a_flag():
    from mnas.search.config import SearchConfig

    assert SearchConfig.from_dict({}).gpus_per_worker == 0
    assert SearchConfig.from_dict({"gpus_per_worker": 0.5}).gpus_per_worker == 0.5
    assert SearchConfig.from_dict({"gpus_per_worker": 2}).gpus_per_worker == 2
    with pytest.raises(ValueError, match=r"x\.yaml: gpus_per_worker must be a finite number >= 0, got -1"):
        SearchConfig.from_dict({"gpus_per_worker": -1}, source="x.yaml")
    with pytest.raises(ValueError, match="gpus_per_worker above 1 must be a whole number"):
        SearchConfig.from_dict({"gpus_per_worker": 1.5})
    # the flag is derived from the field, and a resumed run may change it (where it runs, not what it computes)
    from mnas.search.config import RESUME_FREE

    out = subprocess.run([sys.executable, "launch.py", "search", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert "--gpus-per-worker" in out.stdout and "gpus_per_worker" in RESUME_FREE


def test_placement_counts_children_per_node_and_refuses_what_no_node_holds(monkeypatch):
    import ray

    from mnas.search import tune

    nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}},
             {"Alive": True, "Resources": {"CPU": 2.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]      # a dead node holds nothing
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    assert tune.placement(1, 0) == 8 + 2
    assert tune.placement(1, 1) == 2          # only the GPU node, one child per GPU
    assert tune.placement(1, 0.5) == 4        # two children share each GPU
    assert tune.placement(4, 0.25) == 2       # CPUs bound it: 8 / 4
    with pytest.raises(ValueError, match=r"needs 1 CPU\(s\) and 4 GPU\(s\) \(the largest have 8 CPUs and 2 GPUs\)"):
        tune.placement(1, 4)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="needs dataset-fashion-mnist")
def test_children_get_distinct_gpus_and_half_a_gpu_packs_two_per_gpu(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    ray_tmp = tempfile.mkdtemp(prefix="mg", dir="/tmp")     # Ray's socket paths must stay short
    os.makedirs(os.path.join(ray_tmp, "ray"))
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 2, "temp_dir": ray_tmp})
    config = yaml.safe_load(open(SMOKE))
    config["proxy"].update(train_subset=128, heldout=64, batch_size=32)
    config_path = tmp_path / "gpus.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    try:
        done = subprocess.run(
            [sys.executable, "launch.py", "search", "--config", str(config_path), "--out", str(run_dir),
             "--samples", "4", "--workers", "4", "--strategy", "random", "--gpus-per-worker", "0.5",
             "--address", cluster.address, "--quiet"],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    listing = subprocess.run([sys.executable, "launch.py", "results", str(run_dir), "--json"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    children = json.loads(listing.stdout)
    assert len(children) == 4 and all(c["status"] == "ok" for c in children)
    gpus_of = {}
    for child in children:
        extra = child["extra"] if isinstance(child["extra"], dict) else json.loads(child["extra"])
        assert extra["gpus"] in ("0", "1"), extra        # one GPU each, of the node's two
        gpus_of[extra["worker"]] = extra["gpus"]
    # four children at once on four workers (reuse_actors keeps a worker's GPU for its life): 0.5 GPU each puts
    # two workers on each GPU -- both GPUs used, neither given to more than two
    assert len(gpus_of) == 4, gpus_of
    assert sorted(Counter(gpus_of.values()).values()) == [2, 2], gpus_of


def test_mixed_precision_is_refused_for_cpu_children_and_trains_a_child_in_float16(tiny_data, monkeypatch,
                                                                                     tmp_path):
    from mnas import cli
    from mnas.search.proxy import ProxyConfig
    from mnas.search.registry import load_architecture
    from mnas.trainer import devices
    from mnas.workers.proxy import ProxyTraining

    config = yaml.safe_load(open(SMOKE))
    config["proxy"]["mixed_precision"] = True
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "mixed.yaml")
        with open(path, "w") as handle:
            yaml.safe_dump(config, handle)
        assert cli.main(["search", "--config", path, "--out", os.path.join(folder, "run")]) == 2
        assert not os.path.exists(os.path.join(folder, "run"))
    # The float16 path itself (loss scaling, float32 logits) on this CPU: the GPU check is what is bypassed.
    import tensorflow as tf

    listed = tf.config.list_physical_devices
    monkeypatch.setattr(devices, "configure_gpus", lambda tf: ["a GPU, as far as the check knows"])
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["a GPU, as far as the check knows"] if kind == "GPU" else listed(kind))
    proxy = ProxyConfig(data_dir=tiny_data, train_subset=128, heldout=64, batch_size=32, steps=3, width=0.25,
                        split="file-order", mixed_precision=True)
    try:
        (tmp_path / "tiny.arch").write_text(TINY_ARCH)     # a child of two blocks: the float16 path, not its size
        with ProxyTraining(load_architecture(str(tmp_path / "tiny.arch")), proxy) as training:
            assert training.model.layers[-1].compute_dtype == "float16"
            training.train_to(3)
            result = training.result()
        assert 0 <= result.accuracy <= 1 and result.final_loss == result.final_loss   # finite, not NaN
    finally:
        devices.set_precision(False)
