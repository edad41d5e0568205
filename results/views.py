"""What the dashboard and the report show, as data: ranks, the frontier, the table, failures, blocks, figures.

Everything here is a pure function of a run snapshot (the children and controller statistics read from one
store), so it is tested without a server or a browser. The live dashboard (results/server.py) and the static report
(results/dashboard.py) render exactly the same views from these functions; only the way the page gets its data
differs.

Ranks are the ones a user types to replay a child (issue 5), and one vocabulary everywhere (issue 23): ``RUN_DIR:RANK``
is the RANK-th child of ``ResultStore.top(k, by="reward")`` -- 'ok' children, best reward first, ties in storage
order; ``RUN_DIR:pareto:I`` is the I-th child of the Pareto front by increasing latency. Both are 1-based, and
every table calls its columns 'rank' and 'pareto' after them (`mnas results`, the dashboard), whatever the order
of its rows.
"""

from __future__ import annotations

import dataclasses
import html
import importlib.util
import math
import os
import shlex
import shutil
import sys
from collections import Counter
from typing import Any, Iterable

import pandas as pd

from mnas.results.pareto import pareto_front
from mnas.search.arch import decode_block
from mnas.search.reward import PRESETS, Reward

TOP_K = 15  # the paper trained its top 15 children fully; the table lists as many
ROLLING_WINDOW = 10  # children averaged in the trend line over the search
REASON_CHARS = 60  # failure reasons are cut to this length on the bar chart's axis (the hover has them whole)
RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
RUN_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "pentagon", "star", "hexagon", "cross")


@dataclasses.dataclass(frozen=True)
class RunSnapshot:
    """One consistent read of a run: what every view of it is computed from.

    Attributes:
        label: a short name that tells the runs of one page apart.
        run_dir: the run directory as the user wrote it, so that a replay command can be pasted where the
            dashboard was started.
        children: ResultStore.children(), in storage order.
        stats: ResultStore.controller_stats() (empty for a strategy without a controller).
        config: the run's configuration (the 'config' meta entry), {} if the store has none.
    """

    label: str
    run_dir: str
    children: pd.DataFrame
    stats: pd.DataFrame
    config: dict

    @property
    def reward(self) -> Reward | None:
        """The run's reward, read from its config as the search built it; None if the run recorded none."""
        section, latency = self.config.get("reward"), self.config.get("latency") or ["pixel1"]
        try:
            return Reward.from_settings(section, [latency] if isinstance(latency, str) else latency)
        except (TypeError, ValueError):
            return None

    @property
    def target_ms(self) -> float | None:
        """The latency target T of the reward's first term, if the run recorded a reward."""
        reward = self.reward
        return reward.terms[0].target_ms if reward is not None and reward.terms else None

    @property
    def reward_preset(self) -> str | None:
        """'soft' or 'hard' (the paper's two constraints) when the first term's exponents are one of them."""
        reward = self.reward
        if reward is None or not reward.terms:
            return None
        term = reward.terms[0]
        return next((name for name, exponents in PRESETS.items() if exponents == (term.alpha, term.beta)), None)


def read_run(store, label: str, run_dir: str) -> RunSnapshot:
    """Reads what the views need from an open (read-only) ResultStore; nothing is written."""
    return RunSnapshot(label=label, run_dir=run_dir, children=store.children(), stats=store.controller_stats(),
                       config=store.get_meta("config") or {})


def run_labels(run_dirs: Iterable[str]) -> list[str]:
    """Short, distinct names for runs: the folder name, with as many parent folders as it takes to tell apart."""
    parts = [[part for part in str(path).replace("\\", "/").split("/") if part not in ("", ".")] or ["."]
             for path in run_dirs]
    labels = [p[-1] for p in parts]
    for depth in range(2, max((len(p) for p in parts), default=1) + 1):
        clashes = {label for label, n in Counter(labels).items() if n > 1}
        if not clashes:
            break
        labels = ["/".join(p[-depth:]) if label in clashes else label for p, label in zip(parts, labels)]
    counts = Counter(labels)  # the same directory given twice: number the copies
    seen: Counter = Counter()
    for i, label in enumerate(labels):
        if counts[label] > 1:
            seen[label] += 1
            labels[i] = f"{label} ({seen[label]})"
    return labels


# ---------------------------------------------------------------------------------------------------------------
# Ranks, the frontier, the table, failures.


def reward_ranks(children: pd.DataFrame) -> pd.Series:
    """1-based rank by reward of each 'ok' child with a reward (index: children's index); see the module doc."""
    ok = children[(children["status"] == "ok") & children["reward"].notna()]
    order = ok.sort_values("reward", ascending=False, kind="mergesort")  # stable: ties keep storage order
    return pd.Series(range(1, len(order) + 1), index=order.index, dtype="int64")


def frontier(children: pd.DataFrame) -> pd.DataFrame:
    """The accuracy-latency Pareto front (results.pareto), by latency, with its 1-based position in 'pareto'."""
    front = pareto_front(children)
    return front.assign(pareto=range(1, len(front) + 1))


def replay_command(run_dir: str, rank: int | None = None, pareto: int | None = None) -> str:
    """The command that trains a child of the run fully (issue 5), quoted for a POSIX shell."""
    key = f"{run_dir}:{rank}" if rank is not None else f"{run_dir}:pareto:{pareto}"
    return mnas_command("train", "--arch", key)


def rank_legend(run_dir: str = "RUN_DIR") -> str:
    """The two ways to name a search's child, as a table's header states them: its columns are called what the
    ARCH forms call them (the dashboard's table says the same in its hint)."""
    return (f"rank = {run_dir}:RANK (the 'ok' children by reward, best first), "
            f"pareto = {run_dir}:pareto:I (the Pareto front by latency, fastest first)")


# ---------------------------------------------------------------------------------------------------------------
# Commands as printed: every command the project prints (the end of a search, replay commands, hints) starts
# with mnas_prefix(), so that it works when pasted into the shell the user is in.


def _shell_path(path: str) -> str:
    """An executable's path as a command line shows it: relative when under the current folder ('./' in front
    where the shell would otherwise search PATH), absolute otherwise; quoted for a POSIX shell."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return shlex.quote(absolute)
    return shlex.quote(relative if os.sep in relative else os.curdir + os.sep + relative)


def mnas_prefix() -> str:
    """How to run this project's command line from the current shell, as a printed command starts.

    `mnas` when the console script found on PATH is the running interpreter's own (an activated virtualenv);
    else that script by its path (`.venv/bin/mnas` from the checkout, after `make search`); else the running
    interpreter with launch.py. Never a bare `python launch.py`: outside the virtualenv that fails with "No
    module named 'pandas'".
    """
    script = os.path.join(os.path.dirname(sys.executable or ""), "mnas")
    if sys.executable and os.path.isfile(script) and os.access(script, os.X_OK):
        found = shutil.which("mnas")
        if found and os.path.exists(found) and os.path.samefile(found, script):
            return "mnas"
        return _shell_path(script)
    spec = importlib.util.find_spec("launch")
    python = _shell_path(sys.executable) if sys.executable else "python3"
    if spec is not None and spec.origin and os.path.isfile(spec.origin):
        return f"{python} {_shell_path(spec.origin)}"
    return f"{python} -m launch"


def mnas_command(*words: str) -> str:
    """`mnas WORDS...` as it can be pasted into the current shell (see mnas_prefix); each word quoted."""
    return " ".join([mnas_prefix(), *(shlex.quote(str(word)) for word in words)])


def status_counts(children: pd.DataFrame) -> dict[str, int]:
    counts = Counter(children["status"])
    return {"total": len(children), "ok": counts["ok"], "failed": counts["failed"], "pruned": counts["pruned"]}


def predicted_by(children: pd.DataFrame) -> list[str]:
    """The surrogates that predicted (rather than measured) any child's accuracy, e.g. ['surrogate:x.json']."""
    return sorted({source for source in children["accuracy_source"]
                   if isinstance(source, str) and source.startswith("surrogate")})


def failure_counts(children: pd.DataFrame) -> list[tuple[str, int]]:
    """Failed children by failure code (`search.failures`), most frequent first (ties by code)."""
    failed = children[children["status"] == "failed"]
    codes = Counter(code if isinstance(code, str) and code else "(no code)" for code in failed["failure_code"])
    return sorted(codes.items(), key=lambda item: (-item[1], item[0]))


def json_number(value) -> float | int | None:
    """A JSON-safe number: NA and non-finite values become None, numpy scalars plain Python."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (int, float)) else None


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def child_summaries(snapshot: RunSnapshot) -> dict[str, dict[str, Any]]:
    """Every child by trial id: the numbers the detail panel shows, its ranks and its replay command."""
    children = snapshot.children
    ranks = reward_ranks(children).to_dict()
    pareto = frontier(children)["pareto"].to_dict()
    summaries = {}
    for index, row in zip(children.index, children.to_dict("records")):  # 10x faster than iterrows
        rank, front = ranks.get(index), pareto.get(index)
        command = (replay_command(snapshot.run_dir, rank=rank) if rank is not None else
                   replay_command(snapshot.run_dir, pareto=front) if front is not None else None)
        summaries[row["trial_id"]] = {
            "trial_id": row["trial_id"], "arch": row["arch"].split(), "status": row["status"],
            "failure_code": _text(row["failure_code"]), "failure_detail": _text(row["failure_detail"]), "accuracy": json_number(row["accuracy"]),
            "latency_ms": json_number(row["latency_ms"]), "latency_source": _text(row["latency_source"]),
            "reward": json_number(row["reward"]), "params": json_number(row["params"]),
            "madds": json_number(row["madds"]),
            "sample": json_number(row["sample"]), "controller_step": json_number(row["controller_step"]),
            "rank": rank, "pareto": front, "command": command,
        }
    return summaries


def table_rows(snapshot: RunSnapshot, top_k: int = TOP_K,
               summaries: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The frontier and the top `top_k` children by reward, each once, best reward first.

    'sets' says why a row is there ('top', 'frontier' or both). The command replays by rank for a top child and
    by frontier position for a frontier child outside the top -- both name the same child. Pass `summaries`
    (child_summaries of the same snapshot) when you have them, to save computing them again.
    """
    summaries = child_summaries(snapshot) if summaries is None else summaries
    children = snapshot.children
    top_ids = [children.at[index, "trial_id"] for index in reward_ranks(children).index[:top_k]]
    front_ids = list(frontier(children)["trial_id"])
    rows = []
    for trial_id in dict.fromkeys(top_ids + front_ids):  # ordered, without duplicates
        child = summaries[trial_id]
        in_top, in_front = trial_id in top_ids, trial_id in front_ids
        command = (replay_command(snapshot.run_dir, rank=child["rank"]) if in_top else
                   replay_command(snapshot.run_dir, pareto=child["pareto"]))
        rows.append({**{key: child[key] for key in ("trial_id", "rank", "pareto", "reward", "accuracy",
                                                     "latency_ms", "latency_source", "params", "madds", "status")},
                     "sets": [name for name, member in (("top", in_top), ("frontier", in_front)) if member],
                     "command": command})
    rows.sort(key=lambda row: -(row["reward"] if row["reward"] is not None else -math.inf))
    return rows


_DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "cifar": "CIFAR-10", "cifar100": "CIFAR-100",
                  "imagenet": "ImageNet"}


def _latency_words(spec: str) -> str:
    """A latency backend spec as an axis says it: 'predicted Pixel 1', 'measured on this host', ..."""
    kind, _, rest = spec.partition(":")
    name = os.path.basename(rest)
    return {"pixel1": "predicted Pixel 1", "host": "measured on this host", "adb": "measured on a phone",
            "lut": f"lookup table {name}", "calibrated": f"predicted by {name}"}.get(kind, spec)


def axis_titles(snapshots: Iterable[RunSnapshot]) -> tuple[str, str]:
    """(x, y) titles of the accuracy-latency plot, from the runs' configs: which latency the search's reward used
    and which task measured the accuracy, e.g. ('latency (ms, predicted Pixel 1)', 'proxy accuracy
    (Fashion-MNIST, 1 epoch)'). Plain 'latency (ms)' / 'accuracy' when the runs differ or do not say."""
    from mnas.search.proxy import ProxyConfig  # the proxy's own defaults, not a copy of them

    xs, ys = set(), set()
    for snap in snapshots:
        latency = snap.config.get("latency")
        spec = latency[0] if isinstance(latency, list) and latency else latency
        xs.add(f"latency (ms, {_latency_words(spec)})" if isinstance(spec, str) and spec else "latency (ms)")
        surrogates = predicted_by(snap.children)
        if surrogates:
            ys.add(f"accuracy PREDICTED by {', '.join(surrogates)}")
            continue
        try:
            proxy = ProxyConfig.from_dict(snap.config.get("proxy") or {})
        except (TypeError, ValueError):  # a config of another version
            ys.add("accuracy")
            continue
        budget = f"{proxy.steps} steps" if proxy.steps else f"{proxy.epochs} epoch{'s' if proxy.epochs != 1 else ''}"
        ys.add(f"proxy accuracy ({_DATASET_NAMES.get(proxy.dataset, proxy.dataset)}, {budget})")
    return (xs.pop() if len(xs) == 1 else "latency (ms)"), (ys.pop() if len(ys) == 1 else "accuracy")


def block_view(block_string: str) -> dict[str, Any]:
    """One block as the architecture diagram draws it: op, kernel, expansion, SE, filters, repeats, stride, skip.

    Decoded by search.arch, so the diagram can never disagree with the model the string builds. A string that
    does not decode (a store written by a newer grammar) is shown as such rather than failing the page.
    """
    try:
        block = decode_block(block_string)
    except ValueError as err:
        return {"string": block_string, "error": str(err)}
    return {"string": block_string, "op": block.op, "kernel": block.kernel, "expand_ratio": block.expand_ratio,
            "se_ratio": block.se_ratio, "input_filters": block.input_filters,
            "output_filters": block.output_filters, "repeats": block.repeats, "stride": block.stride,
            "skip": block.skip}


def block_views(snapshots: Iterable[RunSnapshot]) -> dict[str, dict[str, Any]]:
    """Every distinct block string of the runs, decoded once: children share blocks, so the page stays small."""
    strings = dict.fromkeys(block for snapshot in snapshots for arch in snapshot.children["arch"]
                            for block in arch.split())
    return {string: block_view(string) for string in strings}


def hover_arch(arch: str) -> str:
    """Block strings one per line for a Plotly hover label (which renders a little HTML: escape it)."""
    return "<br>".join(html.escape(block) for block in arch.split())
