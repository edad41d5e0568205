"""`mnas train --workers N`: one replay across N processes, on one machine or many, with Ray Train.

Ray Train's `TensorflowTrainer` starts N workers (one GPU each on a GPU cluster, or `--devices` GPUs each; a
CPU otherwise) and writes TF_CONFIG into each, which `tf.distribute.MultiWorkerMirroredStrategy` reads; every
worker then runs `trainer.train.train` under that strategy (trainer.distributed): the same recipe, the same
checkpoint, `--batch-size` still the global batch. The driver (the `mnas train` process) checks everything it
can before Ray starts, writes the run directory's config.json, waits, and exports at the end.

The run directory is the one source of truth, as on one device. Worker 0 (the chief) evaluates, logs and writes
it -- config.json, checkpoint.npz after every epoch (the format of trainer.checkpoint, written atomically),
metrics.csv, TensorBoard, summary.json; every worker restores from its checkpoint.npz when it starts. So `--out`
must be a folder every node sees at the same path (one machine: any folder; a cluster: a shared file system, as
Ray Train's own storage needs), and the data set must be at the same path on every node. Ray Train keeps its own
small state in OUT/ray_train/.

Failures. A worker that dies (its process killed, its node lost) stops the whole group: Ray Train restarts
every worker (up to `max_failures` times, default 3) and they resume from the last checkpoint, losing at most
the epoch in progress. An error of the run itself (diverged loss, unreadable data: trainer.train's ValueErrors)
is the same on every attempt; Ray Train retries any error, so the first worker to meet one records it in a small
actor and later attempts stop at once with it instead of training up to it again. After that, `mnas train ... --resume` continues the run, with workers or without: a run
trained on N workers resumes on one device and the other way round (the global batch, and so the schedule, stays
the same; only batch norm's per-replica slices change). Ctrl-C stops the workers (Ray Train's own handler) and
ends `mnas train` as it does on one device: "interrupted", exit 130, the last epoch's checkpoint kept for
--resume.

Test hook: MNAS_TEST_KILL_WORKER=RANK:EPOCH makes worker RANK kill itself (SIGKILL) right after every worker
has reported epoch EPOCH -- the chief's checkpoint of that epoch is then on disk, so the restarted group resumes
after it and the point is passed once: the named crash point of tests/test_ray_replay.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable

DEFAULT_MAX_FAILURES = 3
STORAGE = "ray_train"  # Ray Train's folder inside the run directory
KILL_ENV = "MNAS_TEST_KILL_WORKER"


@dataclasses.dataclass(frozen=True)
class Placement:
    """What each worker reserves from Ray."""

    workers: int
    cpus: int = 1
    gpus: int = 0

    def resources(self) -> dict[str, float]:
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}


def check_options(workers: int | None, address: str | None, devices: int | None) -> None:
    """Flag combinations and ranges, before anything starts."""
    if devices is not None and (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise ValueError(f"--devices must be a positive integer, got {devices!r}")
    if workers is None:
        if address:
            raise ValueError("--address joins a Ray cluster for a multi-worker run: give --workers N with it")
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {workers!r}")


def decide_placement(workers: int, threads: int, gpus_per_worker: int | None, nodes: list[dict[str, float]],
                     where: str) -> Placement:
    """Each worker's CPUs (--threads, at least 1) and GPUs: `gpus_per_worker` (--devices) if given, else one
    GPU a worker on a cluster that has GPUs and none on one that has not.

    Raises:
        ValueError: GPUs asked of a cluster without any.
    """
    has_gpus = any(node.get("GPU", 0) > 0 for node in nodes)
    if gpus_per_worker is None:
        gpus = 1 if has_gpus else 0
    elif has_gpus:
        gpus = gpus_per_worker
    elif gpus_per_worker == 1:
        gpus = 0  # one device a worker: its CPU
    else:
        raise ValueError(f"--devices {gpus_per_worker} with --workers asks each worker for {gpus_per_worker} GPUs, "
                         f"and {where} has none: drop --devices (each worker then trains on its CPU)")
    return Placement(workers, cpus=max(1, threads), gpus=gpus)


def placeable(placement: Placement, nodes: list[dict[str, float]]) -> int:
    """How many workers of `placement` the nodes (each a dict of total resources) can hold at once."""
    total = 0
    for node in nodes:
        fit = int(node.get("CPU", 0) // placement.cpus) if placement.cpus else 10 ** 9
        if placement.gpus:
            fit = min(fit, int(node.get("GPU", 0) // placement.gpus))
        total += fit
    return total


def check_capacity(placement: Placement, nodes: list[dict[str, float]], where: str) -> None:
    """Refuses a worker count the cluster can never place (Ray would otherwise wait for it forever)."""
    fits = placeable(placement, nodes)
    if fits >= placement.workers:
        return
    cpus = sum(n.get("CPU", 0) for n in nodes)
    gpus = sum(n.get("GPU", 0) for n in nodes)
    need = f"{placement.cpus} CPU" + (f" and {placement.gpus} GPU" if placement.gpus else "")
    have = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus:g} CPUs" + (f", {gpus:g} GPUs" if gpus else "")
    raise ValueError(f"--workers {placement.workers}: {where} can place at most {fits} worker"
                     f"{'s' if fits != 1 else ''} of {need} ({have}): lower --workers (or --threads, the CPUs of "
                     "each worker), or add nodes to the cluster")


def local_nodes(gpus: int) -> list[dict[str, float]]:
    """The local Ray cluster `start_ray` would start: this machine's cores and its visible GPUs."""
    return [{"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}]


def cluster_nodes() -> list[dict[str, float]]:
    """Total resources of the joined cluster's live nodes."""
    import ray

    return [dict(node.get("Resources", {})) for node in ray.nodes() if node.get("Alive")]


def start_ray(address: str | None, gpus: int, temp_dir: str | None = None) -> None:
    """Joins the cluster at `address`, or starts a local one over this machine's cores and GPUs.

    As the search's `search.tune.init_ray` does (same temporary folder rules, no dashboard, workers' output kept in
    Ray's session logs), but over the GPUs too: the replay's progress reaches the driver through a queue
    (`train_on_ray`), not through Ray's copies of the workers' output, which hold every worker's library notices."""
    import ray

    from mnas.search.tune import ray_temp_dir

    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
              "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=os.cpu_count() or 1, num_gpus=gpus, _temp_dir=ray_temp_dir(temp_dir),
                 **kwargs)


def plan_workers(config, workers: int, gpus_per_worker: int | None = None, threads: int = 0,
                 address: str | None = None, temp_dir: str | None = None) -> Placement:
    """What each of `workers` Ray Train workers reserves, checked against the cluster before anything long
    starts: against this machine's cores and GPUs for a local cluster (Ray not started yet), against the live
    nodes of the cluster at `address` (joined here: that takes a second).

    Args:
        gpus_per_worker: GPUs of each worker (`--devices`); None: one on a cluster with GPUs, else none.
        threads: TensorFlow threads of each worker, and the CPUs it reserves (at least 1).
        address: a Ray cluster to join; None: a local one over this machine (`start_ray`).
        temp_dir: where a local Ray keeps its session (search.tune.ray_temp_dir).

    Raises:
        ValueError: GPUs or mixed precision asked of a cluster without GPUs, a global batch that does not split
            over the replicas, or more workers than the cluster can place.
    """
    from mnas.trainer.train import import_tensorflow

    if address:
        start_ray(address, 0, temp_dir)
        nodes, where = cluster_nodes(), f"the Ray cluster at {address}"
    else:
        nodes, where = local_nodes(len(import_tensorflow().config.list_physical_devices("GPU"))), "this machine"
    placement = decide_placement(workers, threads, gpus_per_worker, nodes, where)
    if config.mixed_precision and not placement.gpus:
        raise ValueError(f"--mixed-precision needs GPU workers and {where} has no GPU: drop --mixed-precision")
    check_capacity(placement, nodes, where)
    replicas = placement.workers * max(1, placement.gpus)  # one replica a GPU, or a worker's CPU
    if config.batch_size % replicas:
        raise ValueError(f"--batch-size {config.batch_size} (the global batch) does not split evenly over "
                         f"{replicas} replicas: use a multiple of {replicas}")
    return placement


def train_on_ray(config, out_dir: str | os.PathLike, placement: Placement, resume: bool = False, threads: int = 0,
                 address: str | None = None, data=None, max_failures: int = DEFAULT_MAX_FAILURES,
                 temp_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains `config` into `out_dir` on the Ray Train workers of `placement` (from `plan_workers`); returns
    summary.json's content.

    Checks the data (opened here unless given), the run directory (trainer.train.prepare_run_dir) and that the
    model builds before Ray starts; then writes config.json, so that every worker, and every restarted one,
    continues the run from the checkpoint it finds there (`max_failures` restarts after a worker dies).

    Raises:
        ValueError: bad settings or data, or training failed on a worker (its error, one line).
    """
    import keras

    from mnas.trainer import checkpoint as ckpt
    from mnas.trainer.train import build, open_data, prepare_run_dir, write_config

    out = Path(out_dir).absolute()
    data = data or open_data(config)
    if data.steps_per_epoch(config.batch_size) < 1:
        raise ValueError(f"batch size {config.batch_size} exceeds the {data.num_train} training images")
    prepare_run_dir(config, out, resume)
    keras.backend.clear_session(free_memory=True)
    build(config, data)  # an architecture that cannot build fails here, before the run directory exists
    keras.backend.clear_session(free_memory=True)
    start_ray(address, placement.gpus, temp_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, config, data)

    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer
    from ray.util.queue import Queue

    import ray

    lines = Queue(actor_options={"num_cpus": 0})  # the chief's output, to this process
    verdict = ray.remote(num_cpus=0)(Verdict).remote()  # the run's own error, once met
    payload = {"config": config.to_dict(), "out": str(out), "threads": threads, "cwd": os.getcwd(),
               "kill": os.environ.get(KILL_ENV, ""), "verbose": os.environ.get("MNAS_VERBOSE") == "1",
               "lines": lines, "verdict": verdict}
    interrupted = threading.Event()
    trainer = _noting_interrupts(TensorflowTrainer, interrupted)(
        _worker_main, train_loop_config=payload,
        scaling_config=ScalingConfig(num_workers=placement.workers, use_gpu=placement.gpus > 0,
                                     resources_per_worker=placement.resources()),
        run_config=RunConfig(name="replay", storage_path=str(out / STORAGE),
                             failure_config=FailureConfig(max_failures=max_failures)))
    log(f"Ray Train: {placement.workers} worker{'s' if placement.workers != 1 else ''} of "
        f"{placement.cpus} CPU{f' and {placement.gpus} GPU' if placement.gpus else ''}, global batch "
        f"{config.batch_size} -> {out}")
    done = threading.Event()
    reader = threading.Thread(target=_forward, args=(lines, done, log), daemon=True)
    reader.start()
    main = threading.current_thread() is threading.main_thread()
    ctrl_c = signal.getsignal(signal.SIGINT) if main else None
    try:
        trainer.fit()  # in the main thread: Ray Train's Ctrl-C handler stops the workers
    except BaseException as err:  # Ray Train's errors carry the workers' ones; Ctrl-C's is a SystemExit
        if interrupted.is_set() or _interrupted(err):
            # Ctrl-C, as on one device: the CLI's `interrupted` (exit 130); the last epoch's checkpoint stays
            # for --resume. Ray Train's abort surfaces as a SystemExit out of its handler (Ray 2.60), or as its
            # controller's death.
            raise KeyboardInterrupt from None
        if not isinstance(err, Exception):
            raise
        known = ray.get(verdict.get.remote())
        if known:
            raise ValueError(known) from None  # the run's own error, as one device would say it
        raise ValueError(f"training failed on Ray Train: {_first_error(err)}") from None
    finally:
        if main:
            signal.signal(signal.SIGINT, ctrl_c)  # Ray Train leaves its handler, which would abort a gone run
        done.set()
        reader.join(timeout=30)
    if not (out / ckpt.SUMMARY).is_file():
        raise ValueError(f"the workers finished but {out / ckpt.SUMMARY} is missing: --out must be a folder every "
                         "node of the cluster shares (the chief wrote its run on its own disk)")
    from mnas.search.fileio import read_json

    return read_json(out / ckpt.SUMMARY)


class Verdict:
    """The first error of the run itself that a worker met (a Ray actor: every attempt's workers ask it)."""

    def __init__(self):
        self.error: str | None = None

    def fail(self, message: str) -> None:
        self.error = self.error or message

    def get(self) -> str | None:
        return self.error


def _forward(lines, done: threading.Event, log: Callable[[str], None]) -> None:
    """Prints the chief's lines as they come, until `done` and the queue is empty."""
    from ray.util.queue import Empty

    while True:
        try:
            line = lines.get(timeout=0.5)
        except Empty:
            if done.is_set():
                return
            continue
        except Exception:  # noqa: BLE001 -- the queue's actor went away with the cluster: nothing more to print
            return
        log(line)


class _LineQueue:
    """The chief's stdout: whole lines go to the driver's queue (progress bars redraw only on a terminal)."""

    def __init__(self, queue):
        self.queue, self.pending = queue, ""

    def write(self, text: str) -> int:
        self.pending += text
        *complete, self.pending = self.pending.split("\n")
        for line in complete:
            self.queue.put(line)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _noting_interrupts(trainer_class, interrupted: threading.Event):
    """`trainer_class` (a Ray Train trainer) whose Ctrl-C handler -- Ray Train's own, which aborts the run and
    stops the workers -- first sets `interrupted`: the error `fit` then raises (the aborted controller's) is no
    failure of the run. (Ray Train 2's `_register_sigint_handler`; a Ray Train without it leaves `interrupted`
    unset, and a KeyboardInterrupt must then show in the error itself, `_interrupted`.)"""

    class Trainer(trainer_class):
        def _register_sigint_handler(self, controller):
            super()._register_sigint_handler(controller)
            abort = signal.getsignal(signal.SIGINT)

            def note_then_abort(signum, frame):
                interrupted.set()
                if callable(abort):
                    abort(signum, frame)

            signal.signal(signal.SIGINT, note_then_abort)

    return Trainer


def _interrupted(err: BaseException) -> bool:
    """Whether `err`, an error out of Ray Train's `fit`, is a Ctrl-C: a KeyboardInterrupt itself, or one that
    Ray wrapped -- a worker's (WorkerGroupError.worker_failures, each wrapping the worker's exception), the
    controller's, or any exception's cause."""
    seen, pending = set(), [err]
    while pending:
        error = pending.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, KeyboardInterrupt):
            return True
        pending += [error.__cause__, error.__context__, *(getattr(error, "worker_failures", None) or {}).values()]
        pending += [getattr(error, name, None) for name in ("cause", "_base_exc", "controller_failure")]
    return False


def _first_error(err: BaseException) -> str:
    """The lowest-ranked failed worker's error as one line -- the last line of its text, where a wrapped
    traceback ends with the exception itself -- else that of `err`."""
    failures = getattr(err, "worker_failures", None) or {}
    for rank in sorted(failures):
        inner = failures[rank]
        cause = getattr(inner, "cause", None) or inner
        text = str(cause).strip().splitlines()
        return f"worker {rank}: {text[-1] if text else type(cause).__name__}"
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__


def _worker_main(payload: dict) -> None:
    """One Ray Train worker: the strategy from TF_CONFIG, then the ordinary training loop under it."""
    # Ray Train's TensorFlow backend sets TF_USE_LEGACY_KERAS=1 for tf.keras 2 users; this project uses Keras 3.
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    if os.path.isdir(payload["cwd"]):
        os.chdir(payload["cwd"])  # relative --data-dir as on the driver (Ray starts workers in its own folder)
    if not payload["verbose"]:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as the driver has it (a remote node's env has not)
        for name in ("tensorflow", "ray.train"):  # strategy set-up notes, Ray Train's per-report lines
            logging.getLogger(name).setLevel(logging.WARNING)
    import ray
    import ray.train

    known = ray.get(payload["verdict"].get.remote())
    if known:  # an earlier attempt met the run's own error: it would meet it again
        raise ValueError(known)
    from mnas.trainer import checkpoint as ckpt
    from mnas.trainer.distributed import Replicas
    from mnas.trainer.train import TrainConfig, set_up_tensorflow, train

    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    out = payload["out"]
    if not os.path.isfile(os.path.join(out, ckpt.CONFIG)):
        raise ValueError(f"worker {rank} on {socket.gethostname()} does not see {out}/{ckpt.CONFIG}: --out must be "
                         "a folder every node of the cluster shares")
    config = TrainConfig.from_dict(payload["config"])
    tf = set_up_tensorflow(payload["threads"], config.mixed_precision)
    replicas = Replicas(tf.distribute.MultiWorkerMirroredStrategy(), workers=size, worker=rank)
    kill = tuple(int(part) for part in payload["kill"].split(":")) if payload["kill"] else None

    def report(epoch: int, row: dict) -> None:
        ray.train.report({k: v for k, v in row.items() if isinstance(v, (int, float))})  # a barrier of all workers
        if kill == (rank, epoch):
            os.kill(os.getpid(), signal.SIGKILL)

    if replicas.chief:
        sys.stdout = _LineQueue(payload["lines"])  # its epoch lines and progress, to the driver

    def line(text: str) -> None:  # not print(), which Ray Train also copies into its own log
        sys.stdout.write(text + "\n")

    try:
        train(config, out, resume=True, threads=payload["threads"], on_epoch_end=report, replicas=replicas,
              log=line)
    except ValueError as err:
        ray.get(payload["verdict"].fail.remote(str(err)))
        raise
