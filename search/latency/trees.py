"""Gradient-boosted regression trees in numpy: the nonlinear part of the per-layer latency model.

Squared error, depth-limited trees grown by exact greedy splits, shrinkage and row subsampling (Friedman 2001,
"Greedy function approximation"; 2002, "Stochastic gradient boosting"). Small on purpose: a latency table has
hundreds to a few thousand layers and a dozen descriptors each, so exact splits over sorted columns take well
under a second, and the project does not depend on scikit-learn. A tree is one (nodes, 5) array -- feature,
threshold, left, right, value; feature -1 marks a leaf -- so a model is plain JSON and predicts whole batches.
"""

from __future__ import annotations

import numpy as np

FORMAT = "mnas-boosted-trees/1"


def _best_split(x: np.ndarray, g: np.ndarray, min_leaf: int) -> tuple[float, int, float]:
    """(gain, feature, threshold) of the split of rows `x` that most reduces the squared error of targets `g`;
    feature -1 when no split leaves `min_leaf` rows on both sides."""
    n = len(g)
    best = (0.0, -1, 0.0)
    total = g.sum()
    left_n = np.arange(1, n)
    for j in range(x.shape[1]):
        order = np.argsort(x[:, j], kind="stable")
        xs = x[order, j]
        left = np.cumsum(g[order])[:-1]
        valid = (xs[1:] > xs[:-1]) & (left_n >= min_leaf) & (n - left_n >= min_leaf)
        if not valid.any():
            continue
        gain = np.where(valid, left ** 2 / left_n + (total - left) ** 2 / (n - left_n), -np.inf) - total ** 2 / n
        i = int(np.argmax(gain))
        if gain[i] > best[0]:
            best = (float(gain[i]), j, float((xs[i] + xs[i + 1]) / 2))
    return best


def fit_tree(x: np.ndarray, g: np.ndarray, depth: int, min_leaf: int) -> np.ndarray:
    """A regression tree of at most `depth` levels fitted to targets `g`, as a (nodes, 5) array."""
    nodes: list[list[float]] = []

    def grow(rows: np.ndarray, level: int) -> int:
        at = len(nodes)
        nodes.append([-1.0, 0.0, -1.0, -1.0, float(g[rows].mean())])
        if level < depth and len(rows) >= 2 * min_leaf:
            _, feature, threshold = _best_split(x[rows], g[rows], min_leaf)
            if feature >= 0:
                goes_left = x[rows, feature] <= threshold
                left = grow(rows[goes_left], level + 1)
                right = grow(rows[~goes_left], level + 1)
                nodes[at][:4] = [feature, threshold, left, right]
        return at

    grow(np.arange(len(g)), 0)
    return np.array(nodes, dtype=float)


def predict_tree(nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The tree's value for each row of `x` (all rows descend together, one level a step)."""
    at = np.zeros(len(x), dtype=int)
    rows = np.arange(len(x))
    while True:
        feature = nodes[at, 0].astype(int)
        inner = feature >= 0
        if not inner.any():
            return nodes[at, 4]
        left = x[rows, np.maximum(feature, 0)] <= nodes[at, 1]
        at = np.where(inner, np.where(left, nodes[at, 2], nodes[at, 3]).astype(int), at)


class BoostedTrees:
    """y ~ bias + sum of `rate`-shrunk trees, each fitted to the residuals of the ones before."""

    def __init__(self, bias: float = 0.0, trees: list[np.ndarray] | None = None):
        self.bias = float(bias)
        self.trees = [np.asarray(t, dtype=float).reshape(-1, 5) for t in (trees or [])]

    @classmethod
    def fit(cls, x, y, trees: int = 400, depth: int = 3, rate: float = 0.1, subsample: float = 0.8,
            min_leaf: int = 3, seed: int = 0) -> "BoostedTrees":
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        if x.ndim != 2 or len(x) != len(y) or len(y) < 2:
            raise ValueError(f"need rows (n, k) and n >= 2 targets, got {x.shape} and {y.shape}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("boosted trees need finite inputs and targets")
        rng = np.random.default_rng(seed)
        model = cls(float(y.mean()))
        fitted = np.full(len(y), model.bias)
        size = max(2, int(round(subsample * len(y))))
        for _ in range(trees):
            rows = rng.choice(len(y), size, replace=False) if size < len(y) else np.arange(len(y))
            tree = fit_tree(x[rows], (y - fitted)[rows], depth, min_leaf)
            tree[:, 4] *= rate
            fitted += predict_tree(tree, x)
            model.trees.append(tree)
        return model

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        out = np.full(len(x), self.bias)
        for tree in self.trees:
            out += predict_tree(tree, x)
        return out

    def to_dict(self) -> dict:
        return {"format": FORMAT, "bias": self.bias, "trees": [t.tolist() for t in self.trees]}

    @classmethod
    def from_dict(cls, data: dict) -> "BoostedTrees":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a boosted-trees model (expected format {FORMAT!r})")
        return cls(data["bias"], data["trees"])
