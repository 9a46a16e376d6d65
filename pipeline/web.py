"""The supervisor's small HTTP server (loopback by default): routes are callables, served from a thread.

>>> server = serve("127.0.0.1:8080", {"/healthz": lambda request: (200, "application/json", b"{}")})
>>> server.shutdown()

A route's key is a path for GET, or ``POST <path>``; one ending in ``/`` serves every path under
it. The route gets the ``Request`` (path, query, body). A ``Range: bytes=`` request for a 200
answer gets the part asked for (206), which browsers need to play and seek video; a number in
``Range`` or ``Content-Length`` that is not 1 to 18 ASCII digits gets 400. With a ``guard`` every
route but the ``open`` ones (``/healthz``, for probes) answers 401 without the secret, and 429
(``Retry-After``) to an address that sent too many wrong ones; with ``tls`` (certificate and key
files) the server speaks HTTPS only.

A client gets ``REQUEST_S`` in all to send its request line and headers, then ``TIMEOUT_S`` to be
answered (more while the answer moves), and at most ``MAX_CONNECTIONS`` are served at once, so idle
or half-open connections cannot pile up threads in the supervisor. When all are taken a newcomer
displaces the oldest connection still sending its request, of the address with the most such, so
that a flood of slow requests (slowloris) costs its sender its own connections while a probe or a
person still gets in; it is closed at once only when every connection is being answered.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.httpauth import BackoffError, Guard

log = logging.getLogger(__name__)

REQUEST_S = 3.0  # to send the request line and headers, in all: a slow sender gets no more
TIMEOUT_S = 10.0  # then to be answered, renewed while the answer moves
MAX_CONNECTIONS = 32
DISPLACE_WAIT_S = 1.0  # for a displaced connection's thread to end and free its slot
MAX_BODY = 64 * 1024  # a POST's body; the API takes small JSON only
NUMBER = re.compile(r"[0-9]{1,18}")  # int() would take '٣', and fail on '²' or 5000 digits: no answer at all
RANGE = re.compile(r"bytes=([^,-]*)-([^,]*)")  # one range; several, or another unit, are ignored
CHALLENGE = 'Basic realm="vestwatch", charset="UTF-8"'  # a browser asks for the secret


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]  # the last value of each parameter
    body: bytes = b""
    content_type: str = ""
    role: str | None = None  # what its secret gave (``pipeline.httpauth``); None: no guard, or an open path
    client: str = ""  # its address


Reply = tuple[int, str, bytes | Path]  # status, content type, body (a file is streamed, by ranges)
Answer = tuple[int, str, bytes | Path, dict[str, str]]  # a reply and the headers it adds
CHUNK = 256 * 1024
Route = Callable[[Request], Reply]


@dataclass(frozen=True)
class Site:
    """What the server answers, and to whom."""

    routes: dict[str, Route]
    guard: Guard | None
    open_paths: frozenset[str]  # answered without the guard's secret
    hosts: frozenset[str] | None  # without a guard, the only ``Host`` names answered


@dataclass
class Connection:
    client: str  # the address it comes from
    deadline: float  # when the server hangs up on it
    receiving: bool = True  # its request line and headers not all in yet: a newcomer may displace it


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, up to ``MAX_CONNECTIONS``; client hang-ups are not errors."""

    daemon_threads = True
    request_queue_size = 128  # a burst of connections waits to be accepted, not for the client's SYN resend

    def __init__(self, address: tuple[str, int], site: Site) -> None:
        self.site = site
        super().__init__(address, RouteHandler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.connections: dict[socket.socket, Connection] = {}  # the open ones, oldest first
        self.lock = threading.Lock()
        threading.Thread(target=self._reap, name="http-reaper", daemon=True).start()

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        if not self.slots.acquire(blocking=False) and not (
            self._displace() and self.slots.acquire(timeout=DISPLACE_WAIT_S)
        ):
            log.debug("HTTP: %d connections being answered, closing one from %s", MAX_CONNECTIONS, client_address)
            self.shutdown_request(request)
            return
        with self.lock:
            self.connections[request] = Connection(client_address[0], time.monotonic() + REQUEST_S)
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.lock:
                self.connections.pop(request, None)
            self.slots.release()

    def _displace(self) -> bool:
        """Hang up on the oldest connection still sending its request, of the address with the most
        such (its thread then ends and frees a slot); False if every connection is being answered."""
        with self.lock:
            receiving = [(request, c.client) for request, c in self.connections.items() if c.receiving]
            if not receiving:
                return False
            busiest = Counter(client for _, client in receiving).most_common(1)[0][0]
            victim = next(request for request, client in receiving if client == busiest)
            del self.connections[victim]
        log.debug("HTTP: %d connections open, displacing one from %s", MAX_CONNECTIONS, busiest)
        with contextlib.suppress(OSError):
            victim.shutdown(socket.SHUT_RDWR)
        return True

    def extend(self, request: socket.socket) -> bool:
        """A connection whose request is in, or that is moving data, gets ``TIMEOUT_S`` more, and no
        newcomer displaces it; False if it was hung up on (its request may be cut short)."""
        with self.lock:
            if connection := self.connections.get(request):
                connection.deadline, connection.receiving = time.monotonic() + TIMEOUT_S, False
            return connection is not None

    def _reap(self) -> None:
        """Hang up on connections past their deadline: a client trickling its request a byte at a
        time would otherwise hold a slot for ever, one read timeout after another."""
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            with self.lock:
                late = [request for request, connection in self.connections.items() if connection.deadline < now]
                for request in late:
                    del self.connections[request]
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


def _number(text: str, header: str) -> int:
    """``text``, a byte count or position from ``header``; ValueError unless it is 1 to 18 ASCII digits."""
    if not NUMBER.fullmatch(text):
        raise ValueError(f"{header}: {text[:20]!r} is not a number of bytes")
    return int(text)


def _range(header: str | None) -> tuple[int | None, int | None] | None:
    """The first and last byte a ``Range: bytes=a-b`` header asks for (either may be missing); None without
    one, or for several ranges or another unit (the whole body, RFC 9110); ValueError for a malformed number."""
    match = RANGE.fullmatch((header or "").strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    return (_number(first, "Range") if first else None), (_number(last, "Range") if last else None)


def _part(size: int, wanted: tuple[int | None, int | None] | None) -> tuple[int, int, int, str | None]:
    """What ``wanted`` (``_range``) is of ``size`` bytes: (status, first, count, Content-Range); a
    backwards range is ignored (the whole body, RFC 9110)."""
    if wanted is None:
        return 200, 0, size, None
    first, last = wanted
    if first is None:  # the last ``last`` bytes
        start, end = max(size - (last or 0), 0), size - 1
    else:
        start, end = first, size - 1 if last is None else min(last, size - 1)
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
        if not self.server.extend(self.request):  # hung up on: its headers only ended at the cut
            return
        status, content_type, body, headers = self._reply(method)
        self._send(status, content_type, body, headers, self.headers.get("Range") if method == "GET" else None)

    def _reply(self, method: str) -> Answer:
        """The route's answer, unless the host, the secret, a malformed number, the path or the body's
        length refuses it."""
        site = self.server.site
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        route = _route(site.routes, path if method == "GET" else f"{method} {path}")
        host = _host(self.headers.get("Host"))  # browsers always send it; a bare HTTP/1.0 probe may not
        if not site.guard and site.hosts and host and host not in site.hosts:
            return 421, "text/plain", b"this server does not answer for that host\n", {}
        role = None
        if site.guard and path not in site.open_paths:
            try:
                role = site.guard.allows(self.headers.get("Authorization"), self.client_address[0])
            except BackoffError as refusal:
                return 429, "text/plain", f"{refusal}\n".encode(), {"Retry-After": str(math.ceil(refusal.wait_s))}
            if role is None:
                return 401, "text/plain", b"authentication required\n", {"WWW-Authenticate": CHALLENGE}
        try:
            length = _number(self.headers.get("Content-Length") or "0", "Content-Length")
            _range(self.headers.get("Range"))  # only read here; _send takes the part it asks for
        except ValueError as error:
            return 400, "text/plain", f"{error}\n".encode(), {}
        if route is None:
            return 404, "text/plain", b"not found\n", {}
        if length > MAX_BODY:
            return 413, "text/plain", b"request body too large\n", {}
        query = dict(urllib.parse.parse_qsl(url.query))
        posted = self.rfile.read(length) if length else b""
        if len(posted) < length:  # the client hung up, or was hung up on: no request to act on
            return 400, "text/plain", b"request body cut short\n", {}
        request = Request(
            method, path, query, posted, self.headers.get("Content-Type", ""), role=role, client=self.client_address[0]
        )
        try:
            status, content_type, body = route(request)
        except Exception as error:  # a broken page must not take the server down
            log.exception("HTTP %s failed", self.path)
            return 500, "text/plain", f"{type(error).__name__}\n".encode(), {}
        return status, content_type, body, {}

    def _send(
        self, status: int, content_type: str, body: bytes | Path, headers: dict[str, str], ranges: str | None
    ) -> None:
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
                status, first, count, content_range = _part(size, _range(ranges))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
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
