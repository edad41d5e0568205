"""The live dashboard's HTTP server: Python's standard library, read-only, serving only the runs it was given.

Why so small a server: the dashboard is one page, one script and one JSON document per refresh, for a handful of
readers on the machine running the search. http.server's ThreadingHTTPServer does that without adding a web
framework to the project's dependencies.

What it guarantees:

* read-only: GET is the only method (anything else is 405), and the stores are opened read-only -- SQLite's WAL
  lets the page re-read a run while its search writes, without blocking or disturbing the writer;
* no file is served from a path in the request: routes are a fixed table, runs are addressed by their index in the
  list given on the command line, and every other path (``/../``, ``/etc/passwd``, ``%2e%2e``...) is a 404;
* bound to 127.0.0.1 unless asked otherwise, since run directories may hold unpublished results.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Sequence

from results.dashboard import DEFAULT_REFRESH_S, DashboardSource, page_title, plotly_js, render_page

_RUN_PATH = re.compile(r"^/api/runs/(0|[1-9][0-9]{0,5})$")


class DashboardServer(ThreadingHTTPServer):
    """Serves the dashboard of `run_dirs` at http://host:port/.

    Args:
        run_dirs: run directories, as the user wrote them.
        host: address to bind; loopback by default.
        port: 0 picks a free port (see `url`).
        refresh_seconds: how often the page polls for new children.

    Raises:
        ValueError: a path is not a run directory, or the address cannot be bound (in use, not this host's).
    """

    daemon_threads = True  # a reader's open connection never holds up Ctrl-C
    allow_reuse_address = True

    def __init__(self, run_dirs: Sequence[str], host: str = "127.0.0.1", port: int = 0,
                 refresh_seconds: float = DEFAULT_REFRESH_S):
        if not refresh_seconds > 0:
            raise ValueError(f"refresh interval must be positive, got {refresh_seconds!r} s")
        self.source = DashboardSource(run_dirs)
        self.refresh_seconds = float(refresh_seconds)
        self._page: bytes | None = None
        self._plotly: bytes | None = None
        self._assets_lock = threading.Lock()
        try:
            super().__init__((host, port), _Handler)
        except OSError as err:
            self.source.close()
            raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        except (OverflowError, UnicodeError) as err:  # a port beyond 65535, a malformed host name
            self.source.close()
            raise ValueError(f"cannot listen on {host}:{port}: {err}") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def page(self) -> bytes:
        with self._assets_lock:
            if self._page is None:
                config = {"live": True, "refresh_seconds": self.refresh_seconds, "payload": None}
                self._page = render_page(page_title(self.source.labels), config,
                                         '<script src="static/plotly.min.js"></script>').encode("utf-8")
            return self._page

    def plotly(self) -> bytes:
        with self._assets_lock:
            if self._plotly is None:
                self._plotly = plotly_js().encode("utf-8")
            return self._plotly

    def server_close(self) -> None:
        super().server_close()
        self.source.close()


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "mnas-dashboard"
    sys_version = ""

    def parse_request(self) -> bool:
        """Refuses every method but GET before it reaches a handler: the dashboard changes nothing."""
        if not super().parse_request():
            return False
        if self.command != "GET":
            self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
            self.send_header("Allow", "GET")
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return False
        return True

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path in ("/", "/index.html"):
            self._send(self.server.page(), "text/html; charset=utf-8")
        elif path == "/static/plotly.min.js":
            self._send(self.server.plotly(), "text/javascript; charset=utf-8", cache=True)
        elif path == "/api/data":
            since = urllib.parse.parse_qs(query).get("since", [None])[0]
            self._json(lambda payload: ({"version": payload["version"], "unchanged": True}
                                        if since == payload["version"] else payload))
        elif path == "/api/runs":
            self._json(lambda payload: [{"index": run["index"], "label": run["label"], "run_dir": run["run_dir"],
                                         "counts": run["counts"]} for run in payload["runs"]])
        elif (match := _RUN_PATH.match(path)) and int(match.group(1)) < len(self.server.source.run_dirs):
            index = int(match.group(1))
            self._json(lambda payload: payload["runs"][index])
        else:
            self._send(b"not found\n", "text/plain; charset=utf-8", status=HTTPStatus.NOT_FOUND)

    def _json(self, view) -> None:
        try:
            body = view(self.server.source.payload())
        except Exception as err:  # a store the search is replacing, a disk error: say so, the page retries
            body, status = {"error": f"{type(err).__name__}: {err}"}, HTTPStatus.SERVICE_UNAVAILABLE
        else:
            status = HTTPStatus.OK
        data = json.dumps(body, allow_nan=False, separators=(",", ":")).encode("utf-8")
        self._send(data, "application/json", status=status)

    def _send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK, cache: bool = False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=86400" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        """Quiet: a request line every few seconds per open page would bury the useful output."""
