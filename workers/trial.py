"""What one Ray Tune trial runs: evaluate one child and report it. Thin: the work is in `workers.proxy`.

The trial process is reused across children (`reuse_actors=True`), so TensorFlow is imported once per worker,
the dataset is decoded once, and latency models (and their measurement caches) live as long as the worker.

Every outcome is reported, never raised: a child that fails reports `status: failed` with the reason code of
`workers.proxy.ChildFailed` (nan_loss, build_error, oom, ...) so the search records it and carries on. Only a
worker that dies outright reaches the searcher as a Tune error.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Mapping

from search.space import Architecture

_LATENCY_MODELS: dict[str, Any] = {}


def latency_model(spec: str):
    """One latency model per backend spec and process (measured backends keep their caches)."""
    if spec not in _LATENCY_MODELS:
        from search.latency import get_latency_model

        _LATENCY_MODELS[spec] = get_latency_model(spec)
    return _LATENCY_MODELS[spec]


def evaluate_child(config: Mapping[str, Any], proxy: Mapping[str, Any], latency: list[str], resolution: int) -> dict:
    """Latency of the deployment architecture, then proxy training; returns the metrics to report."""
    from workers.proxy import ChildFailed, ProxyConfig, train_child

    start = time.perf_counter()
    arch = Architecture.from_dict(config["arch"]).replace(resolution=resolution)
    metrics: dict[str, Any] = {"status": "ok", "failure_reason": None, "sample": config.get("sample")}
    try:
        tick = time.perf_counter()
        metrics["latencies"] = {spec: float(latency_model(spec).latency_ms(arch, resolution)) for spec in latency}
        metrics["latency_source"] = latency[0]
        metrics["latency_seconds"] = time.perf_counter() - tick
        result = train_child(arch, ProxyConfig.from_dict(proxy)).to_dict()
        extra = {k: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in result.items()}
        metrics.update(accuracy=extra.pop("accuracy"), train_seconds=extra.pop("train_seconds", None),
                       eval_seconds=extra.pop("eval_seconds", None), extra=extra)
    except ChildFailed as err:
        metrics.update(status="failed", failure_reason=f"{err.reason}: {err.message}"[:500])
    except MemoryError as err:
        metrics.update(status="failed", failure_reason=f"oom: {err}"[:500])
    except Exception as err:  # noqa: BLE001 -- a child's failure is data, not a crash of the search
        last = traceback.extract_tb(err.__traceback__)[-1]
        metrics.update(status="failed", failure_reason=f"error: {type(err).__name__}: {err} "
                                                       f"({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"[:500])
    metrics["total_seconds"] = time.perf_counter() - start
    return metrics


def child_trainable(config: dict, proxy: dict, latency: list, resolution: int) -> None:
    """The Tune function trainable (bound with `tune.with_parameters`)."""
    from ray import tune

    tune.report(evaluate_child(config, proxy, latency, resolution))
