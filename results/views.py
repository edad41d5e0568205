"""What the dashboard and the report show, as data: ranks, the frontier, the table, failures, blocks, figures.

Everything here is a pure function of a run snapshot (the children and controller statistics read from one
store), so it is tested without a server or a browser. The live dashboard (results/server.py) and the static report
(results/dashboard.py) render exactly the same views from these functions; only the way the page gets its data
differs.

Ranks are the ones a user types to replay a child (issue 5): ``RUN_DIR:RANK`` is the RANK-th child of
``ResultStore.top(k, by="reward")`` -- 'ok' children, best reward first, ties in storage order -- which is also the
order of ``launch.py results RUN_DIR --status ok``; ``RUN_DIR:pareto:I`` is the I-th child of the Pareto front by
increasing latency, as ``launch.py results RUN_DIR --pareto`` lists it. Both are 1-based.
"""

from __future__ import annotations

import dataclasses
import html
import math
import shlex
from collections import Counter
from typing import Any, Iterable

import pandas as pd

from results.pareto import pareto_front
from search.space import decode_block

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
    def target_ms(self) -> float | None:
        """The latency target T of the reward, if the run recorded it."""
        value = (self.config.get("reward") or {}).get("target_ms")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def reward_preset(self) -> str | None:
        """'soft' or 'hard' (the paper's two constraints), or None for custom exponents."""
        return (self.config.get("reward") or {}).get("preset")


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
    return f"python launch.py train --arch {shlex.quote(key)}"


def status_counts(children: pd.DataFrame) -> dict[str, int]:
    counts = Counter(children["status"])
    return {"total": len(children), "ok": counts["ok"], "failed": counts["failed"], "pruned": counts["pruned"]}


def predicted_by(children: pd.DataFrame) -> list[str]:
    """The surrogates that predicted (rather than measured) any child's accuracy, e.g. ['surrogate:x.json']."""
    return sorted({source for source in children["accuracy_source"]
                   if isinstance(source, str) and source.startswith("surrogate")})


def failure_counts(children: pd.DataFrame) -> list[tuple[str, int]]:
    """Failed children by reason, most frequent first (ties by reason), as `launch.py results` sums them up."""
    failed = children[children["status"] == "failed"]
    reasons = Counter(reason if isinstance(reason, str) and reason.strip() else "(no reason)"
                      for reason in failed["failure_reason"])
    return sorted(reasons.items(), key=lambda item: (-item[1], item[0]))


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
            "failure_reason": _text(row["failure_reason"]), "accuracy": json_number(row["accuracy"]),
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


def block_view(block_string: str) -> dict[str, Any]:
    """One block as the architecture diagram draws it: op, kernel, expansion, SE, filters, repeats, stride, skip.

    Decoded by search.space, so the diagram can never disagree with the model the string builds. A string that
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
