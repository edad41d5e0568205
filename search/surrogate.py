"""A surrogate of the proxy task: proxy accuracy predicted from the architecture, fitted on real children.

MNAS-Bench (`benchmarks/mnas_bench.py`) trains uniformly random children of a space on the proxy; this module fits
boosted regression trees (`search.latency.trees`, numpy only) from each child's architecture to its proxy
accuracy, so that strategies can be compared over many seeds in seconds, as NAS-Bench-301 (Zela et al., ICLR 2022)
does for the DARTS space. What the trees see, per block of the space's skeleton: expansion ratio, whether the
op is a regular conv, kernel, squeeze-excite ratio, skip (none / identity / pool), output filters and layers;
and for the whole network the log of its parameters and multiply-adds (counted analytically).

A surrogate is a deterministic function; the proxy it stands for is not. `Surrogate.noise` (the proxy's measured
seed-to-seed sigma) lets a search draw each evaluation with that much Gaussian noise, seeded by the genotype and
the evaluation's seed, so that a strategy cannot win by re-sampling one child until it is lucky.

Pure Python and numpy: no TensorFlow, no Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from mnas.search import fileio
from mnas.search.counts import count
from mnas.search.latency.trees import BoostedTrees
from mnas.search.arch import CONV_REGULAR, SKIPS, Architecture
from mnas.search.space import SearchSpace

FORMAT = "mnas-surrogate/1"
BLOCK_FEATURES = ("expand", "regular_conv", "kernel", "se", "skip", "filters", "layers")
GLOBAL_FEATURES = ("log_params", "log_madds")
TREE_SETTINGS = {"trees": 300, "depth": 4, "rate": 0.05, "subsample": 0.8, "min_leaf": 5}


def feature_names(blocks: int) -> list[str]:
    return [f"b{k}_{name}" for k in range(1, blocks + 1) for name in BLOCK_FEATURES] + list(GLOBAL_FEATURES)


def features(arch: Architecture) -> list[float]:
    """The surrogate's description of a deployment architecture (see the module docstring)."""
    row: list[float] = []
    for block in arch.scaled_blocks():
        row += [block.expand_ratio, float(block.conv == CONV_REGULAR), block.kernel, block.se_ratio,
                SKIPS.index(block.skip), block.output_filters, block.repeats]
    counts = count(arch)
    return row + [math.log10(counts.params), math.log10(counts.madds)]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank)."""
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b over all pairs (O(n^2) memory in blocks; fine for a few thousand points)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    concordant = discordant = ties_a = ties_b = 0.0
    for i in range(len(a) - 1):
        da, db = np.sign(a[i + 1:] - a[i]), np.sign(b[i + 1:] - b[i])
        concordant += float(np.sum(da * db > 0))
        discordant += float(np.sum(da * db < 0))
        ties_a += float(np.sum((da == 0) & (db != 0)))
        ties_b += float(np.sum((db == 0) & (da != 0)))
    denominator = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denominator if denominator else float("nan")


def _ranks(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, float)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):          # ties: the mean of their ranks
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


class Surrogate:
    """Predicted proxy accuracy of the architectures of one space.

    Args:
        space_name: the space it was fitted on; `check_space` refuses another.
        blocks: the number of blocks of that space's skeleton.
        model: the boosted trees.
        noise: the proxy's seed-to-seed sigma, for `evaluate(..., noisy=True)`.
        info: anything worth keeping with the model (where it was fitted, its cross-validated quality).
    """

    def __init__(self, space_name: str, blocks: int, model: BoostedTrees, noise: float = 0.0,
                 info: Mapping[str, Any] | None = None):
        self.space_name, self.blocks, self.model = space_name, int(blocks), model
        self.noise, self.info = float(noise), dict(info or {})

    @classmethod
    def fit(cls, space: SearchSpace, archs: Iterable[Architecture], accuracies: Iterable[float],
            noise: float = 0.0, seed: int = 0, info: Mapping[str, Any] | None = None) -> "Surrogate":
        x = np.array([features(a) for a in archs])
        y = np.asarray(list(accuracies), float)
        model = BoostedTrees.fit(x, y, seed=seed, **TREE_SETTINGS)
        return cls(space.name, len(space.blocks), model, noise, info)

    def check_space(self, space: SearchSpace) -> None:
        if space.name != self.space_name or len(space.blocks) != self.blocks:
            raise ValueError(f"the surrogate was fitted on space {self.space_name!r} ({self.blocks} blocks), "
                             f"not {space.name!r} ({len(space.blocks)} blocks)")

    def predict(self, archs: Sequence[Architecture]) -> np.ndarray:
        """Predicted proxy accuracies, clipped to [0, 1]."""
        x = np.array([features(a) for a in archs])
        if x.shape[1] != len(feature_names(self.blocks)):
            raise ValueError(f"architectures with {(x.shape[1] - len(GLOBAL_FEATURES)) // len(BLOCK_FEATURES)} "
                             f"blocks, but the surrogate describes {self.blocks}")
        return np.clip(self.model.predict(x), 0.0, 1.0)

    def evaluate(self, arch: Architecture, indices: Sequence[int], seed: int = 0, noisy: bool = True) -> float:
        """One evaluation of a child: the prediction, plus the proxy's noise drawn from (genotype, seed)."""
        value = float(self.predict([arch])[0])
        if noisy and self.noise > 0:
            key = hashlib.sha256(json.dumps([list(map(int, indices)), int(seed)]).encode()).digest()
            value += self.noise * float(np.random.default_rng(int.from_bytes(key[:8], "little")).standard_normal())
        return min(max(value, 0.0), 1.0)

    # -- files
    def to_dict(self) -> dict:
        return {"format": FORMAT, "space": self.space_name, "blocks": self.blocks, "noise": self.noise,
                "features": feature_names(self.blocks), "tree_settings": TREE_SETTINGS, "info": self.info,
                "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Surrogate":
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"not a surrogate model (expected format {FORMAT!r})")
        return cls(data["space"], data["blocks"], BoostedTrees.from_dict(data["model"]), data.get("noise", 0.0),
                   data.get("info"))

    def save(self, path: str) -> None:
        fileio.write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str) -> "Surrogate":
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except OSError as err:
            raise ValueError(f"cannot read surrogate {path}: {err.strerror or err}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"surrogate {path} is not JSON: {err}") from None
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"surrogate {path}: {err}") from None


def cross_validate(space: SearchSpace, archs: Sequence[Architecture], accuracies: Sequence[float], folds: int = 5,
                   seed: int = 0) -> dict:
    """K-fold held-out quality of the surrogate: Spearman, Kendall, mean absolute and RMS error over all folds'
    predictions, each child predicted by the model fitted without its fold."""
    accuracies = np.asarray(accuracies, float)
    order = np.random.default_rng(seed).permutation(len(archs))
    predicted = np.empty(len(archs))
    for fold in range(folds):
        test = order[fold::folds]
        train = np.setdiff1d(order, test)
        model = Surrogate.fit(space, [archs[i] for i in train], accuracies[train], seed=seed)
        predicted[test] = model.predict([archs[i] for i in test])
    errors = predicted - accuracies
    return {"children": len(archs), "folds": folds, "spearman": spearman(predicted, accuracies),
            "kendall": kendall(predicted, accuracies), "mae": float(np.abs(errors).mean()),
            "rmse": float(np.sqrt((errors ** 2).mean())), "predicted": predicted.tolist()}
