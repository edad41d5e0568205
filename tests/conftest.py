"""Shared test set-up: keep library state out of the home folder and TensorFlow quiet; the reliability log."""

import atexit
import json
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Set before any test imports TensorFlow / Keras / Ray: caches and configs go to a per-session temp folder.
_STATE = tempfile.mkdtemp(prefix="mnas-test-state-")
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)
os.environ.setdefault("KERAS_HOME", os.path.join(_STATE, "keras"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_STATE, "mpl"))
os.environ.setdefault("MNAS_LATENCY_CACHE", os.path.join(_STATE, "latency-cache"))


@pytest.fixture(autouse=True)
def library_environment():
    """`cli.main` sets the libraries' log variables for the rest of its process (mnas/cli.py, quiet_libraries); a
    test that runs a command in-process must not hand them on to the next test. Put back as they were, or removed
    if they were not set, after the test and its own monkeypatch (which cannot undo a variable that was absent
    when it first touched it and that the code then set: a leaked MNAS_VERBOSE=1 made the next test's commands
    print TensorFlow's start-up lines)."""
    names = ("TF_CPP_MIN_LOG_LEVEL", "MNAS_VERBOSE")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A folder of Fashion-MNIST IDX files with random pixels: 800 training and 10 test images (proxy tests)."""
    import numpy as np

    from mnas.trainer import data

    folder = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(1)
    for field, stem in data.FASHION_MNIST_FILES.items():
        n = 800 if "train" in field else 10
        array = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if field.startswith("x")
                 else rng.integers(0, 10, n, dtype=np.uint8))
        data.write_idx(str(folder / (stem + ".gz")), array)
    return str(folder)


# A tiny training task for the trainer's tests: a two-block network and a learnable toy Fashion-MNIST.

TINY_ARCH = """# two blocks, narrow head: builds and trains in a second at 28x28
stem: 8
head: 32
r1_k3_s11_e1_i8_o8_noskip
r1_k3_s22_e3_i8_o16_se0.25
"""


def write_tiny_fashion(folder, n_train=64, n_test=32, seed=0):
    """IDX files of a learnable toy task: class c has a bright horizontal bar at rows 2c..2c+5."""
    import numpy as np

    from mnas.trainer import data

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 6] = 250
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    for field, stem in data.FASHION_MNIST_FILES.items():
        data.write_idx(os.path.join(folder, stem + ".gz"), arrays[field])
    return str(folder)


@pytest.fixture
def tiny(tmp_path):
    """(architecture file, Fashion-MNIST-like data folder) in tmp_path."""
    from mnas.trainer import data

    data.clear_cache()
    arch = tmp_path / "tiny.arch"
    arch.write_text(TINY_ARCH)
    yield str(arch), write_tiny_fashion(tmp_path / "fm")
    data.clear_cache()


def tiny_config(tiny, **changes):
    """The `TrainConfig` of the tiny task (2 epochs, batches of 16), with `changes`."""
    from mnas.search.registry import load_architecture
    from mnas.trainer.train import TrainConfig

    arch_file, data_dir = tiny
    fields = dict(arch=load_architecture(arch_file), data_dir=data_dir, epochs=2, batch_size=16, arch_source=arch_file)
    fields.update(changes)
    return TrainConfig(**fields)


def run_cli(argv, capsys):
    """The `mnas` command line run in process on ARGV: (exit status, stdout, stderr)."""
    from mnas import cli

    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def load_benchmark(name: str):
    """A script of benchmarks/ (not a package) imported as a module, for tests of its pure parts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def python():
    """The interpreter running the tests (the project's virtualenv under `make test`)."""
    return sys.executable


RELIABILITY_LOG = "MNAS_RELIABILITY_LOG"


def record_reliability(kind: str, **counts) -> None:
    """Appends what a reliability test exercised to the JSON-lines file $MNAS_RELIABILITY_LOG; no-op without it.

    benchmarks/reliability.py sets the variable, runs the reliability tests (issue 7) and sums the lines up into
    the table of BENCHMARKS.md: kills and where they landed, failures injected and recorded, bad inputs tried,
    nodes removed, concurrent reads, and what was lost. A test calls this once, after its checks pass, with counts
    computed from what it saw (a property test once per example), so a line states what the test verified; whether
    the test passed comes from pytest's own report. Each line is a single append-mode write.
    """
    path = os.environ.get(RELIABILITY_LOG)
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]  # 'tests/x.py::name[id] (call)'
    line = json.dumps({"kind": kind, "test": test, **counts}, sort_keys=True, default=str)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


@pytest.fixture(scope="session")
def surrogate_model(tmp_path_factory):
    """A surrogate of the proxy fitted on a made-up accuracy of 80 random `mnasnet` children: searches scored by it
    run in process in seconds (no Ray, no training), for tests of the search command and its run folder."""
    import random

    from mnas.search.registry import load_space
    from mnas.search.surrogate import Surrogate

    space = load_space("mnasnet")
    rng = random.Random(1)
    archs = [space.decode(space.sample_indices(rng)) for _ in range(80)]
    accuracy = [0.7 + 0.0005 * sum(b.output_filters for b in a.blocks) / 7 for a in archs]
    path = tmp_path_factory.mktemp("surrogate") / "bench_surrogate.json"
    Surrogate.fit(space, archs, accuracy, noise=0.01, info={"children": 80}).save(str(path))
    return path


def trial_settings(proxy: dict, reward: dict | None = None, **fields):
    """The `TrialSettings` a search would send its workers, from a proxy section (and a reward section)."""
    from mnas.search.config import Limits
    from mnas.search.reward import Reward
    from mnas.search.proxy import ProxyConfig
    from mnas.workers.trial import TrialSettings

    if "limits" in fields:
        fields["limits"] = Limits(**fields["limits"])
    return TrialSettings(proxy=ProxyConfig.from_dict(proxy), latency=("pixel1",),
                         reward=Reward.from_settings(reward or {"preset": "soft", "target_ms": 75}, ["pixel1"]),
                         **fields)


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` have deselected
def pytest_collection_modifyitems(config, items):
    """The slow end-to-end tests first, shared out between the two halves of the run.

    `make test` runs the suite on two processes (pytest-xdist, `--dist worksteal`): each starts on one half of the
    collection, in order, and a process that runs out takes half of what the other has left. The few slow tests
    (a minute or more each, mostly Ray and TensorFlow starting in subprocesses, much of it spent waiting) are put
    at the head of the two halves in turn, so that they start early and side by side, and the many fast ones fill
    the time around them; left in file order, most of them would meet at the end of one half. Run without
    xdist, this only puts them first."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    if not slow:
        return
    fast = [item for item in items if not item.get_closest_marker("slow")]
    half = len(items) // 2
    heads = (slow[0::2], slow[1::2])
    first = heads[0] + fast[:max(half - len(heads[0]), 0)]
    items[:] = first + heads[1] + fast[len(first) - len(heads[0]):]
