"""The supervisor's small HTTP server (loopback by default): routes are callables, served from a thread.

>>> server = serve("127.0.0.1:8080", {"/healthz": lambda request: (200, "application/json", b"{}")})
>>> server.shutdown()

A route's key is a path for GET, or ``POST <path>``; one ending in ``/`` serves every path under
it. The route gets the ``Request`` (path, query, body). A ``Range: bytes=`` request for a 200
answer gets the part asked for (206), which browsers need to play and seek video. With a
``guard`` every route but the ``open`` ones (``/healthz``, for probes) answers 401 without the
secret; with ``tls`` (certificate and key files) the server speaks HTTPS only. A client
gets ``TIMEOUT_S`` in all to send its request and read the answer, and at most ``MAX_CONNECTIONS`` are
served at once (the rest are closed at once), so idle or half-open connections cannot pile up
threads in the supervisor.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.httpauth import Guard

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
MAX_CONNECTIONS = 32
MAX_BODY = 64 * 1024  # a POST's body; the API takes small JSON only


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]  # the last value of each parameter
    body: bytes = b""
    content_type: str = ""


Reply = tuple[int, str, bytes | Path]  # status, content type, body (a file is streamed, by ranges)
CHUNK = 256 * 1024
Route = Callable[[Request], Reply]


@dataclass(frozen=True)
class Site:
    """What the server answers, and to whom."""

    routes: dict[str, Route]
    guard: Guard | None
    open_paths: frozenset[str]  # answered without the guard's secret
    hosts: frozenset[str] | None  # without a guard, the only ``Host`` names answered


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, up to ``MAX_CONNECTIONS``; client hang-ups are not errors."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], site: Site) -> None:
        self.site = site
        super().__init__(address, RouteHandler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.deadlines: dict[socket.socket, float] = {}  # open connections and when they must end
        self.lock = threading.Lock()
        threading.Thread(target=self._reap, name="http-reaper", daemon=True).start()

    def process_request(self, request: socket.socket, client_address: object) -> None:
        if not self.slots.acquire(blocking=False):
            log.debug("HTTP: %d connections open, closing one from %s", MAX_CONNECTIONS, client_address)
            self.shutdown_request(request)
            return
        with self.lock:
            self.deadlines[request] = time.monotonic() + TIMEOUT_S
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.lock:
                self.deadlines.pop(request, None)
            self.slots.release()

    def extend(self, request: socket.socket) -> None:
        """A connection that is moving data gets ``TIMEOUT_S`` more."""
        with self.lock:
            if request in self.deadlines:
                self.deadlines[request] = time.monotonic() + TIMEOUT_S

    def _reap(self) -> None:
        """Hang up on connections past their deadline: a client trickling its request a byte at a
        time would otherwise hold a slot for ever, one read timeout after another."""
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            with self.lock:
                late = [request for request, deadline in self.deadlines.items() if deadline < now]
            for request in late:
                with contextlib.suppress(OSError):
                    request.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: socket.socket, client_address: object) -> None:
        log.debug("HTTP: connection from %s ended early", client_address, exc_info=True)


def _route(routes: dict[str, Route], key: str) -> Route | None:
    """The route for ``key`` (``/path`` or ``POST /path``): exact, else the longest prefix ending in ``/``."""
    if key in routes:
        return routes[key]
    prefixes = [p for p in routes if p.endswith("/") and key.startswith(p) and p.rpartition(" ")[2] != "/"]
    return routes[max(prefixes, key=len)] if prefixes else None


def _part(size: int, header: str | None) -> tuple[int, int, int, str | None]:
    """What a ``Range: bytes=a-b`` header asks of ``size`` bytes: (status, first, count, Content-Range);
    an unreadable or backwards range is ignored (the whole body, RFC 9110)."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if not match or match.groups() == ("", ""):
        return 200, 0, size, None
    first, last = match.groups()
    start, end = (int(first), min(int(last or size - 1), size - 1)) if first else (max(size - int(last), 0), size - 1)
    if start > end and start < size:
        return 200, 0, size, None
    if start >= size:
        return 416, 0, 0, f"bytes */{size}"
    return 206, start, end - start + 1, f"bytes {start}-{end}/{size}"


def _host(header: str | None) -> str:
    """The host name of a ``Host`` header, without its port."""
    host = (header or "").strip().lower()
    return host.partition("]")[0] + "]" if host.startswith("[") else host.rpartition(":")[0] or host


class RouteHandler(BaseHTTPRequestHandler):
    """A connection's requests, answered from its server's ``Site``."""

    timeout = TIMEOUT_S  # per read; the server's reaper bounds the whole connection
    server: BoundedHTTPServer

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        status, content_type, body = self._reply(method)
        self._send(status, content_type, body, self.headers.get("Range") if method == "GET" else None)

    def _reply(self, method: str) -> Reply:
        """The route's answer, unless the host, the secret, the path or the body's length refuses it."""
        site = self.server.site
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        route = _route(site.routes, path if method == "GET" else f"{method} {path}")
        length = self.headers.get("Content-Length") or "0"
        host = _host(self.headers.get("Host"))  # browsers always send it; a bare HTTP/1.0 probe may not
        if not site.guard and site.hosts and host and host not in site.hosts:
            return 421, "text/plain", b"this server does not answer for that host\n"
        if site.guard and path not in site.open_paths and not site.guard.allows(self.headers.get("Authorization")):
            return 401, "text/plain", b"authentication required\n"
        if route is None:
            return 404, "text/plain", b"not found\n"
        if not length.isdigit() or int(length) > MAX_BODY:
            return 413, "text/plain", b"request body missing a length or too large\n"
        query = dict(urllib.parse.parse_qsl(url.query))
        posted = self.rfile.read(int(length)) if int(length) else b""
        request = Request(method, path, query, posted, self.headers.get("Content-Type", ""))
        try:
            status, content_type, body = route(request)
        except Exception as error:  # a broken page must not take the server down
            log.exception("HTTP %s failed", self.path)
            return 500, "text/plain", f"{type(error).__name__}\n".encode()
        return status, content_type, body

    def _send(self, status: int, content_type: str, body: bytes | Path, ranges: str | None) -> None:
        """The answer; a file is read from disk by chunks (a clip may be hundreds of MB), each one
        giving the connection more time, so that a slow link still gets it all."""
        try:
            source = body.open("rb") if isinstance(body, Path) else io.BytesIO(body)
        except OSError:  # deleted by retention since the route found it
            source, status, content_type = io.BytesIO(b"gone\n"), 404, "text/plain"
        with source:
            size = source.seek(0, io.SEEK_END)
            first, count, content_range = 0, size, None
            if status == 200 and ranges:
                status, first, count, content_range = _part(size, ranges)
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="vestwatch", charset="UTF-8"')
            if content_range:
                self.send_header("Content-Range", content_range)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(count))
            # recorded files never change: the browser may keep them; everything else is live
            self.send_header("Cache-Control", "private, max-age=86400" if isinstance(body, Path) else "no-store")
            self.end_headers()
            source.seek(first)
            while count > 0 and (chunk := source.read(min(CHUNK, count))):
                self.wfile.write(chunk)
                count -= len(chunk)
                self.server.extend(self.request)

    def log_message(self, format: str, *args: object) -> None:
        log.debug(format, *args)


def serve(
    address: str,
    routes: dict[str, Route],
    guard: Guard | None = None,
    open_paths: frozenset[str] = frozenset({"/healthz"}),
    tls: tuple[Path, Path] | None = None,
    hosts: frozenset[str] | None = None,
) -> ThreadingHTTPServer:
    """``hosts``: without a ``guard``, the only ``Host`` names answered (others get 421), so that a
    web page whose name was rebound to this machine's address cannot read the pages."""
    host, _, port = address.rpartition(":")
    server = BoundedHTTPServer((host or "127.0.0.1", int(port)), Site(routes, guard, open_paths, hosts))
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
