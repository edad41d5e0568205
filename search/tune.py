"""Thin glue to Ray Tune: the search as a `ray.tune.search.Searcher`, children as Tune trials.

All the logic lives in `search.driver.SearchRun` (tested without Ray); this adapter maps Tune's calls onto it:
`suggest` -> `next_config`, `on_trial_complete` -> `complete`, `save`/`restore` -> the run's explicit state,
written atomically.
"""

from __future__ import annotations

import os
import sys
import tempfile

from ray.tune.search import Searcher

from mnas.search.driver import SearchRun, read_json, write_json_atomic
from mnas.search.failures import Failure
from mnas.search.arch import echo


class MnasSearcher(Searcher):
    """A Tune searcher that proposes the children of a `SearchRun` and records them as they finish."""

    def __init__(self, run: SearchRun):
        super().__init__(metric=None, mode=None)  # the reward is computed here, from what the trial reports
        self.run = run

    def __getstate__(self):
        # Tune pickles its searcher into the experiment folder for `Tuner.restore`. The run holds a database
        # connection and the controller; its state is already saved explicitly (searcher_state.json, restored by
        # `mnas search --resume`), so the pickle carries only that state.
        state = self.__dict__.copy()
        state["run"] = None
        state["saved_state"] = self.run.state() if self.run is not None else None
        return state

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the reward is ours: Tune's metric/mode settings do not apply

    def suggest(self, trial_id: str):
        if self.run.finished:
            return Searcher.FINISHED
        return self.run.next_config(trial_id)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        failed = None
        if error:
            failed = (Failure.WORKER_ERROR, "see the Tune trial's error.txt")
        elif not result or "accuracy" not in result and result.get("status", "ok") == "ok":
            failed = (Failure.NO_RESULT, "")
        self.run.complete(trial_id, _unflatten(result or {}), failed)

    def save(self, checkpoint_path: str) -> None:
        write_json_atomic(checkpoint_path, self.run.state())

    def restore(self, checkpoint_path: str) -> None:
        self.run.restore(read_json(checkpoint_path))


def init_ray(address: str | None, num_cpus: int | None, temp_dir: str | None = None) -> None:
    """Starts a local Ray cluster (`ray.init()`), or joins the one at `address` (e.g. 'auto', 'host:6379')."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Worker output stays in Ray's session logs; trials' errors land in their Tune folders.
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
              "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
        return
    ray.init(num_cpus=num_cpus, _temp_dir=ray_temp_dir(temp_dir), **kwargs)


# Ray puts its sockets at <temp>/session_<date>_<time>_<microseconds>_<pid>/sockets/plasma_store; a Unix socket's
# path holds at most 107 bytes on Linux (103 on macOS).
_SOCKET_TAIL = len("/session_2024-01-01_12-00-00_123456_4194304/sockets/plasma_store")
_SOCKET_PATH_MAX = 103 if sys.platform == "darwin" else 107


def ray_temp_dir(temp_dir: str | None = None) -> str:
    """The folder a local Ray cluster keeps its session in: `temp_dir`, else $MNAS_RAY_TMPDIR, else the system's
    temporary folder, plus 'mnas-ray' (short: Ray's socket paths must fit in a Unix socket's address).

    Raises:
        ValueError: the folder is a file, or so long a path that Ray's sockets would not fit -- said here, before
            Ray starts, rather than as Ray's OSError from deep inside ray.init().
    """
    given = temp_dir or os.environ.get("MNAS_RAY_TMPDIR")
    where = "MNAS_RAY_TMPDIR" if given and not temp_dir else "Ray's temporary folder"
    folder = os.path.join(os.path.abspath(given or tempfile.gettempdir()), "mnas-ray")
    existing = folder
    while not os.path.exists(existing):  # Ray creates the missing folders: the first one that exists must be one
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{where} {echo(os.path.dirname(folder))} cannot hold Ray's session: {echo(existing)} is "
                         "a file, not a folder")
    if len(os.fsencode(folder)) + _SOCKET_TAIL > _SOCKET_PATH_MAX:
        raise ValueError(f"{where} {echo(os.path.dirname(folder))} is too long a path for Ray's sockets: use one "
                         f"of at most {_SOCKET_PATH_MAX - _SOCKET_TAIL - len('/mnas-ray')} characters (e.g. "
                         "MNAS_RAY_TMPDIR=/tmp)")
    return folder


def make_scheduler(settings):
    """The Tune trial scheduler of a config's `scheduler` section (`search.config.Scheduler`): None for 'none'
    (Tune's FIFO: every child trains fully), or ASHA over the children's rungs."""
    if settings is None or settings.name == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # time_attr counts the trainable's step() calls: one per rung. `score` is the reward on the accuracy so far.
    return ASHAScheduler(time_attr="training_iteration", metric="score", mode="max", max_t=settings.rungs,
                         grace_period=settings.grace_rungs, reduction_factor=settings.reduction_factor)


def placement(cpus: float, gpus: float = 0.0) -> int:
    """How many children needing `cpus` CPUs and `gpus` GPUs each the running Ray cluster holds at once.

    Raises:
        ValueError: no node can hold even one (Tune would wait for it forever), naming the largest node.
    """
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    per_node = [min(int(res.get("CPU", 0) / cpus + 1e-9), int(res.get("GPU", 0) / gpus + 1e-9) if gpus else 1 << 30)
                for res in nodes]
    if not per_node or max(per_node) == 0:
        most_cpus = max((res.get("CPU", 0) for res in nodes), default=0)
        most_gpus = max((res.get("GPU", 0) for res in nodes), default=0)
        raise ValueError(f"no node of the Ray cluster can run a child that needs {cpus:g} CPU(s) and {gpus:g} GPU(s) "
                         f"(the largest have {most_cpus:g} CPUs and {most_gpus:g} GPUs): lower cpus_per_worker / "
                         "gpus_per_worker (--cpus-per-worker, --gpus-per-worker), or join a cluster that has them "
                         "with --address")
    return sum(per_node)


def run_trials(run: SearchRun, trainable, workers: int, cpus_per_worker: float, storage_path: str,
               name: str, gpus_per_worker: float = 0.0, scheduler=None):
    """Runs the search's children as Tune trials until the run has none left to propose. A child gets
    `cpus_per_worker` CPUs and `gpus_per_worker` GPUs (a fraction shares a GPU); Ray sets CUDA_VISIBLE_DEVICES
    in its worker to the GPUs it assigned."""
    from ray import tune

    resources = {"cpu": cpus_per_worker, "gpu": gpus_per_worker}
    # Ctrl-C reaches the search as KeyboardInterrupt, which says how to --resume; Tune's own handler would stop
    # gracefully and advise `Tuner.restore(...)`, which is not how an MNAS run continues.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # Each trial's result.json and progress.csv, but not Tune's TensorBoard files: the results store has every
    # child, and tensorboardX's writer thread could hang the interpreter's exit after a Ctrl-C (its atexit
    # cleanup joined a thread blocked on a queue that no one fed any more: seen as a search that printed how to
    # resume, then never exited).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(search_alg=MnasSearcher(run), num_samples=max(1, run.samples - run.completed),
                                    max_concurrent_trials=workers, reuse_actors=True, scheduler=scheduler,
                                    trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0,
                                  # A trial whose worker process or node dies is retried (twice) on another
                                  # worker: a lost node costs time, not children. Errors inside a child are
                                  # reported as failed children by the trainable and never retried.
                                  failure_config=tune.FailureConfig(max_failures=2, fail_fast=False),
                                  # A retried child starts over (it has no checkpoint). Tune's default for a
                                  # class trainable is to save one at the end, which would call the
                                  # unimplemented save_checkpoint and fail every child.
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                                  callbacks=[JsonLoggerCallback(), CSVLoggerCallback()], log_to_file=True))
    return tuner.fit()


def _unflatten(result: dict) -> dict:
    """Tune flattens nested metrics ('latencies/pixel1'); the run expects the nested dicts back."""
    out: dict = {}
    for key, value in result.items():
        head, sep, tail = key.partition("/")
        if sep and head in ("latencies", "extra"):
            out.setdefault(head, {})[tail] = value
        else:
            out[key] = value
    return out


def _trial_name(trial) -> str:
    sample = trial.config.get("sample", "")
    return f"child-{sample}-{trial.trial_id}"
