"""`results RUN_DIR`: the evaluated children of a search run, as a table or JSON; Pareto front; export."""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter

HELP = "list the children of a search run: table or JSON, top K, Pareto front, export to Parquet/CSV"
DESCRIPTION = """List the evaluated children of a search run from its results store (RUN_DIR/results.sqlite).

Safe while the search is still running: the store is read as one consistent snapshot, and nothing is written to
it. Rows are ranked by --sort (reward and accuracy highest first, latency lowest first; children without the value
last); by reward or accuracy, fully trained children come first, then those an early-stopping scheduler stopped
(scored part-way through training), then failures. --pareto keeps the 'ok' children on the accuracy-latency
frontier, ranked by latency unless --sort says otherwise. --export writes the rows shown (after --status,
--pareto, --top) to .parquet or .csv, atomically.

The table names each child the way every command takes it as ARCH (`train --arch`, `describe`, `latency`),
whatever the order of the rows: 'rank' is RUN_DIR:RANK, the run's 'ok' children by reward, best first; 'pareto'
is RUN_DIR:pareto:I, the Pareto front by latency, fastest first ('-': not ranked, or not on the front).

The last line counts the whole run's children by status, and the failures by reason."""

SORT_KEYS = ("reward", "accuracy", "latency_ms")
_ASCENDING = {"latency_ms"}


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (or its results.sqlite)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of children instead of the table")
    parser.add_argument("--top", type=int, default=None, metavar="K", help="show only the first K rows")
    parser.add_argument("--pareto", action="store_true", help="only the accuracy-latency Pareto front")
    parser.add_argument("--status", choices=("ok", "failed", "pruned", "all"), default="all",
                        help="children of this status only (default: all)")
    parser.add_argument("--export", metavar="FILE", default=None,
                        help="also write the rows shown to FILE.parquet or FILE.csv")
    parser.add_argument("--sort", choices=SORT_KEYS, default=None,
                        help="rank by this column (default: reward; latency_ms with --pareto)")


_PARTIAL = ("reward", "accuracy")           # sorts by what a pruned child only has part of
_STATUS_ORDER = {"ok": 0, "pruned": 1, "failed": 2}


def select(children, status: str = "all", pareto: bool = False, sort: str | None = None, top: int | None = None):
    """The rows the command shows, in order: filter by status, optionally the Pareto front, rank, cut to top."""
    from mnas.results.pareto import pareto_front

    if top is not None and top < 1:
        raise ValueError(f"--top must be a positive integer, got {top}")
    if pareto and status not in ("ok", "all"):
        raise ValueError(f"--pareto uses 'ok' children only; it cannot be combined with --status {status}")
    rows = children if status == "all" else children[children["status"] == status]
    if pareto:
        rows = pareto_front(rows)
    sort = sort or ("latency_ms" if pareto else "reward")
    # Stable sort, missing values last: ties keep the order children were stored in.
    rows = rows.sort_values(sort, ascending=sort in _ASCENDING, na_position="last", kind="mergesort")
    if sort in _PARTIAL:
        # A child an early-stopping scheduler stopped was scored part-way through its training: its reward and
        # accuracy do not compete with fully trained children's, so it ranks after them (then the failures).
        rows = rows.iloc[rows["status"].map(_STATUS_ORDER).fillna(len(_STATUS_ORDER)).argsort(kind="mergesort")]
    return rows if top is None else rows.head(top)


def summary(children) -> str:
    """One line: children by status, failures by reason."""
    if len(children) == 0:
        return "no children yet"
    by_status = Counter(children["status"])
    parts = [f"{by_status[status]} {status}" for status in ("ok", "failed", "pruned") if by_status[status]]
    line = f"{len(children)} children: {', '.join(parts)}"
    from mnas.results.views import failure_counts, predicted_by

    failures = failure_counts(children)
    if failures:
        line += "; failures: " + ", ".join(f"{n} x {code}" for code, n in failures)

    predicted = predicted_by(children)
    if predicted:
        line += f"\naccuracies PREDICTED by {', '.join(predicted)}: no child was trained"
    return line


def _plain(value):
    """A JSON-safe Python value: NA and non-finite numbers -> None, numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        value = value.item()
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None  # pd.NA, NaT


def to_json(rows) -> list[dict]:
    return [{name: _plain(value) for name, value in zip(rows.columns, values)}
            for values in rows.itertuples(index=False, name=None)]


def _cell(value, fmt: str) -> str:
    value = _plain(value)
    if value is None or value == "":
        return "-"
    return format(value, fmt) if fmt else str(value)


def table(rows, children=None) -> list[str]:
    """The rows as aligned text lines; the long block strings come last so the numbers line up.

    'rank' and 'pareto' are each child's RUN_DIR:RANK and RUN_DIR:pareto:I (results.views.reward_ranks and
    frontier, computed over `children`, the whole run: default `rows`), not the row's position."""
    from mnas.results.views import frontier, reward_ranks

    if len(rows) == 0:
        return ["(no children)"]
    children = rows if children is None else children
    ranks, front = reward_ranks(children).to_dict(), frontier(children)["pareto"].to_dict()
    # (header, cells, right-aligned)
    columns = [("rank", [str(ranks.get(index, "-")) for index in rows.index], True),
               ("pareto", [str(front.get(index, "-")) for index in rows.index], True),
               ("trial", [_cell(v, "") for v in rows["trial_id"]], False),
               ("reward", [_cell(v, ".4f") for v in rows["reward"]], True),
               ("accuracy", [_cell(v, ".4f") for v in rows["accuracy"]], True),
               ("latency_ms", [_cell(v, ".2f") for v in rows["latency_ms"]], True),
               ("source", [_cell(v, "") for v in rows["latency_source"]], False),
               ("params_M", [_cell(None if _plain(v) is None else v / 1e6, ".2f") for v in rows["params"]], True),
               ("madds_M", [_cell(None if _plain(v) is None else v / 1e6, ".1f") for v in rows["madds"]], True),
               ("status", [_cell(v, "") for v in rows["status"]], False)]
    widths = [max(len(header), *(len(cell) for cell in cells)) for header, cells, _ in columns]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(width) if right else cell.ljust(width)
                         for cell, width, (_, _, right) in zip(cells, widths, columns))

    lines = [line([header for header, _, _ in columns]) + "  arch"]
    archs = [_cell(v, "") for v in rows["arch"]]
    for i in range(len(rows)):
        lines.append(line([cells[i] for _, cells, _ in columns]) + "  " + archs[i])
    return lines


def run(args) -> int:
    from mnas.results.export import check_export_path, export_frame
    from mnas.results.store import ResultStore

    if args.export:
        check_export_path(args.export)
    with ResultStore.open_run(args.run_dir) as store:
        children = store.children()  # one read: the table and the summary come from the same snapshot
    rows = select(children, status=args.status, pareto=args.pareto, sort=args.sort, top=args.top)
    if args.json:
        print(json.dumps(to_json(rows), indent=2))
    else:
        from mnas.results.views import mnas_command, rank_legend

        if len(rows):
            run = (os.path.dirname(args.run_dir) or ".") if os.path.isfile(args.run_dir) else args.run_dir  # a store
            key = run + (":pareto:I" if args.pareto else ":RANK")
            print(f"# {rank_legend(run)}; replay: {mnas_command('train', '--arch', key)}")
        for text in table(rows, children):
            print(text)
        print(summary(children))
    if args.export:
        try:
            path = export_frame(rows, args.export)
        except OSError as err:
            raise ValueError(f"cannot export to {args.export}: {err.strerror or err}") from None
        print(f"wrote {len(rows)} {'child' if len(rows) == 1 else 'children'} to {path}", file=sys.stderr)
    return 0
