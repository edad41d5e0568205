"""What one Ray Tune trial runs: evaluate one child and report it. Thin: the work is in `workers.proxy`.

The trial process is reused across children (`reuse_actors=True`), so TensorFlow is imported once per worker,
the dataset is decoded once, and latency models (and their measurement caches) live as long as the worker.
With an early-stopping scheduler (ASHA) a child is evaluated in rungs, one `step()` of the trainable each.

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
from search.space import Architecture, echo

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
    kinds = faults.get("kinds") or []
    if not isinstance(kinds, list):
        raise ValueError(f"faults: kinds must be a list (known: {', '.join(FAULT_KINDS)}), got {echo(kinds)}")
    bad = [k for k in kinds if not isinstance(k, str) or k not in FAULT_KINDS]
    if bad:
        raise ValueError(f"faults: unknown kind(s) {', '.join(map(str, bad))} (known: {', '.join(FAULT_KINDS)})")


def latency_model(spec: str):
    """One latency model per backend spec and process (measured backends keep their caches)."""
    if spec not in _LATENCY_MODELS:
        from search.latency import get_latency_model

        _LATENCY_MODELS[spec] = get_latency_model(spec)
    return _LATENCY_MODELS[spec]


class ChildEvaluation:
    """One child from sampled config to reported metrics, in `rungs` steps (1 unless a scheduler prunes).

    Step 1 checks limits and injected faults, takes the deployment latency and builds the proxy model; every
    step trains its share of the proxy's steps. A step short of the last scores the child on the first
    `rung_heldout` held-out images and reports it as `status: pruned` -- what the search records if the
    scheduler stops it there; the last step scores the whole held-out slice and reports `status: ok`.
    Each report carries `score`, the search's reward on the accuracy so far, which the scheduler compares.
    A failure ends the evaluation with `status: failed` and its reason.
    """

    def __init__(self, config: Mapping[str, Any], proxy: Mapping[str, Any], latency: list[str], resolution: int,
                 limits: Mapping[str, Any] | None = None, faults: Mapping[str, Any] | None = None,
                 reward: Mapping[str, Any] | None = None, rungs: int = 1, rung_heldout: int = 1000):
        from workers.proxy import ProxyConfig

        self.arch = Architecture.from_dict(config["arch"]).replace(resolution=resolution)
        self.sample = int(config.get("sample", 0))
        self.proxy = ProxyConfig.from_dict(proxy)
        self.latency, self.resolution = list(latency), resolution
        self.limits, self.faults = dict(limits or {}), faults
        self.reward = _reward(reward, self.latency)
        self.rungs, self.rung_heldout = max(1, int(rungs)), int(rung_heldout)
        self.rung = 0
        self.done = False
        self.training = None
        self.started = time.perf_counter()
        self.metrics: dict[str, Any] = {"status": "ok", "failure_reason": None, "sample": config.get("sample")}

    def step(self) -> dict:
        """Runs the next rung; returns the metrics to report (`done` is True after the last rung or a failure)."""
        from workers.proxy import ChildFailed

        if self.done:
            raise RuntimeError("the child is already evaluated")
        metrics = self.metrics
        self.rung += 1
        try:
            if self.rung == 1:
                self._start()
            training = self.training
            training.train_to(round(training.total_steps * self.rung / self.rungs))
            if self.rung < self.rungs:
                accuracy, loss = training.score(self.rung_heldout)
                metrics.update(status="pruned", accuracy=accuracy, train_seconds=training.train_seconds,
                               extra={"rung": self.rung, "rungs": self.rungs, "rung_heldout_loss": loss,
                                      "steps": training.steps_done, "rung_heldout": self.rung_heldout})
            else:
                result = training.result().to_dict()
                extra = {k: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in result.items()}
                metrics.update(status="ok", accuracy=extra.pop("accuracy"),
                               train_seconds=extra.pop("train_seconds", None),
                               eval_seconds=extra.pop("eval_seconds", None), extra=extra)
                self.done = True
        except ChildFailed as err:
            metrics.update(status="failed", failure_reason=f"{err.reason}: {err.message}"[:500])
        except MemoryError as err:
            metrics.update(status="failed", failure_reason=f"oom: {err}"[:500])
        except Exception as err:  # noqa: BLE001 -- a child's failure is data, not a crash of the search
            last = traceback.extract_tb(err.__traceback__)[-1]
            metrics.update(status="failed", failure_reason=f"error: {type(err).__name__}: {err} "
                                                           f"({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"[:500])
        if metrics["status"] == "failed":
            metrics.pop("accuracy", None)
            self.done = True
        if self.done:
            self.close()
        metrics["score"] = self._score()
        metrics["total_seconds"] = time.perf_counter() - self.started
        metrics["done"] = self.done
        return dict(metrics)

    def _start(self) -> None:
        from workers.proxy import ChildFailed, ProxyTraining

        arch, fault = self.arch, injected_fault(self.faults, self.sample)
        max_params = self.limits.get("max_params")
        if max_params and count(arch).params > max_params:
            raise ChildFailed("too_large", f"{count(arch).params:,} parameters > limits.max_params {max_params:,}")
        if fault == "worker_death":
            os._exit(17)                         # the worker process dies: Tune reports the trial as errored
        if fault == "exception":
            raise RuntimeError("injected fault")
        proxy = self.proxy
        if fault == "nan_loss":                  # a real divergence: the proxy's NaN check must catch it
            proxy = proxy.replace(learning_rate=1e30)
        tick = time.perf_counter()
        try:
            if fault == "conversion_error":
                raise RuntimeError("injected fault: TFLite conversion failed")
            latencies = {spec: float(latency_model(spec).latency_ms(arch, self.resolution)) for spec in self.latency}
        except (RuntimeError, OSError, ValueError) as err:
            raise ChildFailed("latency_error", f"{type(err).__name__}: {err}") from err
        self.metrics.update(latencies=latencies, latency_source=self.latency[0],
                            latency_seconds=time.perf_counter() - tick)
        self.training = ProxyTraining(arch, proxy)

    def _score(self) -> float:
        """The reward on the accuracy so far (what a scheduler ranks children by); failed children score the
        search's failed reward."""
        metrics = self.metrics
        if metrics["status"] == "failed" or "accuracy" not in metrics:
            return float(self.reward.failed_reward)
        return float(self.reward(metrics["accuracy"], metrics["latencies"]))

    def close(self) -> None:
        if self.training is not None:
            self.training.close()
            self.training = None


def _reward(settings: Mapping[str, Any] | None, latency: list[str]):
    from search.config import make_reward

    return make_reward(dict(settings or {"preset": "soft", "target_ms": 75.0}), latency)


def evaluate_child(config: Mapping[str, Any], proxy: Mapping[str, Any], latency: list[str], resolution: int,
                   limits: Mapping[str, Any] | None = None, faults: Mapping[str, Any] | None = None,
                   reward: Mapping[str, Any] | None = None) -> dict:
    """Evaluates a child in one go (latency, proxy training, score); returns the metrics a trial reports.

    `limits.max_params` rejects a child whose deployment model has more parameters (reason `too_large`) before
    anything is built: the way to keep children inside a worker's memory. `faults` injects failures for tests.
    """
    evaluation = ChildEvaluation(config, proxy, latency, resolution, limits, faults, reward)
    try:
        return evaluation.step()
    finally:
        evaluation.close()


class SurrogateEvaluator:
    """Scores children with a surrogate of the proxy task instead of training them (`search.surrogate`).

    Everything else is what a trial does: the parameter limit, the deployment latency from the same backends, the
    same metrics. The accuracy is the surrogate's prediction plus, when `noisy`, the proxy's measured seed noise
    drawn from (genotype, proxy seed): like the real proxy at a fixed seed, one child always gets one score.
    Every metric says where the accuracy came from (`accuracy_source: surrogate:<file>`).
    """

    def __init__(self, surrogate, source: str, latency: list[str], resolution: int,
                 limits: Mapping[str, Any] | None = None, proxy_seed: int = 0, noisy: bool = True):
        self.surrogate, self.source = surrogate, source
        self.latency, self.resolution = list(latency), resolution
        self.limits, self.proxy_seed, self.noisy = dict(limits or {}), proxy_seed, noisy

    def __call__(self, config: Mapping[str, Any]) -> dict:
        started = time.perf_counter()
        arch = Architecture.from_dict(config["arch"]).replace(resolution=self.resolution)
        metrics: dict[str, Any] = {"status": "ok", "failure_reason": None, "sample": config.get("sample"),
                                   "accuracy_source": self.source}
        max_params = self.limits.get("max_params")
        if max_params and count(arch).params > max_params:
            return dict(metrics, status="failed", failure_reason=f"too_large: {count(arch).params:,} parameters > "
                                                                 f"limits.max_params {max_params:,}",
                        total_seconds=time.perf_counter() - started)
        tick = time.perf_counter()
        try:
            latencies = {spec: float(latency_model(spec).latency_ms(arch, self.resolution)) for spec in self.latency}
        except (RuntimeError, OSError, ValueError) as err:
            return dict(metrics, status="failed", failure_reason=f"latency_error: {type(err).__name__}: {err}"[:500],
                        total_seconds=time.perf_counter() - started)
        metrics.update(latencies=latencies, latency_source=self.latency[0], latency_seconds=time.perf_counter() - tick)
        tick = time.perf_counter()
        accuracy = self.surrogate.evaluate(arch, config["indices"], seed=self.proxy_seed, noisy=self.noisy)
        return dict(metrics, accuracy=accuracy, eval_seconds=time.perf_counter() - tick,
                    total_seconds=time.perf_counter() - started,
                    extra={"surrogate_noise": self.surrogate.noise if self.noisy else 0.0})


def make_child_trainable():
    """The Tune class trainable: one `ChildEvaluation` per trial, one rung per `step()`.

    A class rather than a function trainable so that a scheduler's STOP lands between rungs, with nothing
    left running, and the actor is reused at once for the next child (`reset_config`). Built in a function
    so that importing this module does not import Ray.
    """
    from ray import tune

    class ChildTrainable(tune.Trainable):
        def setup(self, config, proxy, latency, resolution, limits=None, faults=None, reward=None,
                  rungs=1, rung_heldout=1000):
            self._settings = dict(proxy=proxy, latency=latency, resolution=resolution, limits=limits,
                                  faults=faults, reward=reward, rungs=rungs, rung_heldout=rung_heldout)
            self._evaluation = ChildEvaluation(config, **self._settings)

        def step(self):
            return self._evaluation.step()

        def reset_config(self, new_config):
            self._evaluation.close()
            self._evaluation = ChildEvaluation(new_config, **self._settings)
            return True

        def cleanup(self):
            self._evaluation.close()

    return ChildTrainable
