"""The live dashboard's HTTP server: Python's standard library, read-only, serving only the runs it was given.

Why so small a server: the dashboard is one page, one script and one JSON document per refresh, for a handful of
readers on the machine running the search. http.server's ThreadingHTTPServer does that without adding a web
framework to the project's dependencies.

What it guarantees:

* read-only: GET is the only method (anything else is 405), and the stores are opened read-only -- SQLite's WAL
  lets the page re-read a run while its search writes, without blocking or disturbing the writer;
* no file is served from a path in the request: routes are a fixed table, runs are addressed by their index in the
  list given on the command line, and every other path (``/../``, ``/etc/passwd``, ``%2e%2e``...) is a 404;
* bound to 127.0.0.1 unless asked otherwise, since run directories may hold unpublished results; binding beyond
  loopback takes an explicit address (an empty host, which would mean every interface, is refused);
* only the names it is reached by: a request whose ``Host`` header is not 127.0.0.1, localhost, ::1 or the
  address it was bound to gets 421 and no data, so a web page whose own domain an attacker re-points at
  127.0.0.1 (DNS rebinding) cannot read the runs through the visitor's browser. Any port is accepted with a
  known name (an SSH tunnel changes the port, not the name). Bound to a wildcard address (0.0.0.0, ::), the
  machine's host names and any IP literal are accepted too -- rebinding needs a domain name;
* bounded: a connection that sends nothing for `CONNECTION_TIMEOUT_S` is closed, and at most `MAX_CONNECTIONS`
  are served at once -- one more gets an immediate 503, so idle or half-sent requests cannot pile up threads.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import socket
import sys
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Sequence

from mnas.results.dashboard import DEFAULT_REFRESH_S, DashboardSource, page_title, plotly_js, render_page

_RUN_PATH = re.compile(r"^/api/runs/(0|[1-9][0-9]{0,5})$")
_HOST = re.compile(r"^(?:\[(?P<ipv6>[0-9a-fA-F:.]+)\]|(?P<name>[^:\[\]]+))(?::[0-9]{1,5})?$")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
CONNECTION_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 32


class DashboardServer(ThreadingHTTPServer):
    """Serves the dashboard of `run_dirs` at http://host:port/.

    Args:
        run_dirs: run directories, as the user wrote them.
        host: address to bind; loopback by default. Never empty: every interface is 0.0.0.0 (or ::), written out.
        port: 0 picks a free port (see `url`).
        refresh_seconds: how often the page polls for new children.
        timeout: seconds a connection may stay silent (mid-request or idle between requests) before it is closed.
        max_connections: connections served at once; one more is answered 503 at once and closed.

    Raises:
        ValueError: a path is not a run directory, the host is empty, or the address cannot be bound (in use, not
            this host's).
    """

    daemon_threads = True  # a reader's open connection never holds up Ctrl-C
    allow_reuse_address = True

    def __init__(self, run_dirs: Sequence[str], host: str = "127.0.0.1", port: int = 0,
                 refresh_seconds: float = DEFAULT_REFRESH_S, timeout: float = CONNECTION_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS):
        if not refresh_seconds > 0:
            raise ValueError(f"refresh interval must be positive, got {refresh_seconds!r} s")
        if not isinstance(host, str) or not host.strip():
            raise ValueError(f"no address to listen on (--host {host!r}): an empty host would listen on every "
                             "interface; give 127.0.0.1 (this machine only) or an explicit address (0.0.0.0: all)")
        if not timeout > 0 or not max_connections >= 1:
            raise ValueError(f"timeout and max_connections must be positive, got {timeout!r} and {max_connections!r}")
        self.connection_timeout = float(timeout)
        self._slots = threading.BoundedSemaphore(max_connections)
        self.allowed_hosts, self.any_ip = _allowed_hosts(host)
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

    def process_request(self, request, client_address) -> None:
        """Serves the connection in a thread of its own if a slot is free; otherwise answers 503 at once."""
        if not self._slots.acquire(blocking=False):
            _answer_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: give its slot back
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        """Quiet about readers that went away or stalled past the timeout; anything else is printed."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's Host header names this server (see the module docstring)."""
        match = _HOST.match((header or "").strip())
        if not match:
            return False
        name = (match.group("ipv6") or match.group("name")).lower().rstrip(".")
        return name in self.allowed_hosts or self.any_ip and _is_ip(name)

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


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _allowed_hosts(host: str) -> tuple[frozenset[str], bool]:
    """The Host names a server bound to `host` answers (loopback's and the bound name itself; for a wildcard
    address the machine's own names too), and whether any IP literal is answered (a wildcard address)."""
    bound = host.strip().strip("[]").lower().rstrip(".")
    names = {*LOOPBACK_NAMES, bound}
    wildcard = bound in ("0.0.0.0", "::")
    if wildcard:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names), wildcard


def _answer_busy(request: socket.socket) -> None:
    """A 503 written straight to a connection the server has no thread for; never blocks the accept loop."""
    body = b"too many connections; retry shortly\n"
    with contextlib.suppress(OSError):
        request.setblocking(False)
        request.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(body), body))


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "mnas-dashboard"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.connection_timeout  # StreamRequestHandler sets it on the socket
        super().setup()

    def parse_request(self) -> bool:
        """Refuses a request for another host name (421) and every method but GET (405) before it reaches a
        handler: the dashboard answers only its own names, and changes nothing."""
        if not super().parse_request():
            return False
        host = self.headers.get("Host")
        if not host:
            self._refuse(HTTPStatus.BAD_REQUEST, b"no Host header\n")
            return False
        if not self.server.host_allowed(host):
            self._refuse(HTTPStatus.MISDIRECTED_REQUEST, b"unknown host: this dashboard answers only the names it "
                                                         b"listens on (127.0.0.1, localhost, its --host)\n")
            return False
        if self.command != "GET":
            self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, b"", Allow="GET")
            return False
        return True

    def _refuse(self, status: HTTPStatus, body: bytes, **headers: str) -> None:
        """A short plain-text answer that ends the connection."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

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
