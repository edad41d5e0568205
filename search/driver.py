"""The search loop without the engine: proposals out, finished children in, state saved after each one.

`SearchRun` is what the Ray Tune searcher (`search.tune`) delegates to, and what tests drive without Ray. It
owns the bookkeeping that makes a search survive crashes:

* every proposal is written to the run's state before it is handed out (write-ahead), and every finished child
  goes to the results store first (one SQLite transaction), then to the strategy, then the run's state (strategy
  state, proposals in flight, counters) is written atomically to `searcher_state.json`;
* on resume, a child that is in the store but still listed in flight (the driver died between the two writes)
  is replayed into the strategy from the store; a child in flight that never finished is proposed again, with
  the same genotype and log-probability, under a new trial id. So no finished child is lost or evaluated twice
  and the strategy continues exactly where it stopped.

Failed children get the reward's documented `failed_reward` and a recorded reason; they are fed to the strategy
like any other child (the controller learns to avoid what breaks) unless `feed_failures` is off. Children an
early-stopping scheduler stopped (`pruned`) are recorded and fed with the reward on the accuracy they had reached:
an underestimate, but of children that were already behind their peers at the same point of training.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import os
import time
from typing import Any, Callable, Mapping

from mnas.search import fileio
from mnas.search.counts import count
from mnas.search.failures import Failure, detail, failure
from mnas.search.settings import OPTIONAL_POSITIVE_INT, POSITIVE_INT, setting, validate
from mnas.search.arch import Architecture
from mnas.search.space import SearchSpace
from mnas.search.strategy import Proposal

STATE_FILE = "searcher_state.json"
STATE_VERSION = 1
CRASH_ENV = "MNAS_CRASH_AT"
CRASH_MODE_ENV = "MNAS_CRASH_MODE"
_crash_hits: dict[str, int] = {}


class SimulatedCrash(BaseException):
    """What a crash point raises instead of killing the process when MNAS_CRASH_MODE=raise: a test then crashes
    the driver in its own process, throws the driver's objects away and resumes from the files, as a new process
    would. A BaseException, so that no `except Exception` of the driver catches it."""


def crash_point(name: str) -> None:
    """Kills this process with SIGKILL at a named moment, when `MNAS_CRASH_AT=name:N` asks for its N-th pass
    (with MNAS_CRASH_MODE=raise, raises SimulatedCrash there instead).

    The crash-and-resume tests use it to stop the driver at exact moments (before a child is stored, between
    the store and the state file, in a PPO update, while the state is written); unset, it costs a dict lookup.
    """
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    _crash_hits[name] = _crash_hits.get(name, 0) + 1
    if wanted == f"{name}:{_crash_hits[name]}":
        if os.environ.get(CRASH_MODE_ENV) == "raise":
            raise SimulatedCrash(wanted)
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def write_json_atomic(path: str, data: Any) -> None:
    """The run's JSON files (numpy arrays allowed), written atomically; a test may kill the process mid-write."""
    fileio.write_json_atomic(path, data, default=_jsonable, before_replace=lambda: crash_point("save"))


def _jsonable(value):
    import numpy as np  # state from the controller holds numpy arrays

    if isinstance(value, np.ndarray):
        # Raw bytes in base64: exact, and one string for the JSON encoder instead of a list of floats a number
        # (the controller's weights and optimizer moments made the state file 7 MB of digits, encoded twice a child).
        return {"__ndarray__": base64.b64encode(value.tobytes(order="C")).decode("ascii"), "dtype": str(value.dtype),
                "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in the searcher state")


def _array(value: dict):
    """The numpy array `_jsonable` wrote as a mapping; any other mapping as it is."""
    if "__ndarray__" not in value:
        return value
    import numpy as np

    data = value["__ndarray__"]
    if isinstance(data, str):
        raw = np.frombuffer(base64.b64decode(data), dtype=value["dtype"])
        return raw.reshape(value["shape"]).copy()
    return np.asarray(data, dtype=value["dtype"])      # a state written before base64 (a list)


def read_json(path: str) -> Any:
    """A JSON file of the run (numpy arrays decoded); ValueError in one line if missing or unreadable."""
    return fileio.read_json(path, object_hook=_array)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass(frozen=True)
class Deployment:
    """What the phone runs: a child is built once with these applied, and that one object is sent to the worker
    (latency), counted (params, multiply-adds) and recorded.

    Attributes:
        resolution: input size of the deployed model; None keeps the search space's.
        num_classes, input_channels: of the deployment task, for the analytic params and multiply-adds.
    """

    resolution: int | None = setting(None, OPTIONAL_POSITIVE_INT)
    num_classes: int = setting(1000, POSITIVE_INT)
    input_channels: int = setting(3, POSITIVE_INT)

    def __post_init__(self):
        validate(self, "deploy", section=True)

    def child(self, space: SearchSpace, indices) -> Architecture:
        arch = space.decode(indices)
        return arch if self.resolution is None else arch.replace(resolution=self.resolution)


class SearchRun:
    """Proposes children, records finished ones, feeds the strategy, and saves state after each.

    Args:
        space: the search space (decodes genotypes into architectures).
        strategy: a `search.strategy` object (mnas controller, random, ...).
        reward: a callable (accuracy, {latency source: ms}) -> reward, with a `failed_reward` attribute.
        store: a `results.store.ResultStore` opened for writing.
        samples: how many children the search evaluates in all.
        run_dir: where `searcher_state.json` lives (None: state is kept in memory only).
        deployment: what the phone runs (resolution, classes, channels), applied to every child.
        max_consecutive_failures: stop proposing when this many children in a row failed (0: never).
        on_record: called with each stored record and a summary dict (progress display).
        clock: seconds, for the driver's own timings (`summary()['timings']`); tests pass a fake one.
    """

    def __init__(self, space: SearchSpace, strategy, reward, store, samples: int, run_dir: str | None = None,
                 deployment: Deployment = Deployment(), feed_failures: bool = True,
                 max_consecutive_failures: int = 0, on_record: Callable[[dict, dict], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        if samples < 1:
            raise ValueError(f"samples must be a positive integer, got {samples}")
        self.space, self.strategy, self.reward, self.store, self.clock = space, strategy, reward, store, clock
        self.samples, self.run_dir, self.deployment = samples, run_dir, deployment
        self.feed_failures, self.on_record = feed_failures, on_record
        self.max_consecutive_failures = max_consecutive_failures
        self.consecutive_failures = 0
        self.stopped: str | None = None     # why the search stopped proposing before `samples`, if it did
        self.issued = 0
        self.in_flight: dict[str, dict] = {}
        self.children: dict[str, Architecture] = {}   # trial id -> the child built at proposal, until recorded
        self.retry: list[dict] = []
        self.best_reward: float | None = None
        self.last_stats: dict = {}
        self.started = time.time()
        # Where the driver's own time goes (seconds, this process since it started): what the search costs beyond
        # its children: proposing (the controller's sampling), observing (its PPO updates), the store, the state.
        self.timings = {"propose": 0.0, "observe": 0.0, "store": 0.0, "state": 0.0}

    # ------------------------------------------------------------------------------------------- proposals
    @property
    def finished(self) -> bool:
        """Nothing left to propose (children may still be running)."""
        return self.stopped is not None or (not self.retry and self.issued >= self.samples)

    @property
    def completed(self) -> int:
        return self.store.count()

    def next_config(self, trial_id: str) -> dict | None:
        """The config of the next child for `trial_id`, or None when every sample has been proposed (or the
        search stopped after too many failures in a row)."""
        if self.stopped is not None:
            return None
        if self.retry:
            entry = self.retry.pop(0)
        elif self.issued < self.samples:
            tick = self.clock()
            proposal = self.strategy.propose()
            self.timings["propose"] += self.clock() - tick
            entry = {"sample": self.issued, "indices": list(proposal.indices), "log_prob": proposal.log_prob,
                     "step": proposal.step, "started_at": _now()}
            self.issued += 1
        else:
            return None
        entry = dict(entry, started_at=_now())
        arch = self.deployment.child(self.space, entry["indices"])
        self.in_flight[trial_id] = entry
        self.children[trial_id] = arch
        self.save()   # write-ahead: a child that finishes is always one the saved state knows
        return {"arch": arch.to_dict(), "indices": entry["indices"], "sample": entry["sample"],
                "controller_step": entry["step"]}

    # ------------------------------------------------------------------------------------------- results
    def complete(self, trial_id: str, result: Mapping[str, Any] | None,
                 error: tuple[Failure, str] | None = None) -> dict | None:
        """Records a finished child (ok or failed) and feeds the strategy. Unknown trial ids are ignored.

        `error` is (code, detail) when the engine saw the trial fail without a report of its own.
        """
        entry = self.in_flight.get(trial_id)
        if entry is None:
            return None
        record = self._record(trial_id, entry, dict(result or {}), error)
        crash_point("store")
        tick = self.clock()
        self.store.add_child(record)
        self.timings["store"] += self.clock() - tick
        crash_point("feed")
        self._feed(entry, record)
        del self.in_flight[trial_id]
        self.children.pop(trial_id, None)
        self._count_failure(record)
        self.save()
        if self.on_record is not None:
            self.on_record(record, self.summary())
        return record

    def _count_failure(self, record: dict) -> None:
        """Stops proposing after `max_consecutive_failures` failed children in a row (in completion order)."""
        self.consecutive_failures = self.consecutive_failures + 1 if record["status"] == "failed" else 0
        limit = self.max_consecutive_failures
        if limit and self.consecutive_failures >= limit and self.stopped is None:
            self.stopped = (f"the last {self.consecutive_failures} children all failed (the last: "
                            f"{record['failure_code']}: {record['failure_detail'] or 'no detail'}); something "
                            "breaks every child: fix it, then resume (limits.max_consecutive_failures: "
                            f"{limit}, 0 never stops)")

    def _record(self, trial_id: str, entry: dict, result: dict, error: tuple[Failure, str] | None) -> dict:
        arch = self.children.get(trial_id) or self.deployment.child(self.space, entry["indices"])
        deployment = self.deployment
        counts = count(arch, deployment.num_classes, deployment.input_channels)
        status = result.get("status", "ok")
        code, why = result.get("failure_code"), result.get("failure_detail")
        if error is not None:
            status, (code, why) = "failed", error
        latencies = {str(k): float(v) for k, v in (result.get("latencies") or {}).items()}
        accuracy = result.get("accuracy")
        primary = result.get("latency_source") or (next(iter(latencies)) if latencies else None)
        if status == "pruned" and accuracy is None:
            status, code, why = "failed", Failure.BAD_RESULT, "a pruned child reported no accuracy"
        if status in ("ok", "pruned") and (primary is None or primary not in latencies):
            status, code = "failed", Failure.NO_LATENCY
            why = f"the worker reported no {primary or 'latency'} measurement"
        reward = None
        if status in ("ok", "pruned"):   # pruned: the reward on the accuracy at the rung where it was stopped
            try:
                reward = float(self.reward(accuracy, latencies))
            except (TypeError, ValueError) as err:
                status, code, why = "failed", Failure.BAD_RESULT, str(err)
        if status == "failed":
            reward = float(self.reward.failed_reward)
            try:
                code = failure(code).value
            except ValueError:                       # a worker of another version: keep what it said
                code, why = Failure.UNEXPECTED_ERROR.value, f"{code}: {why}"
            why = detail(why or "")
        else:
            code = why = None
        extra = {"log_prob": entry.get("log_prob"), **(result.get("extra") or {})}
        source = (result.get("accuracy_source") or "proxy") if accuracy is not None else None
        return {
            "trial_id": trial_id, "sample": entry["sample"], "controller_step": entry["step"],
            "strategy": self.strategy.name, "arch": " ".join(arch.block_strings), "indices": entry["indices"],
            "accuracy": None if accuracy is None else float(accuracy),
            "latency_ms": latencies.get(primary), "latency_source": primary,
            "latencies": latencies, "reward": reward, "params": counts.params, "madds": counts.madds,
            "status": status, "failure_code": code, "failure_detail": why,
            "train_seconds": result.get("train_seconds"), "eval_seconds": result.get("eval_seconds"),
            "latency_seconds": result.get("latency_seconds"), "total_seconds": result.get("total_seconds"),
            "started_at": entry.get("started_at"), "finished_at": _now(), "extra": extra,
            "accuracy_source": source,
        }

    def _feed(self, entry: dict, record: dict) -> None:
        if record["status"] == "ok" and (self.best_reward is None or record["reward"] > self.best_reward):
            self.best_reward = record["reward"]
        if record["status"] == "failed" and not self.feed_failures:
            return
        proposal = Proposal(tuple(entry["indices"]), entry.get("log_prob"), entry.get("step", 0))
        tick = self.clock()
        stats = self.strategy.observe(proposal, record["reward"])
        self.timings["observe"] += self.clock() - tick
        if stats:
            crash_point("update")
            self.last_stats = dict(stats)
            self.store.add_controller_stats(int(stats.get("step", self.strategy.step)), self.last_stats)

    def summary(self) -> dict:
        done = self.completed
        elapsed = time.time() - self.started
        failed = self.store.count(status="failed")
        pruned = self.store.count(status="pruned")
        return {"done": done, "samples": self.samples, "failed": failed, "pruned": pruned,
                "best_reward": self.best_reward, "stopped": self.stopped,
                "entropy": self.last_stats.get("entropy"), "step": self.strategy.step, "elapsed": elapsed,
                "in_flight": len(self.in_flight), "timings": dict(self.timings)}

    # ------------------------------------------------------------------------------------------- state
    def state(self) -> dict:
        return {"version": STATE_VERSION, "strategy_name": self.strategy.name, "samples": self.samples,
                "issued": self.issued, "in_flight": self.in_flight, "retry": self.retry,
                "best_reward": self.best_reward, "last_stats": self.last_stats,
                "strategy": self.strategy.get_state()}

    def save(self, path: str | None = None) -> None:
        path = path or (os.path.join(self.run_dir, STATE_FILE) if self.run_dir else None)
        if path:
            tick = self.clock()
            write_json_atomic(path, self.state())
            self.timings["state"] += self.clock() - tick

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continues from a saved state; reconciles it with the store (see the module docstring)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"searcher state version {state.get('version')!r} is not {STATE_VERSION}")
        if state.get("strategy_name") != self.strategy.name:
            raise ValueError(f"the run was searched with strategy {state.get('strategy_name')!r}, "
                             f"not {self.strategy.name!r}")
        self.strategy.set_state(state["strategy"])
        self.issued = int(state["issued"])
        self.samples = max(self.samples, self.issued)
        self.best_reward = state.get("best_reward")
        self.last_stats = dict(state.get("last_stats") or {})
        self.retry = list(state.get("retry") or [])
        # A resume is a new chance: children that keep failing stop it again after the limit, not at once.
        self.consecutive_failures = 0
        self.in_flight = {}
        for trial_id, entry in sorted((state.get("in_flight") or {}).items(), key=lambda kv: kv[1]["sample"]):
            row = self.store.child(trial_id)
            if row is None:
                self.retry.append(entry)       # never finished: propose the same child again
            else:
                self._feed(entry, row)         # finished and stored, but the state was not saved after it
        self.retry.sort(key=lambda e: e["sample"])
        self.save()

    def load(self, path: str | None = None) -> None:
        path = path or os.path.join(self.run_dir or ".", STATE_FILE)
        folder = os.path.dirname(os.path.abspath(path))
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            if name.startswith(".tmp-") and name.endswith(".part"):   # a state write the crash interrupted
                os.unlink(os.path.join(folder, name))
        if not os.path.isfile(path):
            raise ValueError(f"cannot resume: no {STATE_FILE} in {os.path.dirname(path) or '.'}")
        try:
            state = read_json(path)
        except ValueError as err:
            raise ValueError(f"cannot resume: {path} is unreadable ({err})") from None
        self.restore(state)


def run_in_process(run: SearchRun, evaluate: Callable[[dict], dict]) -> None:
    """The search without an engine: propose, evaluate in this process, record, until nothing is left.

    For evaluations that take milliseconds (a surrogate of the proxy), where starting Ray and a trial per child
    would cost a hundred times the work. Trial ids are unique per proposal, so a resumed run never reuses one.
    """
    import uuid

    while not run.finished:
        trial_id = f"local-{uuid.uuid4().hex[:10]}"
        config = run.next_config(trial_id)
        if config is None:
            break
        run.complete(trial_id, evaluate(config))
