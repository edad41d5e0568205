"""What one Ray Tune trial runs: evaluate one child and report it. Thin: the work is in `workers.proxy`.

The trial process is reused across children (`reuse_actors=True`), so TensorFlow is imported once per worker,
the dataset is decoded once, and latency models (and their measurement caches) live as long as the worker.

Every outcome is reported, never raised: a child that fails reports `status: failed` with the reason code of
`workers.proxy.ChildFailed` (nan_loss, build_error, oom, ...) so the search records it and carries on. Only a
worker that dies outright reaches the searcher as a Tune error.
"""

from __future__ import annotations

import os
import random
import time
import traceback
from typing import Any, Mapping

from search.counts import count
from search.space import Architecture

_LATENCY_MODELS: dict[str, Any] = {}

# Faults a config can inject into a fraction of children, to show that a search survives them (issue: reliability).
FAULT_KINDS = ("exception", "nan_loss", "worker_death", "conversion_error")


def injected_fault(faults: Mapping[str, Any] | None, sample: int) -> str | None:
    """The fault to inject into child `sample`, or None. Deterministic in (faults.seed, sample)."""
    if not faults or not faults.get("rate"):
        return None
    rng = random.Random(f"{faults.get('seed', 0)}-{sample}")
    if rng.random() >= float(faults["rate"]):
        return None
    kinds = list(faults.get("kinds") or FAULT_KINDS)
    return kinds[rng.randrange(len(kinds))]


def check_faults(faults: Mapping[str, Any]) -> None:
    """Validates a config's `faults` section: {rate: 0..1, kinds: [...], seed: int}."""
    unknown = sorted(set(faults) - {"rate", "kinds", "seed"})
    if unknown:
        raise ValueError(f"faults: unknown setting(s) {', '.join(unknown)} (known: kinds, rate, seed)")
    rate = faults.get("rate", 0)
    if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError(f"faults: rate must be between 0 and 1, got {rate!r}")
    bad = [k for k in faults.get("kinds") or [] if k not in FAULT_KINDS]
    if bad:
        raise ValueError(f"faults: unknown kind(s) {', '.join(map(str, bad))} (known: {', '.join(FAULT_KINDS)})")


def latency_model(spec: str):
    """One latency model per backend spec and process (measured backends keep their caches)."""
    if spec not in _LATENCY_MODELS:
        from search.latency import get_latency_model

        _LATENCY_MODELS[spec] = get_latency_model(spec)
    return _LATENCY_MODELS[spec]


def evaluate_child(config: Mapping[str, Any], proxy: Mapping[str, Any], latency: list[str], resolution: int,
                   limits: Mapping[str, Any] | None = None, faults: Mapping[str, Any] | None = None) -> dict:
    """Latency of the deployment architecture, then proxy training; returns the metrics to report.

    `limits.max_params` rejects a child whose deployment model has more parameters (reason `too_large`) before
    anything is built: the way to keep children inside a worker's memory. `faults` injects failures for tests.
    """
    from workers.proxy import ChildFailed, ProxyConfig, train_child

    start = time.perf_counter()
    arch = Architecture.from_dict(config["arch"]).replace(resolution=resolution)
    metrics: dict[str, Any] = {"status": "ok", "failure_reason": None, "sample": config.get("sample")}
    fault = injected_fault(faults, int(config.get("sample", 0)))
    proxy_config = ProxyConfig.from_dict(proxy)
    try:
        max_params = (limits or {}).get("max_params")
        if max_params and count(arch).params > max_params:
            raise ChildFailed("too_large", f"{count(arch).params:,} parameters > limits.max_params {max_params:,}")
        if fault == "worker_death":
            os._exit(17)                         # the worker process dies: Tune reports the trial as errored
        if fault == "exception":
            raise RuntimeError("injected fault")
        if fault == "nan_loss":                  # a real divergence: the proxy's NaN check must catch it
            proxy_config = proxy_config.replace(learning_rate=1e30)
        tick = time.perf_counter()
        try:
            if fault == "conversion_error":
                raise RuntimeError("injected fault: TFLite conversion failed")
            metrics["latencies"] = {spec: float(latency_model(spec).latency_ms(arch, resolution)) for spec in latency}
        except (RuntimeError, OSError, ValueError) as err:
            raise ChildFailed("latency_error", f"{type(err).__name__}: {err}") from err
        metrics["latency_source"] = latency[0]
        metrics["latency_seconds"] = time.perf_counter() - tick
        result = train_child(arch, proxy_config).to_dict()
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


def child_trainable(config: dict, proxy: dict, latency: list, resolution: int, limits: dict | None = None,
                    faults: dict | None = None) -> None:
    """The Tune function trainable (bound with `tune.with_parameters`)."""
    from ray import tune

    tune.report(evaluate_child(config, proxy, latency, resolution, limits, faults))
