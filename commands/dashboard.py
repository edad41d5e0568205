"""`dashboard RUN_DIR [RUN_DIR ...]`: a live web page of one or more searches, refreshed while they run."""

from __future__ import annotations

import argparse
import sys

HELP = "serve a live web page of search runs: Pareto frontier, progress, failures, top children"
DESCRIPTION = """Serve a web page of one or more search runs (RUN_DIR/results.sqlite), for a browser on this machine.

The page shows accuracy against latency of every child with each run's Pareto frontier and the latency target T;
reward, accuracy, latency and controller entropy over the search; failed children by reason; a sortable table of
the frontier and the top children with the `mnas train` command that replays each (spelled as it runs from where
the dashboard was started); and, for a child you click, its architecture block by block. Give several runs (e.g. a
soft and a hard reward search) to compare them.

The page refreshes by itself while a search writes: the stores are read-only snapshots, the search is never
blocked. The server answers GET only, serves nothing but these runs, and only to requests addressed to the names it
listens on (127.0.0.1, localhost, --host; a page of another site cannot read it through your browser). It listens
on 127.0.0.1 unless --host says otherwise (0.0.0.0: every interface, written out); --port 0 picks a free port.
Ctrl-C stops it."""

DEFAULT_PORT = 8050


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 meaning 'any free port'."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: not an integer") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: must be 0-65535 (0 picks a free port)")
    return port


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid interval {text!r}: not a number") from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"invalid interval {value:g}: must be between 0.2 and 3600 seconds")
    return value


def add_arguments(parser):
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (or their results.sqlite)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every "
                             "interface, so anyone who reaches this machine can read the runs)")
    parser.add_argument("--refresh", type=seconds, default=None, metavar="SECONDS",
                        help="how often the page checks for new children (default 3)")


def run(args) -> int:
    from mnas.results.dashboard import DEFAULT_REFRESH_S
    from mnas.results.server import DashboardServer

    server = DashboardServer(args.run_dirs, host=args.host, port=args.port,
                             refresh_seconds=args.refresh or DEFAULT_REFRESH_S)
    try:
        runs = ", ".join(server.source.labels)
        print(f"dashboard of {runs} at {server.url}  (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever(poll_interval=0.25)
        except KeyboardInterrupt:
            print("dashboard stopped", file=sys.stderr, flush=True)
    finally:
        server.server_close()
    return 0
