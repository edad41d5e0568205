"""`report RUN_DIR [RUN_DIR ...] --out FILE.html`: the dashboard's views as one self-contained HTML file."""

from __future__ import annotations

import sys
from pathlib import Path

HELP = "write the dashboard's views of search runs to one self-contained HTML file"
DESCRIPTION = """Write the views of the dashboard (`mnas dashboard`) for one or more runs to a single HTML file:
the accuracy-latency scatter with Pareto frontiers and latency targets, progress over the search, failures, the
table of top and frontier children with their replay commands, and the architecture of any child you click.

The file carries its data and plotly.js inside it: it opens offline, from disk or as an e-mail attachment, and
shows the runs as they were when it was written. The store is only read; a search may still be running."""

_SUFFIXES = (".html", ".htm")


def add_arguments(parser):
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (or their results.sqlite)")
    parser.add_argument("--out", required=True, metavar="FILE.html", help="the HTML file to write")


def run(args) -> int:
    from mnas.results.dashboard import write_report

    out = Path(args.out)
    if out.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"cannot write the report to {out}: the file name must end in .html")
    path = write_report(args.run_dirs, out)
    size = path.stat().st_size / 1e6
    print(f"wrote the report of {len(args.run_dirs)} run{'s' if len(args.run_dirs) > 1 else ''} to {path} "
          f"({size:.1f} MB, opens offline)", file=sys.stderr)
    return 0
