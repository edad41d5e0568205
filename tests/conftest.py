"""Shared test set-up: keep library state out of the home folder and TensorFlow quiet."""

import atexit
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


@pytest.fixture
def python():
    """The interpreter running the tests (the project's virtualenv under `make test`)."""
    return sys.executable
