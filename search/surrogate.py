"""A surrogate of the proxy task: proxy accuracy predicted from the architecture, fitted on real children.

MNAS-Bench (`benchmarks/mnas_bench.py`) trains uniformly random children of a space on the proxy; this module fits
a ridge regression (numpy only) from each child's architecture to its proxy accuracy, so that strategies can be
compared over many seeds in seconds, as NAS-Bench-301 (Zela et al., ICLR 2022) does for the DARTS space.

What the model sees:

* per block of the space's skeleton: expansion ratio, whether the op is a regular conv, kernel, squeeze-excite
  ratio, skip (none / identity / pool), output filters and layers;
* for the whole deployment network, the log of its parameters and multiply-adds (counted analytically);
* for the network the proxy actually trains (`search.proxy.proxy_architecture`, with the proxy settings the
  children were trained under, kept in the model file): the log of its parameters and multiply-adds, and its
  layer structure -- layers, layers with no shortcut ("plain"), with an identity shortcut, with a pooled or
  projected shortcut, with squeeze-excite, regular convs, and the longest run of consecutive plain layers.

Why a linear model on these and not boosted trees: on MNAS-Bench's 384 children, the number of layers the proxy
trains with no shortcut alone ranks children with Spearman -0.65 -- one epoch does not train deep plain stacks (He
et al., CVPR 2016) -- and the ridge model on the features above ranked held-out children clearly better than the
boosted trees on the per-block features it replaced: 5-fold CV repeated 3 times, Spearman 0.69 against 0.53 and
0.26 against 0.08 within the top quartile; chosen on the first 300 children, it ranked the other 84 with Spearman
0.71 against 0.53. Trees on the same features, deeper or shallower, overfitted the proxy's seed noise. The
features are nonlinear in the decisions (counts multiply filters, expansion and kernels; shortcuts depend on
strides and filters), so the landscape keeps interactions between decisions, though only those these features
express. The training target is winsorized at its 5th percentile (`CLIP_QUANTILE`): a few children barely train
(accuracy 0.3-0.7) and squared error would otherwise spend the fit on them; predictions are not clipped except
to [0, 1].

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
from mnas.search.counts import Counts, LayerProfile, count, profile
from mnas.search.arch import CONV_REGULAR, SKIP_IDENTITY, SKIP_NONE, SKIP_POOL, SKIPS, Architecture
from mnas.search.proxy import ProxyConfig, proxy_architecture
from mnas.search.space import SearchSpace

FORMAT = "mnas-surrogate/2"
MODEL_FORMAT = "mnas-ridge/1"
BLOCK_FEATURES = ("expand", "regular_conv", "kernel", "se", "skip", "filters", "layers")
GLOBAL_FEATURES = ("log_params", "log_madds", "log_proxy_params", "log_proxy_madds", "proxy_layers",
                   "proxy_plain_layers", "proxy_identity_layers", "proxy_pooled_layers", "proxy_se_layers",
                   "proxy_conv_layers", "proxy_longest_plain_run")
RIDGE_ALPHA = 10.0        # penalty on standardized coefficients; 3-30 ranked held-out children alike on MNAS-Bench
CLIP_QUANTILE = 0.05      # the training target is raised to its 5th percentile (see the module docstring)
# How the proxy adapts a child (the fields of search.proxy.ProxyConfig that change the trained network) and the
# data's classes and channels, so that the proxy features count the network that was actually trained. The defaults
# are those of every MNAS-Bench child (configs/default.yaml's proxy on Fashion-MNIST: 10 classes, 1 channel).
PROXY_KEYS = ("width", "filter_divisor", "strides_removed", "image_size")
DEFAULT_PROXY = {"width": 0.5, "filter_divisor": 4, "strides_removed": ["stem", "b6"], "image_size": 28,
                 "num_classes": 10, "input_channels": 1}


def proxy_settings(proxy: ProxyConfig | Mapping[str, Any] | None = None, num_classes: int | None = None,
                   input_channels: int | None = None) -> dict:
    """The proxy adaptation the features describe: `DEFAULT_PROXY` updated by a ProxyConfig (or a mapping of its
    fields, or of this function's result) and by the data's classes and channels; a bad setting raises ValueError."""
    settings = dict(DEFAULT_PROXY)
    if isinstance(proxy, ProxyConfig):
        proxy = proxy.to_dict()
    for key, value in (proxy or {}).items():
        if key in settings and value is not None:
            settings[key] = list(value) if isinstance(value, (list, tuple)) else value
    if num_classes is not None:
        settings["num_classes"] = num_classes
    if input_channels is not None:
        settings["input_channels"] = input_channels
    settings["num_classes"], settings["input_channels"] = int(settings["num_classes"]), int(settings["input_channels"])
    _proxy_config(settings)                                               # validates the adaptation
    return settings


def _proxy_config(settings: Mapping[str, Any]) -> ProxyConfig:
    return ProxyConfig.from_dict({key: settings[key] for key in PROXY_KEYS})


def trained_network(arch: Architecture, proxy: Mapping[str, Any] | None = None) -> tuple[Counts, list[LayerProfile]]:
    """The counts and layers of the network the proxy trains for `arch` (`proxy`: as `proxy_settings` returns)."""
    settings = proxy if proxy is not None and set(proxy) == set(DEFAULT_PROXY) else proxy_settings(proxy)
    trained = proxy_architecture(arch, _proxy_config(settings))
    sizes = dict(num_classes=settings["num_classes"], input_channels=settings["input_channels"])
    return count(trained, **sizes), profile(trained, **sizes)


def feature_names(blocks: int) -> list[str]:
    return [f"b{k}_{name}" for k in range(1, blocks + 1) for name in BLOCK_FEATURES] + list(GLOBAL_FEATURES)


def features(arch: Architecture, proxy: Mapping[str, Any] | None = None) -> list[float]:
    """The surrogate's description of a deployment architecture (see the module docstring); `proxy`: the
    adaptation, as `proxy_settings` returns it (default: MNAS-Bench's)."""
    settings = proxy if proxy is not None and set(proxy) == set(DEFAULT_PROXY) else proxy_settings(proxy)
    row: list[float] = []
    for block in arch.scaled_blocks():
        row += [block.expand_ratio, float(block.conv == CONV_REGULAR), block.kernel, block.se_ratio,
                SKIPS.index(block.skip), block.output_filters, block.repeats]
    counts = count(arch)
    trained_counts, layers = trained_network(arch, settings)
    layers = [layer for layer in layers if layer.name.startswith("b")]           # the blocks' layers, in order
    run = longest = 0
    for layer in layers:
        run = run + 1 if layer.skip == SKIP_NONE else 0
        longest = max(longest, run)
    skips = [layer.skip for layer in layers]
    return row + [math.log10(counts.params), math.log10(counts.madds), math.log10(trained_counts.params),
                  math.log10(trained_counts.madds), len(layers), skips.count(SKIP_NONE), skips.count(SKIP_IDENTITY),
                  skips.count(SKIP_POOL), sum(layer.se_filters > 0 for layer in layers),
                  sum(layer.op == "conv" for layer in layers), longest]


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


class RidgeModel:
    """y ~ intercept + coef . (x - mean) / scale: ridge regression (L2 penalty `alpha` on the standardized
    coefficients) fitted to the targets raised to their `clip_quantile` quantile (`floor`). Deterministic."""

    def __init__(self, mean, scale, coef, intercept: float, floor: float, alpha: float):
        self.mean, self.scale = np.asarray(mean, float), np.asarray(scale, float)
        self.coef, self.intercept = np.asarray(coef, float), float(intercept)
        self.floor, self.alpha = float(floor), float(alpha)

    @classmethod
    def fit(cls, x, y, alpha: float = RIDGE_ALPHA, clip_quantile: float = CLIP_QUANTILE) -> "RidgeModel":
        x, y = np.asarray(x, float), np.asarray(y, float)
        if x.ndim != 2 or len(x) != len(y) or len(y) < 2:
            raise ValueError(f"need rows (n, k) and n >= 2 targets, got {x.shape} and {y.shape}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("the surrogate needs finite features and accuracies")
        floor = float(np.quantile(y, clip_quantile))
        target = np.maximum(y, floor)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0                                   # a constant feature gets coefficient 0
        z = (x - mean) / scale
        intercept = float(target.mean())
        coef = np.linalg.solve(z.T @ z + alpha * np.eye(x.shape[1]), z.T @ (target - intercept))
        return cls(mean, scale, coef, intercept, floor, alpha)

    def predict(self, x) -> np.ndarray:
        return (np.asarray(x, float) - self.mean) / self.scale @ self.coef + self.intercept

    def to_dict(self) -> dict:
        return {"format": MODEL_FORMAT, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept, "floor": self.floor, "alpha": self.alpha}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RidgeModel":
        if not isinstance(data, Mapping) or data.get("format") != MODEL_FORMAT:
            raise ValueError(f"not a ridge model (expected format {MODEL_FORMAT!r})")
        return cls(data["mean"], data["scale"], data["coef"], data["intercept"], data["floor"], data["alpha"])


class Surrogate:
    """Predicted proxy accuracy of the architectures of one space.

    Args:
        space_name: the space it was fitted on; `check_space` refuses another.
        blocks: the number of blocks of that space's skeleton.
        model: the ridge regression on `features`.
        noise: the proxy's seed-to-seed sigma, for `evaluate(..., noisy=True)`.
        info: anything worth keeping with the model (where it was fitted, its cross-validated quality).
        proxy: the proxy adaptation the children were trained under (`proxy_settings`; default MNAS-Bench's).
    """

    def __init__(self, space_name: str, blocks: int, model: RidgeModel, noise: float = 0.0,
                 info: Mapping[str, Any] | None = None, proxy: Mapping[str, Any] | None = None):
        self.space_name, self.blocks, self.model = space_name, int(blocks), model
        self.noise, self.info = float(noise), dict(info or {})
        self.proxy = proxy_settings(proxy)

    @classmethod
    def fit(cls, space: SearchSpace, archs: Iterable[Architecture], accuracies: Iterable[float],
            noise: float = 0.0, seed: int = 0, info: Mapping[str, Any] | None = None,
            proxy: Mapping[str, Any] | None = None) -> "Surrogate":
        """Fits the model (deterministic: `seed` is accepted for callers written for a randomized model)."""
        settings = proxy_settings(proxy)
        x = np.array([features(a, settings) for a in archs])
        y = np.asarray(list(accuracies), float)
        return cls(space.name, len(space.blocks), RidgeModel.fit(x, y), noise, info, settings)

    def check_space(self, space: SearchSpace) -> None:
        if space.name != self.space_name or len(space.blocks) != self.blocks:
            raise ValueError(f"the surrogate was fitted on space {self.space_name!r} ({self.blocks} blocks), "
                             f"not {space.name!r} ({len(space.blocks)} blocks)")

    def predict(self, archs: Sequence[Architecture]) -> np.ndarray:
        """Predicted proxy accuracies, clipped to [0, 1]."""
        for arch in archs:
            if len(arch.blocks) != self.blocks:
                raise ValueError(f"architectures with {len(arch.blocks)} blocks, but the surrogate describes "
                                 f"{self.blocks}")
        x = np.array([features(a, self.proxy) for a in archs])
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
                "features": feature_names(self.blocks), "proxy": self.proxy,
                "settings": {"alpha": RIDGE_ALPHA, "clip_quantile": CLIP_QUANTILE}, "info": self.info,
                "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Surrogate":
        if not isinstance(data, Mapping) or not str(data.get("format", "")).startswith("mnas-surrogate/"):
            raise ValueError(f"not a surrogate model (expected format {FORMAT!r})")
        if data["format"] != FORMAT or data.get("features") != feature_names(data["blocks"]):
            raise ValueError(f"format {data['format']!r} is not this version's {FORMAT!r} (or its features differ):"
                             f" refit it with `benchmarks/mnas_bench.py fit`")
        model = RidgeModel.from_dict(data["model"])
        if len(model.coef) != len(data["features"]):
            raise ValueError(f"{len(model.coef)} coefficients for {len(data['features'])} features")
        return cls(data["space"], data["blocks"], model, data.get("noise", 0.0), data.get("info"), data["proxy"])

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


def rank_quality(predicted: Sequence[float], measured: Sequence[float]) -> dict:
    """Spearman, Kendall, MAE and RMSE of predictions against measurements, and Spearman within the top half and
    the top quartile of the measurements (where searches spend their time)."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    errors = predicted - measured
    out = {"spearman": spearman(predicted, measured), "kendall": kendall(predicted, measured),
           "mae": float(np.abs(errors).mean()), "rmse": float(np.sqrt((errors ** 2).mean()))}
    for name, quantile in (("spearman_top_half", 0.5), ("spearman_top_quartile", 0.75)):
        top = measured >= np.quantile(measured, quantile)
        out[name] = spearman(predicted[top], measured[top]) if top.sum() > 2 else float("nan")
    return out


def cross_validate(space: SearchSpace, archs: Sequence[Architecture], accuracies: Sequence[float], folds: int = 5,
                   seed: int = 0, repeats: int = 1, proxy: Mapping[str, Any] | None = None) -> dict:
    """K-fold held-out quality of the surrogate (`rank_quality` over all folds' predictions, each child predicted
    by the model fitted without its fold), repeated over `repeats` shuffles (seeds seed, seed + 1, ...): the mean
    of each figure, and with repeats > 1 their standard deviations under "sd". "predicted" is the first shuffle's."""
    accuracies = np.asarray(accuracies, float)
    settings = proxy_settings(proxy)
    runs, first = [], None
    for repeat in range(repeats):
        order = np.random.default_rng(seed + repeat).permutation(len(archs))
        predicted = np.empty(len(archs))
        for fold in range(folds):
            test = order[fold::folds]
            train = np.setdiff1d(order, test)
            model = Surrogate.fit(space, [archs[i] for i in train], accuracies[train], seed=seed, proxy=settings)
            predicted[test] = model.predict([archs[i] for i in test])
        runs.append(rank_quality(predicted, accuracies))
        first = predicted if first is None else first
    out = {"children": len(archs), "folds": folds, "repeats": repeats,
           **{key: float(np.mean([run[key] for run in runs])) for key in runs[0]}, "predicted": first.tolist()}
    if repeats > 1:
        out["sd"] = {key: float(np.std([run[key] for run in runs], ddof=1)) for key in runs[0]}
    return out
