"""`search`: run an architecture search with Ray Tune, writing every child to the run's results store."""

from __future__ import annotations

import errno
import os
import sqlite3
import statistics
import sys
import time

from mnas.commands.dashboard import DEFAULT_PORT

HELP = "run a search: the controller samples children, Ray workers train them, the reward steers the controller"
DESCRIPTION = """Run a platform-aware architecture search (MnasNet, Tan et al. 2019).

The controller (or random search) proposes children from the search space; Ray Tune trials train each one on
the proxy task and take its latency at the deployment resolution; the reward ACC * (LAT/T)^w feeds back to the
controller. Every child lands in RUN_DIR/results.sqlite (open it with `mnas results RUN_DIR` or pandas);
RUN_DIR/searcher_state.json holds the search's state for --resume.

Ray starts locally (ray.init()) unless --address joins a running cluster (`ray start --head` on the head node,
then --address HOST:6379 or 'auto'). Command-line options override the config file."""


def add_arguments(parser):
    parser.add_argument("--config", help="search config YAML (default: configs/default.yaml; with --resume, the "
                                         "run's own config.json)")
    parser.add_argument("--out", help="run directory (default: runs/<config name>)")
    from mnas.search.config import SearchConfig
    from mnas.search.settings import add_flags

    add_flags(parser, SearchConfig)    # --samples, --workers, --strategy, --seed: from the config's own fields
    parser.add_argument("--target-ms", type=float, help="latency target T in milliseconds")
    parser.add_argument("--reward", choices=["soft", "hard"], help="reward preset: soft (a=b=-0.07) or hard (a=0, b=-1)")
    parser.add_argument("--latency", metavar="BACKEND", help="latency backend for the reward: pixel1, host, lut:FILE, calibrated:FILE, adb[:SERIAL]")
    parser.add_argument("--scheduler", choices=["none", "asha"],
                        help="asha: stop children whose reward lags at a rung of their proxy training (Ray Tune "
                             "ASHA; rungs and reduction factor in the config's scheduler section); none: train "
                             "every child fully (default)")
    parser.add_argument("--address", help="join an existing Ray cluster (e.g. 'auto' or HOST:6379) instead of starting one")
    parser.add_argument("--resume", action="store_true", help="continue the stopped search in --out / runs/<name>")
    parser.add_argument("--quiet", action="store_true", help="no per-child progress lines")


def load_config(args):
    """The config file with the command-line overrides applied and every section validated."""
    from mnas.search.config import SearchConfig
    from mnas.search.settings import apply_flags

    path = args.config
    if path is None:
        saved = os.path.join(args.out or os.path.join("runs", "default"), "config.json")
        path = saved if args.resume and os.path.isfile(saved) else "configs/default.yaml"
    config = SearchConfig.load(path)
    if args.resume and os.path.basename(path) == "config.json":    # the run's own saved config: its proxy as it ran
        from mnas.search.config import saved_proxy

        config.proxy = saved_proxy(config.proxy)
    apply_flags(config, args, SearchConfig)
    if args.latency:
        config.latency = [args.latency] + [b for b in config.latency[1:] if b != args.latency]
    reward = dict(config.reward)
    if args.reward:
        reward.update(preset=args.reward)
        reward.pop("alpha", None)
        reward.pop("beta", None)
    if args.target_ms is not None:
        reward["target_ms"] = args.target_ms
    config.reward = reward
    if args.scheduler:
        config.scheduler = dict(config.scheduler, name=args.scheduler)
    config.validate("command line")
    return config


def run(args) -> int:
    from mnas.search.driver import STATE_FILE
    from mnas.search.registry import load_space
    from mnas.search.runlock import LOCK_FILE
    from mnas.search.strategy import make_strategy
    from mnas.search.proxy import ProxyConfig, blind_spots
    from mnas.workers.trial import check_faults

    config = load_config(args)
    space = load_space(config.space)
    reward = config.make_reward()
    proxy = ProxyConfig.from_dict(config.proxy)          # fail now, not in the first worker
    if proxy.mixed_precision and not config.gpus_per_worker and not config.surrogate:
        raise ValueError("proxy.mixed_precision trains in float16 on GPUs, but children get none: set "
                         "gpus_per_worker (--gpus-per-worker), or drop mixed_precision")
    _check_rungs(config.rungs, proxy)
    check_faults(config.faults)
    run_dir = _run_dir(args, config)
    state_path = os.path.join(run_dir, STATE_FILE)
    if args.resume:
        if not os.path.exists(state_path):
            raise ValueError(f"--resume: no search to continue in {run_dir} (no {STATE_FILE})")
    else:
        _check_new_folder(run_dir, allow=(LOCK_FILE,), resume=_resume_command(args, run_dir))
    _check_latency_backends(config.latency)
    surrogate = _load_surrogate(config.surrogate_settings, space) if config.surrogate else None
    if surrogate is None:
        _check_dataset(proxy)
        for spot in blind_spots(space, proxy, strict="strides_removed" in config.proxy):
            print(f"warning: the proxy cannot see {spot}; such children differ only in latency "
                  "(see proxy.strides_removed and proxy.filter_divisor)", file=sys.stderr)
    strategy = make_strategy(config.strategy, space.choice_counts, seed=config.seed,
                             settings=config.strategy_settings())
    started_ray = surrogate is None and _start_ray(args, config)   # Ray up, and room for a child, before any write
    try:
        return _in_run_folder(args, config, space, reward, proxy, strategy, surrogate, run_dir, state_path)
    finally:
        if started_ray:              # a command run in-process (tests, notebooks) leaves no Ray behind
            import ray

            ray.shutdown()


def _in_run_folder(args, config, space, reward, proxy, strategy, surrogate, run_dir, state_path) -> int:
    """Every check that needs no lock has passed; from here on this process owns the folder, and nothing is
    written into it before the checks that need the lock (a new folder still empty, a resume that matches) pass."""
    from mnas.search.runlock import LOCK_FILE, RunLock

    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the run folder {run_dir}: {err.strerror or err}") from None
    lock = RunLock(run_dir).acquire()
    try:
        if args.resume:
            _check_resumable(run_dir, config, space)
        else:
            _check_new_folder(run_dir, allow=(LOCK_FILE,), resume=_resume_command(args, run_dir))  # a race
        return _search(args, config, space, reward, proxy, strategy, surrogate, run_dir, state_path)
    except KeyboardInterrupt:
        # Every child is stored and the state saved as it finishes: an interrupted search resumes exactly.
        print(f"\ninterrupted: the children finished so far are stored in {run_dir}; continue with\n"
              f"  {_resume_command(args, run_dir)}", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise ValueError(f"the disk is full ({err.filename or run_dir}): free some space, then continue with "
                             f"{_resume_command(args, run_dir)}; every child stored so far is kept") from None
        raise
    except sqlite3.OperationalError as err:
        if "full" in str(err):
            raise ValueError(f"the disk is full ({run_dir}): free some space, then continue with "
                             f"{_resume_command(args, run_dir)}; every child stored so far is kept") from None
        raise
    finally:
        lock.release()


def _search(args, config, space, reward, proxy, strategy, surrogate, run_dir, state_path) -> int:
    from mnas.results.store import ResultStore
    from mnas.results.views import mnas_command
    from mnas.search.config import saved_config
    from mnas.search.driver import SearchRun, run_in_process, write_json_atomic
    from mnas.workers.trial import SurrogateEvaluator, TrialSettings

    saved = saved_config(config, proxy.split)
    write_json_atomic(os.path.join(run_dir, "config.json"), saved)
    store = ResultStore(os.path.join(run_dir, "results.sqlite"))
    store.set_meta("config", saved)
    store.set_meta("space", space.to_dict())
    progress = Progress(quiet=args.quiet, workers=1 if config.surrogate else config.workers)
    search = SearchRun(space, strategy, reward, store, samples=config.samples, run_dir=run_dir,
                       deployment=config.deployment, feed_failures=config.feed_failures,
                       max_consecutive_failures=config.max_consecutive_failures, on_record=progress)
    scheduler = config.scheduler_settings()
    settings = TrialSettings(proxy=proxy, reward=reward, latency=tuple(config.latency), limits=config.limits_in(),
                             faults=dict(config.faults), rungs=config.rungs, rung_heldout=scheduler.rung_heldout)
    if args.resume:
        search.load(state_path)
        print(f"resuming {run_dir}: {search.completed} children done, {len(search.retry)} to redo, "
              f"controller step {strategy.step}", file=sys.stderr)
    else:
        search.save()
        store.set_meta("started_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if search.finished and not search.in_flight:
        print(f"nothing to do: all {search.samples} children are in {run_dir}", file=sys.stderr)
        return 0

    if surrogate is not None:
        chosen = config.surrogate_settings
        source = f"surrogate:{os.path.basename(chosen.model)}"
        store.set_meta("surrogate", {"model": os.path.abspath(chosen.model), **surrogate.info})
        print(f"search {config.name!r}: {config.samples} children of space {space.name!r}, strategy "
              f"{config.strategy}, reward ACC * {reward.describe()}; accuracies PREDICTED by {source} "
              f"(nothing is trained; noise {'on' if chosen.noise else 'off'}), in this "
              f"process; results in {run_dir}", file=sys.stderr)
        evaluate = SurrogateEvaluator(surrogate, source, settings, proxy_seed=proxy.seed,
                                      noisy=chosen.noise)
        run_in_process(search, evaluate)
        return _finish(search, store, run_dir, attempt=0)

    from ray import tune

    from mnas.search.tune import make_scheduler, run_trials
    from mnas.workers.trial import make_child_trainable

    print(f"search {config.name!r}: {config.samples} children of space {space.name!r} ({space.size:.2e} "
          f"genotypes), strategy {config.strategy}, reward ACC * {reward.describe()}, latency {config.latency[0]}, "
          f"{config.workers} worker(s); results in {run_dir}", file=sys.stderr)
    print(f"watch it live: {mnas_command('dashboard', _shown(run_dir))}  (in another terminal; then open "
          f"http://127.0.0.1:{DEFAULT_PORT})", file=sys.stderr)
    trainable = tune.with_parameters(make_child_trainable(), settings=settings)
    tune_dir = os.path.join(run_dir, "tune")
    attempt = len(os.listdir(tune_dir)) if os.path.isdir(tune_dir) else 0   # one Tune experiment per (re)start
    run_trials(search, trainable, workers=config.workers, cpus_per_worker=config.cpus_per_worker,
               gpus_per_worker=config.gpus_per_worker, storage_path=tune_dir, name=f"attempt-{attempt}",
               scheduler=make_scheduler(scheduler))
    return _finish(search, store, run_dir, attempt)


def _finish(search, store, run_dir: str, attempt: int) -> int:
    """Records the end of a (re)start and prints where the results are."""
    from mnas.results.views import mnas_command

    summary = search.summary()
    store.set_meta("finished_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    # the driver's own seconds (strategy, store, state), one entry per (re)start: the search's overhead, measured
    store.set_meta("driver_seconds", [*(store.get_meta("driver_seconds", []) or []),
                                      {"attempt": attempt, "wall": summary["elapsed"], **summary["timings"]}])
    pruned = f", {summary['pruned']} stopped early" if summary.get("pruned") else ""
    print(f"\ndone: {summary['done']} children ({summary['failed']} failed{pruned}) in {_clock(summary['elapsed'])}; "
          f"best reward {_fmt(summary['best_reward'])}", file=sys.stderr)
    if summary["stopped"]:
        print(f"STOPPED early: {summary['stopped']}", file=sys.stderr)
    print(f"results:   {os.path.join(run_dir, 'results.sqlite')}")
    shown = _shown(run_dir)
    print(f"  table:     {mnas_command('results', shown, '--top', '10')}")
    print(f"  frontier:  {mnas_command('results', shown, '--pareto')}")
    print(f"  pandas:    ResultStore.open_run({shown!r}).children()  (from mnas.results.store; read-only)")
    print(f"dashboard: {mnas_command('dashboard', shown)}  (then open http://127.0.0.1:{DEFAULT_PORT}; "
          f"a file to share: {mnas_command('report', shown, '--out', 'report.html')})")
    return 0 if summary["done"] >= search.samples else 1


MAKE_ENV = "MNAS_VIA_MAKE"   # the Makefile's search line sets it to 1
MAKE_CONFIG = "configs/default.yaml"   # the --config that line passes
# search options a resume under make repeats (the make line passes MAKE_CONFIG again, so the user's overrides must
# come again too); a resume from the command line needs only --out (the run's config.json holds the rest)
_REPEATED = (("config", "--config"), ("out", "--out"), ("samples", "--samples"), ("workers", "--workers"),
             ("target_ms", "--target-ms"), ("reward", "--reward"), ("latency", "--latency"),
             ("strategy", "--strategy"), ("seed", "--seed"), ("scheduler", "--scheduler"), ("address", "--address"))


def _resume_command(args, run_dir: str) -> str:
    """The command that continues this search, as it can be pasted where the search was started.

    Under `make search` (MNAS_VIA_MAKE=1): `make search SEARCH_ARGS=...` with the options the user gave plus
    --resume -- `make search --resume` would be make's own (unknown) option. Otherwise `mnas search --out RUN_DIR
    --resume` as mnas_prefix() spells it.
    """
    import shlex

    from mnas.results.views import mnas_command

    if os.environ.get(MAKE_ENV) == "1":
        words = []
        for dest, flag in _REPEATED:
            value = getattr(args, dest, None)
            if value is not None and not (dest == "config" and value == MAKE_CONFIG):
                words += [flag, format(value, "g") if isinstance(value, float) else str(value)]
        words += ["--quiet"] * bool(getattr(args, "quiet", False)) + ["--resume"]
        return "make search SEARCH_ARGS=" + shlex.quote(" ".join(shlex.quote(word) for word in words))
    return mnas_command("search", "--out", _shown(run_dir), *(["--address", args.address] if args.address else []),
                        "--resume")


def _shown(path: str) -> str:
    """A run folder as printed commands name it: relative to the current folder when inside it."""
    relative = os.path.relpath(path)
    return path if relative == os.pardir or relative.startswith(os.pardir + os.sep) else relative


def _run_dir(args, config) -> str:
    return os.path.abspath(args.out or os.path.join("runs", config.name))


def _check_new_folder(run_dir: str, allow: tuple[str, ...] = (), resume: str | None = None) -> None:
    """A search starts only in a new or empty folder: never over another run, a training run or a file.
    `resume`: the command that would continue the search found there, for the error message."""
    if not os.path.lexists(run_dir):
        return
    if not os.path.isdir(run_dir):
        raise ValueError(f"--out {run_dir} is a file, not a folder: choose another --out")
    try:
        entries = sorted(set(os.listdir(run_dir)) - set(allow))
    except OSError as err:
        raise ValueError(f"cannot read the run folder {run_dir}: {err.strerror or err}") from None
    if "searcher_state.json" in entries or "results.sqlite" in entries:
        raise ValueError(f"{run_dir} already holds a search: continue it with "
                         f"{resume or 'the same command and --resume'}, or choose another --out")
    if entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ValueError(f"{run_dir} is not empty ({shown}): a search starts in a new or empty folder; "
                         "choose another --out")


def _check_resumable(run_dir: str, config, space) -> None:
    """Refuses a resume that would mix rules or lose children, before anything is written.

    The run's own config (store meta, else config.json) must match on everything but RESUME_FREE, and the
    state file and the store must agree on which children are done.
    """
    from mnas.results.store import ResultStore
    from mnas.search.config import RESUME_FREE, resume_differences
    from mnas.search.driver import STATE_FILE, read_json

    store_file = os.path.join(run_dir, "results.sqlite")
    state = _read_state(os.path.join(run_dir, STATE_FILE))
    if not os.path.exists(store_file):
        raise ValueError(f"cannot resume {run_dir}: its results store (results.sqlite) is missing, but its search "
                         f"state says {state['issued']} children were proposed; restore the store, or start a new "
                         "run in another folder")
    with ResultStore(store_file, readonly=True) as store:
        saved = store.get_meta("config")
        saved_space = store.get_meta("space")
        stored = store.children()
    if saved is None:
        try:
            saved = read_json(os.path.join(run_dir, "config.json"))
        except (OSError, ValueError):
            raise ValueError(f"cannot resume {run_dir}: neither its store nor config.json says how the run was "
                             "configured") from None
    differences = resume_differences(saved, config, saved_space, space.to_dict() if saved_space else None)
    if differences:
        raise ValueError(f"cannot resume {run_dir} with other settings (only {', '.join(RESUME_FREE)} may change): "
                         + "; ".join(differences))
    issued = state["issued"]
    waiting = {int(entry["sample"]) for entry in [*state["in_flight"].values(), *state["retry"]]}
    have = {int(sample) for sample in stored["sample"].dropna()}
    missing = sorted(set(range(issued)) - waiting - have)
    foreign = sorted(have - set(range(issued)))
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
        raise ValueError(f"cannot resume {run_dir}: its store lacks {len(missing)} of the {issued} children the "
                         f"search state counts as proposed and done (samples {shown}): the store was emptied or "
                         "replaced; restore it, or start a new run in another folder")
    if foreign:
        raise ValueError(f"cannot resume {run_dir}: its store holds samples the search state never proposed "
                         f"({', '.join(map(str, foreign[:8]))}): the store and the state come from different runs")


def _read_state(path: str) -> dict:
    """The search state file, checked for the fields a resume relies on (one line if it is not usable)."""
    from mnas.search.driver import read_json

    try:
        state = read_json(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot resume: {path} is unreadable ({err})") from None
    entries = (state.get("in_flight") or {}).values() if isinstance(state, dict) else ()
    retry = state.get("retry") if isinstance(state, dict) else None
    if not isinstance(state, dict) or not isinstance(state.get("issued"), int) \
            or not isinstance(state.get("in_flight", {}), dict) or not isinstance(retry or [], list) \
            or any(not isinstance(e, dict) or not isinstance(e.get("sample"), int) for e in [*entries, *(retry or [])]):
        raise ValueError(f"cannot resume: {path} is not a search state (it lacks 'issued', or a child in flight "
                         "lacks its 'sample')")
    state.setdefault("in_flight", {})
    state["retry"] = list(retry or [])
    return state


def _start_ray(args, config) -> bool:
    """Starts a local Ray (or joins --address) and checks that a child fits on one of its nodes; warns when fewer
    children than `workers` fit at once. Returns whether this call started (or joined) Ray."""
    import ray

    from mnas.search.tune import init_ray, placement

    if ray.is_initialized():        # the caller's own Ray (a notebook, a test): used as it is, left running
        started = False
    else:
        init_ray(args.address, num_cpus=None if args.address else max(config.workers * config.cpus_per_worker,
                                                                        os.cpu_count() or 1))
        started = True
    try:
        fits = placement(config.cpus_per_worker, config.gpus_per_worker)
    except ValueError:
        if started:
            ray.shutdown()
        raise
    if fits < config.workers:
        print(f"warning: the Ray cluster has room for {fits} child(ren) at once ({config.cpus_per_worker:g} CPU, "
              f"{config.gpus_per_worker:g} GPU each), not the {config.workers} workers asked for", file=sys.stderr)
    return started


def _load_surrogate(settings, space):
    """The config's surrogate (`SurrogateSettings`), checked against the search's space before anything is
    written."""
    from mnas.search.surrogate import Surrogate

    surrogate = Surrogate.load(settings.model)
    surrogate.check_space(space)
    return surrogate


def _check_dataset(proxy) -> None:
    """Checks the proxy data once here (`workers.proxy.check_proxy_data`), so a missing or corrupt data set, labels
    that do not fit or a one-class held-out sample stop the search before Ray starts (otherwise every child would
    fail alike with data_error)."""
    from mnas.workers.proxy import check_proxy_data

    print(f"proxy data: {check_proxy_data(proxy).describe()}", file=sys.stderr)


def _check_rungs(rungs: int, proxy) -> None:
    """Every rung must train at least one step: with more rungs than proxy steps, some rungs would score the
    child without training it further, and the scheduler would rank children on untrained weights."""
    if rungs > proxy.total_steps:
        raise ValueError(f"scheduler.rungs ({rungs}) exceeds the proxy's {proxy.total_steps} training steps "
                         "per child: every rung must train at least one step (fewer rungs, or more proxy steps)")


def _check_latency_backends(backends) -> None:
    from mnas.measure import get_latency_model

    for spec in backends:
        get_latency_model(spec)   # raises ValueError naming a bad backend before any work starts


def _fmt(value, digits=4):
    return "-" if value is None else f"{value:.{digits}f}"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def eta_seconds(remaining: int, child_seconds: list[float], workers: int, in_flight: int = 0) -> float | None:
    """Seconds until `remaining` more children are done, `workers` at a time: the median of the recent children's
    own wall time (what one child costs a worker, without the search's start-up, which a rate since the start
    would spread over every child), less the half of it that the children in flight have already run on
    average. None before any child has finished."""
    if not child_seconds or remaining <= 0:
        return None if not child_seconds else 0.0
    per_child = statistics.median(child_seconds[-20:])
    return max(remaining - in_flight / 2, 0.0) * per_child / max(workers, 1)


class Progress:
    """One line per finished child: count, outcome, reward, best so far, controller entropy, ETA."""

    def __init__(self, quiet: bool = False, stream=None, workers: int = 1):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.workers = workers
        self.child_seconds: list[float] = []

    def __call__(self, record: dict, summary: dict) -> None:
        if record.get("total_seconds") is not None:
            self.child_seconds.append(float(record["total_seconds"]))
        if self.quiet:
            return
        done, total = summary["done"], summary["samples"]
        left = eta_seconds(total - done, self.child_seconds, self.workers, min(summary.get("in_flight", 0),
                                                                                total - done))
        eta = _clock(left) if left is not None and done < total else "-"
        if record["status"] == "ok":
            what = (f"reward {record['reward']:.4f}  acc {record['accuracy']:.4f}  "
                    f"lat {record['latency_ms']:.1f} ms")
        elif record["status"] == "pruned":
            rung = (record.get("extra") or {}).get("rung")
            what = (f"stopped at rung {rung}: reward so far {record['reward']:.4f}  acc {record['accuracy']:.4f}  "
                    f"lat {record['latency_ms']:.1f} ms")
        else:
            what = f"FAILED {record['failure_code']} ({(record['failure_detail'] or '')[:60]})"
        entropy = summary.get("entropy")
        print(f"[{done:>4}/{total}] {what} | best {_fmt(summary['best_reward'])} | "
              f"entropy {_fmt(entropy, 3)} | step {summary['step']} | {_clock(summary['elapsed'])} elapsed, "
              f"ETA {eta}", file=self.stream, flush=True)
