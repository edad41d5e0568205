"""The packages depend on each other one way: each imports only the packages below it, anywhere in a file
(imports inside functions count: they are how the cycles used to hide).

    search   architectures, spaces, the reward, strategies, predictors, the driver: pure Python, no TensorFlow
    results  the store, views, dashboard: read runs
    trainer  builds, trains and converts Keras models
    measure  times models on this host and on phones; the registry of every latency backend
    workers  what a Ray trial runs: train and score a child
    commands the command line
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("search", "results", "trainer", "measure", "workers", "commands")


def imports_of(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


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
    assert packages == set(LAYERS)
