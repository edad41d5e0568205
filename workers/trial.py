"""What one Ray Tune trial runs: evaluate one child and report it. Thin: the work is in `workers.proxy`.

The trial process is reused across children (`reuse_actors=True`), so TensorFlow is imported once per worker,
the dataset is decoded once, and latency models (and their measurement caches) live as long as the worker.
With an early-stopping scheduler (ASHA) a child is evaluated in rungs, one `step()` of the trainable each.

What a worker needs arrives built (`TrialSettings`: the proxy's config, the search's reward object, the latency
backends) and the child arrives as the deployment architecture the driver built once; nothing is parsed again here.

Every outcome is reported, never raised: a child that fails reports `status: failed` with a `failure_code` of
`search.failures` (nan_loss, build_error, oom, ...) and a `failure_detail`, so the search records it and carries
on. Only a worker that dies outright reaches the searcher as a Tune error.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import random
import sys
import time
import traceback
from typing import Any, Mapping

from mnas.search.counts import count
from mnas.search.failures import ChildFailed, Failure, detail
from mnas.search.arch import Architecture, echo
from mnas.search.config import Limits

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


EVENTS_ENV = "MNAS_EVENTS_DIR"


def mark(event: str, sample: int) -> None:
    """Creates `$MNAS_EVENTS_DIR/<event>-<sample>` when that variable is set, so that a test can wait for a named
    moment of a child (say, its training has begun) instead of sleeping; unset, it costs an environment lookup."""
    folder = os.environ.get(EVENTS_ENV)
    if folder:
        with open(os.path.join(folder, f"{event}-{sample}"), "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n")


def assigned_gpus() -> list[str]:
    """The GPUs Ray assigned to this worker ([] outside Ray, or for a CPU-only child).

    Ray points CUDA_VISIBLE_DEVICES at the GPUs it assigned a worker that asked for some, so TensorFlow sees those
    alone. A worker that asked for none is hidden from every GPU here, before TensorFlow starts (whether Ray clears
    the variable for such workers depends on its version and settings): a CPU child must not take a GPU's memory
    from the children that were given it."""
    if "ray" not in sys.modules:
        return []
    import ray

    if not ray.is_initialized():
        return []
    ids = [str(gpu) for gpu in ray.get_gpu_ids()]
    if not ids and "tensorflow" not in sys.modules:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return ids


def latency_model(spec: str):
    """One latency model per backend spec and process (measured backends keep their caches)."""
    if spec not in _LATENCY_MODELS:
        from mnas.measure import get_latency_model

        _LATENCY_MODELS[spec] = get_latency_model(spec)
    return _LATENCY_MODELS[spec]


@dataclasses.dataclass(frozen=True)
class TrialSettings:
    """What every child of a search is evaluated with, built once in the driver's process and shipped to workers.

    Attributes:
        proxy: the proxy task (`search.proxy.ProxyConfig`).
        reward: the search's `search.reward.Reward` (a scheduler compares children by it).
        latency: the latency backends; the first is the reward's LAT(m).
        limits: `limits.max_params` rejects a larger child (`too_large`) before anything is built.
        faults: failures to inject into a fraction of children (`injected_fault`), for tests.
        rungs, rung_heldout: a child's training in `rungs` segments, scored on the first `rung_heldout` held-out
            images after each but the last (early stopping); 1 rung trains it in one go.
    """

    proxy: Any
    reward: Any
    latency: tuple[str, ...] = ("pixel1",)
    limits: Limits = Limits()
    faults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    rungs: int = 1
    rung_heldout: int = 1000

    def measure(self, arch: Architecture) -> dict[str, float]:
        """The deployment latency of `arch` on every backend (ChildFailed latency_error if one cannot)."""
        try:
            return {spec: float(latency_model(spec).latency_ms(arch, arch.resolution)) for spec in self.latency}
        except (RuntimeError, OSError, ValueError) as err:
            raise ChildFailed(Failure.LATENCY_ERROR, f"{type(err).__name__}: {err}") from err

    def doubt(self, arch: Architecture) -> dict:
        """{backend: how far `arch` lies from what the backend was fitted on} for the predictors that can say
        (`CalibratedPredictor.uncertainty`: leverage ratio, `extrapolating`, an interval); stored in the child's
        `extra` as `latency_uncertainty`, so a user knows which children to measure rather than trust."""
        found = {}
        for spec in self.latency:
            model = latency_model(spec)
            value = model.uncertainty([arch], arch.resolution)[0] if hasattr(model, "uncertainty") else None
            if value is not None:
                found[spec] = value
        return found

    def check_size(self, arch: Architecture) -> None:
        max_params = self.limits.max_params
        if max_params and count(arch).params > max_params:
            raise ChildFailed(Failure.TOO_LARGE, f"{count(arch).params:,} parameters > limits.max_params "
                                                 f"{max_params:,}")


def _failed(metrics: dict, code: Failure, text: object) -> dict:
    metrics.update(status="failed", failure_code=code.value, failure_detail=detail(text))
    return metrics


class ChildEvaluation:
    """One child from sampled config to reported metrics, in `settings.rungs` steps (1 unless a scheduler prunes).

    Step 1 checks limits and injected faults, takes the deployment latency and builds the proxy model; every
    step trains its share of the proxy's steps. A step short of the last scores the child on the first
    `rung_heldout` held-out images and reports it as `status: pruned` -- what the search records if the
    scheduler stops it there; the last step scores the whole held-out slice and reports `status: ok`.
    Each report carries `score`, the search's reward on the accuracy so far, which the scheduler compares.
    A failure ends the evaluation with `status: failed` and its code.
    """

    def __init__(self, config: Mapping[str, Any], settings: TrialSettings):
        self.arch = Architecture.from_dict(config["arch"])     # the deployment child, as the driver built it
        self.sample = int(config.get("sample", 0))
        self.settings = settings
        self.rungs = max(1, int(settings.rungs))
        self.rung = 0
        self.done = False
        self.training = None
        self.started = time.perf_counter()
        self.run_extra: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {"status": "ok", "failure_code": None, "failure_detail": None,
                                        "sample": config.get("sample")}

    def step(self) -> dict:
        """Runs the next rung; returns the metrics to report (`done` is True after the last rung or a failure)."""
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
                heldout = self.settings.rung_heldout
                accuracy, loss = training.score(heldout)
                metrics.update(status="pruned", accuracy=accuracy, train_seconds=training.train_seconds,
                               extra={"rung": self.rung, "rungs": self.rungs, "rung_heldout_loss": loss,
                                      "steps": training.steps_done, "rung_heldout": heldout, **self.run_extra})
            else:
                result = training.result().to_dict()
                extra = {k: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in result.items()}
                metrics.update(status="ok", accuracy=extra.pop("accuracy"),
                               train_seconds=extra.pop("train_seconds", None),
                               eval_seconds=extra.pop("eval_seconds", None), extra={**extra, **self.run_extra})
                self.done = True
        except ChildFailed as err:
            _failed(metrics, err.code, err.message)
        except MemoryError as err:
            _failed(metrics, Failure.OOM, err)
        except Exception as err:  # noqa: BLE001 -- a child's failure is data, not a crash of the search
            last = traceback.extract_tb(err.__traceback__)[-1]
            _failed(metrics, Failure.UNEXPECTED_ERROR,
                    f"{type(err).__name__}: {err} ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})")
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
        from mnas.workers.proxy import ProxyTraining

        arch, settings, fault = self.arch, self.settings, injected_fault(self.settings.faults, self.sample)
        settings.check_size(arch)
        if fault == "worker_death":
            os._exit(17)                         # the worker process dies: Tune reports the trial as errored
        if fault == "exception":
            raise RuntimeError("injected fault")
        proxy = settings.proxy
        if fault == "nan_loss":                  # a real divergence: the proxy's NaN check must catch it
            proxy = proxy.replace(learning_rate=1e30)
        tick = time.perf_counter()
        if fault == "conversion_error":
            raise ChildFailed(Failure.LATENCY_ERROR, "RuntimeError: injected fault: TFLite conversion failed")
        self.metrics.update(latencies=settings.measure(arch), latency_source=settings.latency[0],
                            latency_seconds=time.perf_counter() - tick)
        doubt = settings.doubt(arch)
        self.run_extra = {"latency_uncertainty": doubt} if doubt else {}
        gpus = assigned_gpus()
        # where the child ran: with several nodes or GPUs, a slow or failing one shows in the results
        self.run_extra["worker"] = f"{platform.node()}:{os.getpid()}"
        if gpus:
            self.run_extra["gpus"] = ",".join(gpus)
        self.training = ProxyTraining(arch, proxy)
        mark("training", self.sample)

    def _score(self) -> float:
        """The reward on the accuracy so far (what a scheduler ranks children by); failed children score the
        search's failed reward."""
        metrics, reward = self.metrics, self.settings.reward
        if metrics["status"] == "failed" or "accuracy" not in metrics:
            return float(reward.failed_reward)
        return float(reward(metrics["accuracy"], metrics["latencies"]))

    def close(self) -> None:
        if self.training is not None:
            self.training.close()
            self.training = None


def evaluate_child(config: Mapping[str, Any], settings: TrialSettings) -> dict:
    """Evaluates a child in one go (latency, proxy training, score); returns the metrics a trial reports."""
    evaluation = ChildEvaluation(config, settings)
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

    def __init__(self, surrogate, source: str, settings: TrialSettings, proxy_seed: int = 0, noisy: bool = True):
        self.surrogate, self.source, self.settings = surrogate, source, settings
        self.proxy_seed, self.noisy = proxy_seed, noisy

    def __call__(self, config: Mapping[str, Any]) -> dict:
        started = time.perf_counter()
        arch = Architecture.from_dict(config["arch"])
        metrics: dict[str, Any] = {"status": "ok", "failure_code": None, "failure_detail": None,
                                   "sample": config.get("sample"), "accuracy_source": self.source}
        try:
            self.settings.check_size(arch)
            tick = time.perf_counter()
            metrics.update(latencies=self.settings.measure(arch), latency_source=self.settings.latency[0],
                           latency_seconds=time.perf_counter() - tick)
        except ChildFailed as err:
            return dict(_failed(metrics, err.code, err.message), total_seconds=time.perf_counter() - started)
        extra = {"surrogate_noise": self.surrogate.noise if self.noisy else 0.0}
        doubt = self.settings.doubt(arch)
        if doubt:
            extra["latency_uncertainty"] = doubt
        tick = time.perf_counter()
        accuracy = self.surrogate.evaluate(arch, config["indices"], seed=self.proxy_seed, noisy=self.noisy)
        return dict(metrics, accuracy=accuracy, eval_seconds=time.perf_counter() - tick,
                    total_seconds=time.perf_counter() - started, extra=extra)


def make_child_trainable():
    """The Tune class trainable: one `ChildEvaluation` per trial, one rung per `step()`.

    A class rather than a function trainable so that a scheduler's STOP lands between rungs, with nothing
    left running, and the actor is reused at once for the next child (`reset_config`). Built in a function
    so that importing this module does not import Ray.
    """
    from ray import tune

    class ChildTrainable(tune.Trainable):
        def setup(self, config, settings: TrialSettings):
            self._settings = settings
            self._evaluation = ChildEvaluation(config, settings)

        def step(self):
            return self._evaluation.step()

        def reset_config(self, new_config):
            self._evaluation.close()
            self._evaluation = ChildEvaluation(new_config, self._settings)
            return True

        def cleanup(self):
            self._evaluation.close()

    return ChildTrainable
