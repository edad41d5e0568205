"""MNAS-Bench: uniformly random children of the `mnasnet` space trained on the default proxy, shipped as a table.

The collection is an ordinary search with the random strategy, run in the background and resumed across sessions
(hours of CPU: about a minute of one core a child, two at a time on 2 cores)::

    git worktree add /work/bench-code <commit>          # pin the code under the running search
    cd /work/bench-code && .venv/bin/python launch.py search --config configs/default.yaml \\
        --strategy random --samples 1000 --out /work/bench-run --quiet      # later: the same with --resume

`export` turns one or more such runs into `benchmarks/results/mnas_bench.csv`, one row a child:

    .venv/bin/python benchmarks/mnas_bench.py export /work/bench-run [--out benchmarks/results/mnas_bench.csv]

A collection continued on another machine (its earlier run folder gone) starts a new run with another --seed
(new proposals; every child still trains with proxy.seed 0) and adds it with `export NEW_RUN --merge`, which keeps
the table's rows of other runs. Runs are merged by (run, trial_id); runs whose proxy, space or deployment settings differ from each other are
refused, so that one table never mixes children scored under different rules. Columns: `genotype` (one digit a
decision, in the space's decision order), `indices` (the same as a JSON list), `arch` (block strings),
`accuracy` and `heldout_loss` (the proxy's held-out slice), `final_loss`, `latency_pixel1_ms` (predicted, at the
deployment resolution), `params` and `madds` (deployment model), `proxy_params`, `train_seconds`,
`cpu_seconds` (the whole child, one thread), `proxy_seed`, `status`, `failure_code`, `failure_detail`, `run`,
`trial_id`, `sample`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, today  # noqa: E402

DEFAULT_TABLE = os.path.join(ROOT, "benchmarks", "results", "mnas_bench.csv")
DEFAULT_SURROGATE = os.path.join(ROOT, "benchmarks", "results", "mnas_bench_surrogate.json")
COLUMNS = ("run", "trial_id", "sample", "genotype", "indices", "arch", "status", "failure_code", "failure_detail",
           "accuracy", "heldout_loss", "final_loss", "latency_pixel1_ms", "params", "madds", "proxy_params",
           "train_seconds", "cpu_seconds", "proxy_seed", "finished_at")
# What must agree between runs merged into one table: everything that decides a child's score.
RULES = ("space", "proxy", "deploy")


def read_bench(table: str = DEFAULT_TABLE):
    """The table in collection order: its runs in the order the table first lists them, each by sample (a run's
    sample numbers start at 0, so `sample` alone does not order, nor name, a child: `run` and `sample` do)."""
    import pandas as pd

    frame = pd.read_csv(table) if table.endswith(".csv") else pd.read_parquet(table)
    order = {run: i for i, run in enumerate(dict.fromkeys(frame["run"]))}
    return (frame.assign(_run=frame["run"].map(order)).sort_values(["_run", "sample"], kind="stable")
            .drop(columns="_run").reset_index(drop=True))


def rules_fingerprint(config: dict) -> str:
    """A short digest of the settings that decide how a child is scored (space, proxy, deployment)."""
    text = json.dumps({key: config.get(key) for key in RULES}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_rows(run_dir: str) -> tuple[list[dict], dict]:
    """The rows of one run, and its config."""
    from mnas.results.store import ResultStore

    store = ResultStore.open_run(run_dir, readonly=True)
    config = store.get_meta("config") or {}
    name = os.path.basename(os.path.normpath(run_dir))
    rows = []
    for record in store.records():
        extra = record.get("extra") or {}
        indices = record.get("indices") or []
        latencies = record.get("latencies") or {}
        rows.append({
            "run": name, "trial_id": record["trial_id"], "sample": record.get("sample"),
            "genotype": "".join(str(int(i)) for i in indices), "indices": json.dumps(list(indices)),
            "arch": record["arch"], "status": record["status"], "failure_code": record.get("failure_code"),
            "failure_detail": record.get("failure_detail"),
            "accuracy": record.get("accuracy"), "heldout_loss": extra.get("heldout_loss"),
            "final_loss": extra.get("final_loss"), "latency_pixel1_ms": latencies.get("pixel1"),
            "params": record.get("params"), "madds": record.get("madds"), "proxy_params": extra.get("proxy_params"),
            "train_seconds": record.get("train_seconds"), "cpu_seconds": extra.get("cpu_seconds"),
            "proxy_seed": (config.get("proxy") or {}).get("seed", 0), "finished_at": record.get("finished_at"),
        })
    store.close()
    return rows, config


def export(run_dirs: list[str], out: str, merge: bool = False):
    """Writes the children of `run_dirs` to `out`; with `merge`, the rows `out` already holds of other runs are
    kept (a collection continued on another machine, whose earlier run folder is gone, adds a run to the table)."""
    import pandas as pd

    from mnas.results.export import export_frame

    frames, fingerprints = [], {}
    if merge and os.path.exists(out):
        kept = pd.read_csv(out) if out.endswith(".csv") else pd.read_parquet(out)
        names = {os.path.basename(os.path.normpath(run)) for run in run_dirs}
        frames.append(kept[~kept["run"].isin(names)].reindex(columns=list(COLUMNS)))
    for run_dir in run_dirs:
        rows, config = run_rows(run_dir)
        fingerprints[run_dir] = rules_fingerprint(config)
        frames.append(pd.DataFrame(rows, columns=list(COLUMNS)))
    if len(set(fingerprints.values())) > 1:
        raise ValueError("these runs score children under different settings (space, proxy or deploy): "
                         + ", ".join(f"{run} {digest}" for run, digest in fingerprints.items()))
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(["run", "trial_id"])
    frame = frame.sort_values(["run", "sample"], kind="stable").reset_index(drop=True)
    export_frame(frame, out)
    return frame


def fit(table: str, out: str, noise: float, folds: int = 5, seed: int = 0, repeats: int = 3) -> dict:
    """Fits the surrogate on the table's trained children, cross-validates it (`folds`-fold, repeated over `repeats`
    shuffles) and writes it; returns the report."""
    import numpy as np
    import pandas as pd

    from mnas.search.registry import load_space
    from mnas.search.surrogate import Surrogate, cross_validate, proxy_settings, rank_quality, trained_network

    frame = pd.read_csv(table) if table.endswith(".csv") else pd.read_parquet(table)
    ok = frame[(frame["status"] == "ok") & frame["accuracy"].notna()]
    if len(ok) < 2 * folds:
        raise ValueError(f"{table}: {len(ok)} trained children; {2 * folds} at least are needed to fit and "
                         f"cross-validate")
    space = load_space("mnasnet")
    archs = [space.decode(json.loads(indices)) for indices in ok["indices"]]
    accuracy = ok["accuracy"].to_numpy(float)
    # The surrogate describes the network the proxy trained (search.surrogate.DEFAULT_PROXY: the default proxy on
    # Fashion-MNIST); the table's own count of it must agree, or the features would describe other networks.
    proxy = proxy_settings()
    if "proxy_params" in ok and ok["proxy_params"].notna().all():
        counted = np.array([trained_network(arch, proxy)[0].params for arch in archs])
        wrong = int(np.sum(counted != ok["proxy_params"].to_numpy()))
        if wrong:
            raise ValueError(f"{table}: {wrong} of {len(ok)} children's proxy_params differ from the proxy model "
                             f"the surrogate counts ({proxy}): they were trained under another proxy")
    quality = cross_validate(space, archs, accuracy, folds=folds, seed=seed, repeats=repeats, proxy=proxy)
    observed = float(np.var(accuracy))
    # A perfect model of the noise-free accuracy still misses a single-seed measurement by the seed noise; its rank
    # correlation with the measurements is at most about sqrt(true variance / observed variance). Within the top
    # quartile (chosen by the noisy measurement) the ceiling is far lower; it is simulated by taking the measured
    # accuracies as the truth and measuring them again with the seed noise (slightly optimistic: the measured
    # accuracies spread more than the true ones).
    rng = np.random.default_rng(seed)
    simulated = [rank_quality(accuracy, accuracy + rng.normal(0.0, noise, len(accuracy))) for _ in range(50)]
    ceiling = {"rmse": noise, "correlation": float(np.sqrt(max(observed - noise ** 2, 0.0) / observed))
               if observed > 0 else float("nan"),
               "spearman_top_half": float(np.mean([q["spearman_top_half"] for q in simulated])),
               "spearman_top_quartile": float(np.mean([q["spearman_top_quartile"] for q in simulated]))}
    info = {"children": int(len(ok)), "table": os.path.basename(table), "fitted": today(),
            "cv": {k: v for k, v in quality.items() if k != "predicted"}, "ceiling": ceiling,
            "accuracy_sd": float(np.sqrt(observed))}
    surrogate = Surrogate.fit(space, archs, accuracy, noise=noise, seed=seed, info=info, proxy=proxy)
    surrogate.save(out)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    ex = commands.add_parser("export", help="write the children of one or more collection runs as one table")
    ex.add_argument("runs", nargs="+", help="run folders of random-strategy searches")
    ex.add_argument("--out", default=DEFAULT_TABLE, help="CSV or Parquet file (default: %(default)s)")
    ex.add_argument("--merge", action="store_true",
                    help="keep the rows --out already holds of other runs (their folders need not exist here)")
    ft = commands.add_parser("fit", help="fit the surrogate on the exported table and cross-validate it")
    ft.add_argument("--table", default=DEFAULT_TABLE, help="the exported table (default: %(default)s)")
    ft.add_argument("--out", default=DEFAULT_SURROGATE, help="the surrogate file (default: %(default)s)")
    ft.add_argument("--noise", type=float, required=True,
                    help="the proxy's seed-to-seed sigma (benchmarks/proxy_spread.py), kept with the model")
    ft.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: %(default)s)")
    ft.add_argument("--repeats", type=int, default=3, help="cross-validation shuffles (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "fit":
        try:
            info = fit(args.table, args.out, args.noise, args.folds, repeats=args.repeats)
        except (OSError, ValueError) as err:
            print(f"mnas_bench: {err}", file=sys.stderr)
            return 2
        cv, sd = info["cv"], info["cv"].get("sd", {})

        def figure(key, digits=3):
            return f"{cv[key]:.{digits}f}" + (f" +- {sd[key]:.{digits}f}" if key in sd else "")

        print(f"surrogate on {info['children']} children -> {args.out}\n"
              f"{cv['folds']}-fold held out ({cv['repeats']} shuffles, mean +- sd): Spearman {figure('spearman')}, "
              f"Kendall {figure('kendall')}, Spearman within the top half {figure('spearman_top_half')}, "
              f"within the top quartile {figure('spearman_top_quartile')}; MAE {figure('mae', 4)}, "
              f"RMSE {figure('rmse', 4)}; accuracy sd {info['accuracy_sd']:.4f}\n"
              f"ceiling set by the proxy's seed noise: RMSE {info['ceiling']['rmse']:.4f}, rank correlation about "
              f"{info['ceiling']['correlation']:.3f}, within the top half about "
              f"{info['ceiling']['spearman_top_half']:.2f}, within the top quartile about "
              f"{info['ceiling']['spearman_top_quartile']:.2f}")
        return 0
    if args.command == "export":
        try:
            frame = export(args.runs, args.out, merge=args.merge)
        except ValueError as err:
            print(f"mnas_bench: {err}", file=sys.stderr)
            return 2
        ok = frame[frame["status"] == "ok"]
        print(f"{len(frame)} children ({len(ok)} ok) -> {args.out}; accuracy median "
              f"{ok['accuracy'].median():.4f}, CPU s a child median {ok['cpu_seconds'].median():.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
