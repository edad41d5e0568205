"""`search`: run an architecture search with Ray Tune, writing every child to the run's results store."""

from __future__ import annotations

import os
import sys
import time

from commands.dashboard import DEFAULT_PORT

HELP = "run a search: the controller samples children, Ray workers train them, the reward steers the controller"
DESCRIPTION = """Run a platform-aware architecture search (MnasNet, Tan et al. 2019).

The controller (or random search) proposes children from the search space; Ray Tune trials train each one on
the proxy task and take its latency at the deployment resolution; the reward ACC * (LAT/T)^w feeds back to the
controller. Every child lands in RUN_DIR/results.sqlite (open it with `mnas results RUN_DIR` or pandas);
RUN_DIR/searcher_state.json holds the search's state for --resume.

Ray starts locally (ray.init()) unless --address joins a running cluster (`ray start --head` on the head node,
then --address HOST:6379 or 'auto'). Command-line options override the config file."""


def add_arguments(parser):
    parser.add_argument("--config", default="configs/default.yaml", help="search config YAML (default: %(default)s)")
    parser.add_argument("--out", help="run directory (default: runs/<config name>)")
    parser.add_argument("--samples", type=int, help="children to evaluate in all")
    parser.add_argument("--workers", type=int, help="children trained at once")
    parser.add_argument("--target-ms", type=float, help="latency target T in milliseconds")
    parser.add_argument("--reward", choices=["soft", "hard"], help="reward preset: soft (a=b=-0.07) or hard (a=0, b=-1)")
    parser.add_argument("--latency", metavar="BACKEND", help="latency backend for the reward: pixel1, host, lut:FILE, calibrated:FILE, adb[:SERIAL]")
    parser.add_argument("--strategy", choices=["mnas", "random", "evolution"],
                        help="mnas (LSTM + PPO controller), random search, or regularized evolution")
    parser.add_argument("--seed", type=int, help="seed of the strategy and the proxy training")
    parser.add_argument("--scheduler", choices=["none", "asha"],
                        help="asha: stop children whose reward lags at a rung of their proxy training (Ray Tune "
                             "ASHA; rungs and reduction factor in the config's scheduler section); none: train "
                             "every child fully (default)")
    parser.add_argument("--address", help="join an existing Ray cluster (e.g. 'auto' or HOST:6379) instead of starting one")
    parser.add_argument("--resume", action="store_true", help="continue the stopped search in --out / runs/<name>")
    parser.add_argument("--quiet", action="store_true", help="no per-child progress lines")


def load_config(args):
    """The config file with the command-line overrides applied and every section validated."""
    from search.config import SearchConfig

    config = SearchConfig.load(args.config)
    overrides = {"samples": args.samples, "workers": args.workers, "strategy": args.strategy, "seed": args.seed}
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
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
    from results.store import ResultStore
    from search.config import describe_reward, make_reward
    from search.driver import STATE_FILE, SearchRun, run_in_process, write_json_atomic
    from search.registry import load_space
    from search.strategy import make_strategy
    from workers.proxy import ProxyConfig, blind_spots
    from workers.trial import SurrogateEvaluator, check_faults

    config = load_config(args)
    space = load_space(config.space)
    reward = make_reward(config.reward, config.latency)
    proxy = ProxyConfig.from_dict(config.proxy)          # fail now, not in the first worker
    _check_rungs(config.rungs, proxy)
    check_faults(config.faults)
    run_dir = os.path.abspath(args.out or os.path.join("runs", config.name))
    state_path = os.path.join(run_dir, STATE_FILE)
    if args.resume:
        if not os.path.exists(state_path):
            raise ValueError(f"--resume: no search to continue in {run_dir} (no {STATE_FILE})")
    elif os.path.exists(os.path.join(run_dir, "results.sqlite")) or os.path.exists(state_path):
        raise ValueError(f"{run_dir} already holds a search: add --resume to continue it, or choose another --out")
    _check_latency_backends(config.latency)
    surrogate = _load_surrogate(config.surrogate, space) if config.surrogate else None
    if surrogate is None:
        _check_dataset(proxy)
        for spot in blind_spots(space, proxy):
            print(f"warning: the proxy cannot see {spot}; such children differ only in latency "
                  "(see proxy.strides_removed and proxy.filter_divisor)", file=sys.stderr)
    strategy = make_strategy(config.strategy, space.choice_counts, seed=config.seed,
                             settings=config.strategy_settings())

    os.makedirs(run_dir, exist_ok=True)
    write_json_atomic(os.path.join(run_dir, "config.json"), config.to_dict())
    store = ResultStore(os.path.join(run_dir, "results.sqlite"))
    store.set_meta("config", config.to_dict())
    progress = Progress(quiet=args.quiet)
    search = SearchRun(space, strategy, reward, store, samples=config.samples, run_dir=run_dir,
                       num_classes=config.num_classes, input_channels=config.input_channels,
                       feed_failures=config.feed_failures, on_record=progress)
    if args.resume:
        search.load(state_path)
        print(f"resuming {run_dir}: {search.completed} children done, {len(search.retry)} to redo, "
              f"controller step {strategy.step}", file=sys.stderr)
    else:
        search.save()
        store.set_meta("started_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    progress.start(search)
    if search.finished and not search.in_flight:
        print(f"nothing to do: all {search.samples} children are in {run_dir}", file=sys.stderr)
        return 0

    if surrogate is not None:
        source = f"surrogate:{os.path.basename(config.surrogate['model'])}"
        store.set_meta("surrogate", {"model": os.path.abspath(config.surrogate["model"]), **surrogate.info})
        print(f"search {config.name!r}: {config.samples} children of space {space.name!r}, strategy "
              f"{config.strategy}, reward ACC * {describe_reward(reward)}; accuracies PREDICTED by {source} "
              f"(nothing is trained; noise {'on' if config.surrogate.get('noise', True) else 'off'}), in this "
              f"process; results in {run_dir}", file=sys.stderr)
        evaluate = SurrogateEvaluator(surrogate, source, list(config.latency), config.resolution, config.limits,
                                      proxy_seed=proxy.seed, noisy=config.surrogate.get("noise", True))
        run_in_process(search, evaluate)
        return _finish(search, store, run_dir, attempt=0)

    from ray import tune

    from search.tune import init_ray, make_scheduler, run_trials
    from workers.trial import make_child_trainable

    print(f"search {config.name!r}: {config.samples} children of space {space.name!r} ({space.size:.2e} "
          f"genotypes), strategy {config.strategy}, reward ACC * {describe_reward(reward)}, latency {config.latency[0]}, "
          f"{config.workers} worker(s); results in {run_dir}", file=sys.stderr)
    print(f"watch it live: python launch.py dashboard {run_dir}  (in another terminal; then open "
          f"http://127.0.0.1:{DEFAULT_PORT})", file=sys.stderr)
    init_ray(args.address, num_cpus=None if args.address else max(config.workers * config.cpus_per_worker,
                                                                    os.cpu_count() or 1))
    scheduler = config.scheduler_settings()
    trainable = tune.with_parameters(make_child_trainable(), proxy=proxy.to_dict(), latency=list(config.latency),
                                     resolution=config.resolution, limits=dict(config.limits),
                                     faults=dict(config.faults), reward=dict(config.reward), rungs=config.rungs,
                                     rung_heldout=scheduler["rung_heldout"])
    tune_dir = os.path.join(run_dir, "tune")
    attempt = len(os.listdir(tune_dir)) if os.path.isdir(tune_dir) else 0   # one Tune experiment per (re)start
    run_trials(search, trainable, workers=config.workers, cpus_per_worker=config.cpus_per_worker,
               storage_path=tune_dir, name=f"attempt-{attempt}", scheduler=make_scheduler(scheduler))
    return _finish(search, store, run_dir, attempt)


def _finish(search, store, run_dir: str, attempt: int) -> int:
    """Records the end of a (re)start and prints where the results are."""
    summary = search.summary()
    store.set_meta("finished_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    # the driver's own seconds (strategy, store, state), one entry per (re)start: the search's overhead, measured
    store.set_meta("driver_seconds", [*(store.get_meta("driver_seconds", []) or []),
                                      {"attempt": attempt, "wall": summary["elapsed"], **summary["timings"]}])
    pruned = f", {summary['pruned']} stopped early" if summary.get("pruned") else ""
    print(f"\ndone: {summary['done']} children ({summary['failed']} failed{pruned}) in {_clock(summary['elapsed'])}; "
          f"best reward {_fmt(summary['best_reward'])}", file=sys.stderr)
    print(f"results:   {os.path.join(run_dir, 'results.sqlite')}")
    print(f"  table:     python launch.py results {run_dir} --top 10")
    print(f"  frontier:  python launch.py results {run_dir} --pareto")
    print(f"  pandas:    ResultStore('{run_dir}').children()  (from results.store)")
    print(f"dashboard: python launch.py dashboard {run_dir}  (then open http://127.0.0.1:{DEFAULT_PORT}; "
          f"a file to share: python launch.py report {run_dir} --out report.html)")
    return 0 if summary["done"] >= search.samples else 1


def _load_surrogate(settings: dict, space):
    """The config's surrogate, checked against the search's space before anything is written."""
    from search.surrogate import Surrogate

    surrogate = Surrogate.load(settings["model"])
    surrogate.check_space(space)
    return surrogate


def _check_dataset(proxy) -> None:
    """Loads the proxy data once here, so a missing or corrupt data set stops the search before Ray starts
    (otherwise every child would fail alike with data_error)."""
    from trainer.data import load_dataset

    data = load_dataset(proxy.dataset, proxy.data_dir)
    if proxy.train_subset + proxy.heldout > len(data.x_train):
        raise ValueError(f"proxy: train_subset + heldout = {proxy.train_subset + proxy.heldout} but "
                         f"{proxy.dataset} has {len(data.x_train)} training images")


def _check_rungs(rungs: int, proxy) -> None:
    """Every rung must train at least one step: with more rungs than proxy steps, some rungs would score the
    child without training it further, and the scheduler would rank children on untrained weights."""
    if rungs > proxy.total_steps:
        raise ValueError(f"scheduler.rungs ({rungs}) exceeds the proxy's {proxy.total_steps} training steps "
                         "per child: every rung must train at least one step (fewer rungs, or more proxy steps)")


def _check_latency_backends(backends) -> None:
    from search.latency import get_latency_model

    for spec in backends:
        get_latency_model(spec)   # raises ValueError naming a bad backend before any work starts


def _fmt(value, digits=4):
    return "-" if value is None else f"{value:.{digits}f}"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """One line per finished child: count, outcome, reward, best so far, controller entropy, ETA."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.start_done = 0
        self.started = time.time()

    def start(self, search) -> None:
        self.start_done = search.completed
        self.started = time.time()

    def __call__(self, record: dict, summary: dict) -> None:
        if self.quiet:
            return
        done, total = summary["done"], summary["samples"]
        rate = (done - self.start_done) / max(time.time() - self.started, 1e-9)
        eta = _clock((total - done) / rate) if rate > 0 and done < total else "-"
        if record["status"] == "ok":
            what = (f"reward {record['reward']:.4f}  acc {record['accuracy']:.4f}  "
                    f"lat {record['latency_ms']:.1f} ms")
        elif record["status"] == "pruned":
            rung = (record.get("extra") or {}).get("rung")
            what = (f"stopped at rung {rung}: reward so far {record['reward']:.4f}  acc {record['accuracy']:.4f}  "
                    f"lat {record['latency_ms']:.1f} ms")
        else:
            what = f"FAILED ({(record['failure_reason'] or '')[:60]})"
        entropy = summary.get("entropy")
        print(f"[{done:>4}/{total}] {what} | best {_fmt(summary['best_reward'])} | "
              f"entropy {_fmt(entropy, 3)} | step {summary['step']} | {_clock(summary['elapsed'])} elapsed, "
              f"ETA {eta}", file=self.stream, flush=True)
