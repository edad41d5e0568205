"""One installable import package, `mnas`, whose subpackages depend on each other one way: each imports only the
subpackages below it, anywhere in a file (imports inside functions count: they are how the cycles used to hide).

    search   architectures, spaces, the reward, strategies, predictors, the driver: pure Python, no TensorFlow
    results  the store, views, dashboard: read runs
    trainer  builds, trains and converts Keras models
    measure  times models on this host and on phones; the registry of every latency backend
    workers  what a Ray trial runs: train and score a child
    commands the command line
"""

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("search", "results", "trainer", "measure", "workers", "commands")


def imports_of(path: str) -> set[str]:
    """The subpackages of mnas that a file imports ('search' for `from mnas.search.space import ...`)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name.split(".")[1] for name in names if name.startswith("mnas.") and name.count(".") >= 1}


def modules(package: str) -> list[str]:
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(ROOT, package))
                  for name in names if name.endswith(".py"))


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_only_the_packages_below_it(package):
    above = set(LAYERS[LAYERS.index(package) + 1:])
    wrong = {os.path.relpath(path, ROOT): sorted(imports_of(path) & above) for path in modules(package)}
    assert not {path: names for path, names in wrong.items() if names}, f"{package} must not import {above}"


def test_every_package_is_placed_in_a_layer():
    packages = {name for name in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, name, "__init__.py"))}
    assert packages == {"mnas", *LAYERS}


def test_every_import_of_the_project_goes_through_mnas():
    """`import search` would work from a checkout too, and load a second copy of every module beside
    mnas.search's (two classes named Architecture, two stores...): nothing may import the folders by name."""
    bare = re.compile(rf"^\s*(from|import) ({'|'.join(LAYERS)})\b", re.M)
    files = [path for folder in (*LAYERS, "mnas", "tests", "benchmarks") for path in modules(folder)]
    files.append(os.path.join(ROOT, "launch.py"))
    found = [os.path.relpath(path, ROOT) for path in files if bare.search(open(path, encoding="utf-8").read())]
    assert len(files) > 80 and not found


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package_and_its_data(tmp_path):
    """A wheel built from the checkout's tracked files holds `mnas` and its metadata, nothing else at the top:
    no `search`, `results`, `trainer`, `workers`, `commands` or `launch` to collide with other projects."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    source = tmp_path / "src"
    for name in filter(None, tracked.decode().split("\0")):
        if os.path.isfile(os.path.join(ROOT, name)):   # a file deleted but not yet committed is skipped
            os.makedirs(source / os.path.dirname(name), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel, = (tmp_path / "dist").glob("mnas-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"mnas", wheel.name.split("-py")[0] + ".dist-info"}
    for needed in ("mnas/cli.py", "mnas/search/space.py", "mnas/search/spaces/mnasnet.yaml",
                   "mnas/search/latency/pixel1.json", "mnas/search/latency/pixel1_published.csv",
                   "mnas/results/static/dashboard.js", "mnas/measure/host.py", "mnas/commands/search.py"):
        assert needed in names, needed
    entry = zipfile.ZipFile(wheel).read(wheel.name.split("-py")[0] + ".dist-info/entry_points.txt").decode()
    assert "mnas = mnas.cli:main" in entry
    # installed into a folder of its own, it runs without the checkout
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    code = ("import mnas, mnas.search.registry as r; from mnas.search.counts import count; "
            "print(mnas.__path__[0], count(r.ARCHITECTURES['mnasnet-a1']).params)")
    ran = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    where, params = ran.stdout.split()
    assert where == str(target / "mnas") and params == "3887038"
