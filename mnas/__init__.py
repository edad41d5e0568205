"""MNAS: platform-aware neural architecture search (MnasNet, Tan et al., CVPR 2019).

One import package, `mnas`, whose subpackages are, bottom layer first (each imports only those before it):

    mnas.search    architectures and block strings, search spaces, the reward, strategies (random, evolution,
                   the LSTM controller trained with PPO), latency predictors, the driver; pure Python but for
                   the controller and the Ray Tune glue
    mnas.results   the SQLite results store, its views, the dashboard and report
    mnas.trainer   builds Keras models from architectures, trains and exports them (TFLite)
    mnas.measure   times models on this host or a phone; the registry of latency backends
    mnas.workers   what a Ray trial runs: train a child on the proxy task and score it
    mnas.commands  the command line (`mnas`, mnas/cli.py)

In a checkout the subpackages are the top-level folders (search/, results/, ...): the repository keeps that
layout, and this package's path reaches them. Installed (`pip install .`), they are inside the package and the
checkout's folders are not involved.
"""

import os as _os

_CHECKOUT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "search")) and \
        _os.path.isfile(_os.path.join(_CHECKOUT, "search", "__init__.py")):
    __path__.append(_CHECKOUT)  # noqa: F821 -- a package's own __path__
