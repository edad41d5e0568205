"""A latency predictor calibrated from measurements: a non-negative linear model of analytic features.

latency = intercept + sum_j coef_j * feature_j, with the features of `search.latency.features` (multiply-adds by
op type, activation traffic, weights, op count). Coefficients are fitted by non-negative least squares on
*relative* errors (each row divided by its measured latency), because the search cares about percentages: a
2 ms miss on a 20 ms model matters as much as a 10 ms miss on a 100 ms one. Non-negativity keeps the model
physical (no feature makes a network faster), which is what lets 25 measurements of one network family carry
over to other networks (see BENCHMARKS.md, Latency).

Because the model is linear in features that are additive over layers, it is also a per-layer model: the same
fit serves as the "predictor calibrated on a few measurements" of the few-shot experiments (HELP, Lee et al.
NeurIPS 2021, set the protocol we report against). Pure numpy: the search loop calls it thousands of times.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mnas.search import fileio
from mnas.search.latency.base import LatencyModel, check_resolution
from mnas.search.latency.features import FEATURES, TILES, check_tile, feature_matrix
from mnas.search.arch import Architecture

FORMAT = "mnas-latency-predictor/1"


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None, tol: float = 1e-10) -> np.ndarray:
    """Non-negative least squares, min ||a x - b|| subject to x >= 0 (Lawson and Hanson 1974, ch. 23).

    The active-set method: move the variable with the largest gradient into the passive set, solve the
    unconstrained problem on that set, and step back toward the previous feasible point whenever a passive
    variable would go negative. numpy only (the project does not depend on SciPy).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    max_iter = max_iter or 3 * n + 10
    for _ in range(max_iter):
        gradient = a.T @ (b - a @ x)
        if passive.all() or gradient[~passive].max(initial=-np.inf) <= tol:
            break
        passive[np.argmax(np.where(passive, -np.inf, gradient))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > tol).all():
                break
            blocked = passive & (z <= tol)
            step = np.min(x[blocked] / (x[blocked] - z[blocked]))
            x = x + step * (z - x)
            passive &= x > tol
        x = z
    return x


# Features that share one coefficient in every fit: dense k x k convolutions are priced per multiply-add like 1x1
# convolutions (TFLite runs both as GEMMs, through im2col for k > 1). A family without dense layers -- MnasNet-A1
# has only its stem -- cannot fit them apart, and an unfitted price of zero is one a search exploits at once.
TIED: dict[str, str] = {"dense_madds": "pointwise_madds"}


def fit_linear(x: np.ndarray, y: np.ndarray, relative: bool = True, tie: bool = True) -> tuple[np.ndarray, float]:
    """(coefficients, intercept), all non-negative, fitted to features `x` (n, k) and latencies `y` (n,).

    `tie`: `x` holds `FEATURES` in order, and the `TIED` ones share a coefficient; False for any other columns
    (the source predictions of `TransferPredictor`)."""
    x, y = np.asarray(x, float).copy(), np.asarray(y, float)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"need a feature matrix (n, k) and n latencies, got {x.shape} and {y.shape}")
    if (y <= 0).any():
        raise ValueError("measured latencies must be positive")
    if tie and x.shape[1] != len(FEATURES):
        raise ValueError(f"tied features need the {len(FEATURES)} columns of FEATURES, got {x.shape[1]}")
    tied = [(FEATURES.index(a), FEATURES.index(b)) for a, b in TIED.items()] if tie else []
    for source, target in tied:
        x[:, target] += x[:, source]
        x[:, source] = 0.0
    # Scale columns so the active-set tolerances mean the same for every feature.
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    design = np.c_[x / scale, np.ones(len(y))]
    weights = 1.0 / y if relative else np.ones_like(y)
    solution = nnls(design * weights[:, None], y * weights)
    coef = solution[:-1] / scale
    for source, target in tied:
        coef[source] = coef[target]
    return coef, float(solution[-1])


MIN_TILE_CHOICE = 8   # measurements below which no tile is chosen (tile 1): too few to tell tiles apart


def choose_tile(archs: Sequence[Architecture], y: Sequence[float], resolutions=None,
                tiles: Sequence[int] = TILES) -> tuple[int, dict[int, float]]:
    """The channel tile whose features predict the measurements best under leave-one-out (relative error).

    Returns (tile, {tile: leave-one-out MAPE in percent}); (1, {}) with fewer than `MIN_TILE_CHOICE`
    measurements. A tile is a property of the device's kernels, not of the networks, so it is chosen like a
    hyperparameter: by held-out error, ties going to the smaller tile.
    """
    y = np.asarray(y, float)
    if len(y) < MIN_TILE_CHOICE:
        return 1, {}
    errors = {}
    for tile in tiles:
        x = features_of(archs, resolutions, tile)
        errors[tile] = float(np.mean(np.abs(leave_one_out(x, y) / y - 1)) * 100)
    best = min(errors.values())
    return min(t for t, e in errors.items() if e <= best * 1.005), errors


def leave_one_out(x: np.ndarray, y: np.ndarray, relative: bool = True, tie: bool = True) -> np.ndarray:
    """Prediction of each row by a model fitted (`fit_linear`) on all the other rows."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef, intercept = fit_linear(x[keep], y[keep], relative, tie)
        out[i] = x[i] @ coef + intercept
    return out


# -- how far a network lies from the rows a predictor was fitted on

Z_95 = 1.96        # two-sided 95% of a normal: the interval's half-width in standard errors
RIDGE = 1e-3       # of the mean diagonal: keeps directions the fit never saw finite (and large)


def _design(x: np.ndarray, predicted: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Rows of the relative design the fit solves: tied, column-scaled features and a 1 (for the intercept),
    each divided by its latency (here the predicted one, the only one a new network has)."""
    x = np.asarray(x, float).copy()
    for source, target in ((FEATURES.index(a), FEATURES.index(b)) for a, b in TIED.items()):
        x[:, target] += x[:, source]
        x[:, source] = 0.0
    return np.c_[x / scale, np.ones(len(x))] / np.maximum(predicted, 1e-9)[:, None]


def fit_spread(x: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: float, loo: np.ndarray) -> dict:
    """What `CalibratedPredictor.uncertainty` needs, from the fitted rows `x`, `y` and their leave-one-out
    predictions: the inverse of the (ridged) relative design's Gram matrix, the column scale, the leverage of
    the fitted rows, and the leave-one-out relative error (RMS).

    Leverage h = z' (Z'Z + r I)^-1 z is the classic distance of a regression point from the data: a network
    whose feature mix is a blend of fitted rows has h about p/n; one with a feature mix that no fitted row has
    -- other op counts than A1's 92, more depthwise work per multiply-add -- lies along a direction the fit
    never saw, and h grows without bound but for the ridge `r`.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    z = _design(x, x @ coef + intercept, scale)
    gram = z.T @ z
    gram_inv = np.linalg.inv(gram + RIDGE * np.trace(gram) / len(gram) * np.eye(len(gram)))
    leverage = np.einsum("ij,jk,ik->i", z, gram_inv, z)
    return {"gram_inv": gram_inv.tolist(), "scale": scale.tolist(), "max_leverage": float(leverage.max()),
            "loo_rms_relative": float(np.sqrt(np.mean((np.asarray(loo) / y - 1) ** 2)))}


def _expect_format(data, expected: str, source: str, what: str) -> None:
    if not isinstance(data, dict) or data.get("format") != expected:
        raise ValueError(f"{source}: not a {what} file (expected format {expected!r})")


class _JsonFile:
    """`save(path)` of a model that has `to_dict()`: atomically, as JSON."""

    def save(self, path: str) -> None:
        fileio.write_json_atomic(path, self.to_dict(), indent=1)


class CalibratedPredictor(_JsonFile, LatencyModel):
    """LatencyModel from fitted coefficients; `pixel1` is one of these, loaded from package data."""

    def __init__(self, coef: Sequence[float], intercept: float = 0.0, name: str = "calibrated-predicted",
                 features: Sequence[str] = FEATURES, meta: dict | None = None, num_classes: int = 1000,
                 tile: int = 1, spread: dict | None = None):
        if tuple(features) != FEATURES:
            raise ValueError(f"predictor features {list(features)} do not match this version's {list(FEATURES)}")
        self.coef = np.asarray(coef, dtype=float)
        if self.coef.shape != (len(FEATURES),):
            raise ValueError(f"predictor needs {len(FEATURES)} coefficients, got {self.coef.shape}")
        self.intercept = float(intercept)
        self.name = name
        self.meta = dict(meta or {})
        self.num_classes = num_classes
        self.tile = check_tile(tile)
        self.spread = dict(spread) if spread else None
        if self.spread:
            self._gram_inv = np.asarray(self.spread["gram_inv"], float)
            self._scale = np.asarray(self.spread["scale"], float)
            if self._gram_inv.shape != (len(FEATURES) + 1,) * 2 or self._scale.shape != (len(FEATURES),):
                raise ValueError(f"predictor spread has the wrong shape: {self._gram_inv.shape}, "
                                 f"{self._scale.shape}")

    @classmethod
    def fit(cls, archs: Sequence[Architecture], latencies_ms: Sequence[float], name: str,
            resolutions: Sequence[int | None] | None = None, meta: dict | None = None,
            tile: int | None = 1) -> "CalibratedPredictor":
        """Fits a predictor to measured latencies of `archs` (each at its own resolution unless given).

        `tile`: the device's channel tile (`search.latency.features`); None chooses it by leave-one-out
        (`choose_tile`), which needs a few measurements (`MIN_TILE_CHOICE`; fewer keep tile 1)."""
        y = np.asarray(latencies_ms, float)
        if tile is None:
            tile = choose_tile(archs, y, resolutions)[0]
        x = features_of(archs, resolutions, tile)
        coef, intercept = fit_linear(x, y)
        return cls(coef, intercept, name=name, meta=meta, tile=tile,
                   spread=fit_spread(x, y, coef, intercept, leave_one_out(x, y)))

    def predict(self, archs: Sequence[Architecture], resolution: int | None = None) -> list[float]:
        check_resolution(resolution)
        if not archs:
            return []
        return (feature_matrix(archs, resolution, self.num_classes, self.tile) @ self.coef
                + self.intercept).tolist()

    def uncertainty(self, archs: Sequence[Architecture], resolution: int | None = None) -> list[dict | None]:
        """How far each network lies from the fitted rows, and what that makes of its prediction.

        Each entry: `leverage_ratio` (its leverage over the largest of any fitted row: <= 1 inside what was
        fitted), `extrapolating` (ratio > 1: measure it, if it matters, rather than trust the figure), and
        `interval_ms`, an approximate 95% interval: the prediction times 1 +- 1.96 s sqrt(1 + h / h_max),
        s being the fit's leave-one-out relative error (RMS). The interval widens with the distance; it is a
        scale of doubt, not a calibrated probability (a fitted family's own errors are correlated). None for
        every network of a predictor saved without its spread (an old file)."""
        check_resolution(resolution)
        if not archs:
            return []
        if not self.spread:
            return [None] * len(archs)
        x = feature_matrix(archs, resolution, self.num_classes, self.tile)
        predicted = x @ self.coef + self.intercept
        z = _design(x, predicted, self._scale)
        ratio = np.einsum("ij,jk,ik->i", z, self._gram_inv, z) / self.spread["max_leverage"]
        half = Z_95 * self.spread["loo_rms_relative"] * np.sqrt(1.0 + ratio)
        return [{"leverage_ratio": float(r), "extrapolating": bool(r > 1.0),
                 "interval_ms": [float(p * max(0.0, 1 - h)), float(p * (1 + h))]}
                for r, h, p in zip(ratio, half, predicted)]

    def describe(self) -> dict:
        return {"source": self.name, "kind": "calibrated predictor",
                "coefficients": dict(zip(FEATURES, self.coef.tolist())), "intercept_ms": self.intercept,
                "channel_tile": self.tile}

    # -- files
    def to_dict(self) -> dict:
        return {"format": FORMAT, "name": self.name, "features": list(FEATURES), "coef": self.coef.tolist(),
                "intercept": self.intercept, "num_classes": self.num_classes, "channel_tile": self.tile,
                **({"spread": self.spread} if self.spread else {}), "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "CalibratedPredictor":
        _expect_format(data, FORMAT, source, "latency predictor")
        try:
            return cls(data["coef"], data.get("intercept", 0.0), name=str(data["name"]),
                       features=data.get("features", FEATURES), meta=data.get("meta"),
                       num_classes=int(data.get("num_classes", 1000)), tile=data.get("channel_tile", 1),
                       spread=data.get("spread"))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: malformed latency predictor file ({err})") from None

    @classmethod
    def load(cls, path: str) -> "CalibratedPredictor":
        return cls.from_dict(fileio.read_json(path), source=path)


TRANSFER_FORMAT = "mnas-latency-transfer/1"


class TransferPredictor(_JsonFile, LatencyModel):
    """A new device as a non-negative mix of predictors of devices already known: the few-shot transfer.

        latency = intercept + sum_d weight_d * LAT_d(m)

    With a dozen measurements, the six coefficients of a `CalibratedPredictor` are noisy, but one or two
    weights on known devices' predictors are not: a new phone is mostly "like that phone, a bit slower". On
    the FBNet-space phones this beats fitting the features afresh at 10 and 20 measurements (BENCHMARKS.md,
    Latency). The sources are stored inside the file, so it can be shipped on its own.
    """

    def __init__(self, sources: Sequence[LatencyModel], weights: Sequence[float], intercept: float = 0.0,
                 name: str = "transfer-predicted", meta: dict | None = None):
        self.sources = list(sources)
        self.weights = np.asarray(weights, dtype=float)
        if not self.sources or self.weights.shape != (len(self.sources),):
            raise ValueError(f"need one weight per source predictor, got {self.weights.shape} for "
                             f"{len(self.sources)} sources")
        if not all(isinstance(s, (CalibratedPredictor, TransferPredictor)) for s in self.sources):
            raise ValueError("transfer sources must be calibrated predictors (a preset or a 'latency calibrate' file)")
        if (self.weights < 0).any() or intercept < 0:
            raise ValueError("transfer weights and intercept must be non-negative")
        self.intercept = float(intercept)
        self.name = name
        self.meta = dict(meta or {})

    @staticmethod
    def source_matrix(sources: Sequence[LatencyModel], archs: Sequence[Architecture]) -> np.ndarray:
        """(n, k): each source's latency of each architecture (at the architecture's own resolution)."""
        return np.column_stack([s.predict(archs) for s in sources])

    @classmethod
    def fit(cls, sources: Sequence[LatencyModel], archs: Sequence[Architecture], latencies_ms: Sequence[float],
            name: str) -> "TransferPredictor":
        """Weights and intercept fitted like `fit_linear` (non-negative, relative error) to measured `archs`."""
        weights, intercept = fit_linear(cls.source_matrix(sources, archs), latencies_ms, tie=False)
        return cls(sources, weights, intercept, name=name)

    def predict(self, archs: Sequence[Architecture], resolution: int | None = None) -> list[float]:
        check_resolution(resolution)
        if not archs:
            return []
        total = np.full(len(archs), self.intercept)
        for source, weight in zip(self.sources, self.weights):
            if weight > 0:
                total += weight * np.asarray(source.predict(archs, resolution))
        return total.tolist()

    def describe(self) -> dict:
        return {"source": self.name, "kind": "transfer predictor", "intercept_ms": self.intercept,
                "weights": {s.name: float(w) for s, w in zip(self.sources, self.weights)}}

    def to_dict(self) -> dict:
        return {"format": TRANSFER_FORMAT, "name": self.name, "weights": self.weights.tolist(),
                "intercept": self.intercept, "sources": [s.to_dict() for s in self.sources], "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "TransferPredictor":
        _expect_format(data, TRANSFER_FORMAT, source, "transfer predictor")
        try:
            sources = [predictor_from_dict(d, f"{source}, source {i + 1}") for i, d in enumerate(data["sources"])]
            return cls(sources, data["weights"], data.get("intercept", 0.0), name=str(data["name"]),
                       meta=data.get("meta"))
        except (KeyError, TypeError, ValueError) as err:
            if str(err).startswith(source):
                raise
            raise ValueError(f"{source}: malformed transfer predictor file ({err})") from None


def predictor_from_dict(data: dict, source: str = "<dict>") -> LatencyModel:
    """A calibrated or transfer predictor, whichever the data's `format` says."""
    kind = data.get("format") if isinstance(data, dict) else None
    if kind == TRANSFER_FORMAT:
        return TransferPredictor.from_dict(data, source)
    if kind == FORMAT:
        return CalibratedPredictor.from_dict(data, source)
    raise ValueError(f"{source}: not a latency predictor file (expected format {FORMAT!r} or "
                     f"{TRANSFER_FORMAT!r})")


def load_predictor(path: str) -> LatencyModel:
    """A predictor file written by `latency calibrate` (with or without --prior)."""
    return predictor_from_dict(fileio.read_json(path), source=path)


def features_of(archs: Sequence[Architecture], resolutions: Sequence[int | None] | None = None,
                tile: int = 1) -> np.ndarray:
    if resolutions is None:
        return feature_matrix(archs, tile=tile)
    return np.vstack([feature_matrix([a], r, tile=tile) for a, r in zip(archs, resolutions)])

