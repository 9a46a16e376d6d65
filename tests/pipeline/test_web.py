"""The HTTP server's guard and TLS, over real sockets: what a browser or a probe gets."""

from __future__ import annotations

import base64
import contextlib
import http.client
import selectors
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.httpauth import FREE_FAILURES, Guard, hash_secret
from pipeline.web import MAX_CONNECTIONS, REQUEST_S, Request, serve
from stages.config import Settings
from tests.harness import free_port

SECRET = "correct horse battery"
ROUTES = {
    "/": lambda request: (200, "text/html", b"<h1>live</h1>"),
    "/healthz": lambda request: (200, "application/json", b"{}"),
    "/metrics": lambda request: (200, "text/plain", b"x 1\n"),
}


def get(url: str, authorization: str | None = None, context: ssl.SSLContext | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"officer:{password}".encode()).decode()


def get_from(source: str, address: str, path: str, authorization: str) -> int:
    """The status a client at ``source`` (any 127.x.y.z is this machine) gets."""
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", path, headers={"Authorization": authorization})
        return connection.getresponse().status
    finally:
        connection.close()


def raw(address: str, request: bytes) -> bytes:
    """The start of the answer to bytes sent as they are (b"" for none), the client done sending."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        try:
            return connection.recv(64)
        except ConnectionResetError:
            return b""


def test_every_page_but_healthz_needs_the_secret() -> None:
    address = f"127.0.0.1:{free_port()}"
    server = serve(address, ROUTES, guard=Guard(hash_secret(SECRET, iterations=1000)))
    try:
        status, headers = get(f"http://{address}/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")  # the browser asks
        assert get(f"http://{address}/metrics")[0] == 401
        assert get(f"http://{address}/", basic("wrong password"))[0] == 401
        assert get(f"http://{address}/healthz")[0] == 200  # probes need no secret
        assert get(f"http://{address}/", basic(SECRET))[0] == 200
        assert get(f"http://{address}/metrics", f"Bearer {SECRET}")[0] == 200
    finally:
        server.shutdown()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_tls_serves_https_only(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    address = f"127.0.0.1:{free_port()}"
    server = serve(address, ROUTES, guard=Guard(hash_secret(SECRET, iterations=1000)), tls=(cert, key))
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        trusting.check_hostname = False
        assert get(f"https://{address}/", basic(SECRET), trusting)[0] == 200
        assert get(f"https://{address}/", None, trusting)[0] == 401
        with pytest.raises(OSError):  # refused or reset: no HTTP answer
            get(f"http://{address}/healthz")  # plain HTTP gets nothing
    finally:
        server.shutdown()


def test_off_loopback_without_a_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="off loopback: set http_password_hash"):
        Settings(http="0.0.0.0:8080")
    with pytest.raises(ValidationError, match="never the password"):
        Settings(http="0.0.0.0:8080", http_password_hash=SECRET)
    assert Settings(http="0.0.0.0:8080", http_password_hash=hash_secret(SECRET, iterations=1000))


def test_ranges_posts_and_queries_reach_their_routes() -> None:
    """What the review page needs: video played by ranges, JSON POSTs, filters in the query."""
    seen: list[Request] = []

    def remember(request: Request) -> tuple[int, str, bytes]:
        seen.append(request)
        return 200, "application/json", b'{"ok": true}'

    routes = {
        "/clip.mp4": lambda request: (200, "video/mp4", bytes(range(100))),
        "/api/": remember,
        "POST /api/": remember,
    }
    address = f"127.0.0.1:{free_port()}"
    server = serve(address, routes)
    try:
        ranged = urllib.request.Request(f"http://{address}/clip.mp4", headers={"Range": "bytes=10-19"})
        with urllib.request.urlopen(ranged, timeout=10) as response:
            assert response.status == 206 and response.headers["Content-Range"] == "bytes 10-19/100"
            assert response.read() == bytes(range(10, 20))
        tail = urllib.request.Request(f"http://{address}/clip.mp4", headers={"Range": "bytes=-5"})
        assert urllib.request.urlopen(tail, timeout=10).read() == bytes(range(95, 100))
        beyond = urllib.request.Request(f"http://{address}/clip.mp4", headers={"Range": "bytes=200-"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(beyond, timeout=10)
        assert refused.value.code == 416

        assert get(f"http://{address}/api/events?stream=gate&day=2026-11-26")[0] == 200
        post = urllib.request.Request(
            f"http://{address}/api/events/x/ack", data=b"{}", headers={"Content-Type": "application/json"}
        )
        assert urllib.request.urlopen(post, timeout=10).status == 200
        assert [(r.method, r.path, r.query, r.body, r.content_type) for r in seen] == [
            ("GET", "/api/events", {"stream": "gate", "day": "2026-11-26"}, b"", ""),
            ("POST", "/api/events/x/ack", {}, b"{}", "application/json"),
        ]
        assert get(f"http://{address}/clip.mp4/more")[0] == 404, "only keys ending in / take paths under them"
    finally:
        server.shutdown()


def test_without_a_password_only_its_own_host_names_are_answered() -> None:
    """A page on another site whose name is rebound to 127.0.0.1 (DNS rebinding) gets nothing."""
    address = f"127.0.0.1:{free_port()}"
    server = serve(address, ROUTES, hosts=frozenset({"127.0.0.1", "localhost"}))
    try:
        assert get(f"http://{address}/")[0] == 200
        rebound = urllib.request.Request(f"http://{address}/", headers={"Host": "attacker.example:8080"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=10)
        assert refused.value.code == 421
        with socket.create_connection(("127.0.0.1", int(address.rpartition(":")[2])), timeout=10) as probe:
            probe.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")  # a bare probe without Host (no browser)
            assert probe.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        server.shutdown()


def test_wrong_secrets_back_off_per_address_without_being_hashed() -> None:
    """A burst of guesses: only the free ones are hashed (401), the rest refused unchecked (429) until
    the back-off passes, even the right secret; /healthz and other addresses are unaffected."""
    address = f"127.0.0.1:{free_port()}"
    server = serve(address, ROUTES, guard=Guard(hash_secret(SECRET, iterations=1000)))
    guesses = 24
    start = threading.Barrier(guesses)

    def guess(number: int) -> tuple[int, dict]:
        start.wait()
        return get(f"http://{address}/", basic(f"guess {number}"))

    try:
        with ThreadPoolExecutor(guesses) as pool:
            answers = list(pool.map(guess, range(guesses)))
        statuses = [status for status, _ in answers]
        assert statuses.count(401) == FREE_FAILURES and statuses.count(429) == guesses - FREE_FAILURES, statuses
        waits = [int(headers["Retry-After"]) for status, headers in answers if status == 429]
        assert min(waits) >= 1

        status, headers = get(f"http://{address}/", basic(SECRET))
        assert status == 429, "the right secret is not checked either while the address backs off"
        assert get(f"http://{address}/healthz")[0] == 200
        assert get_from("127.0.0.2", address, "/", basic(SECRET)) == 200, "another address gets in"

        time.sleep(int(headers["Retry-After"]))  # the back-off itself: no event to wait for
        assert get(f"http://{address}/", basic(SECRET))[0] == 200
        statuses = [get(f"http://{address}/", basic("wrong"))[0] for _ in range(FREE_FAILURES + 1)]
        assert statuses == [401] * FREE_FAILURES + [429], "a success starts the count afresh"
    finally:
        server.shutdown()


def test_the_table_of_failing_addresses_is_bounded() -> None:
    """A flood of addresses evicts the least recent one's failures instead of growing the table."""
    guard = Guard(hash_secret(SECRET, iterations=1000), max_clients=2)
    for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert not any(guard.allows("Bearer wrong", client) for _ in range(FREE_FAILURES))
    assert list(guard.failures) == ["10.0.0.2", "10.0.0.3"]
    assert guard.allows(f"Bearer {SECRET}", "10.0.0.1")  # forgotten: checked, not refused


def test_a_flood_of_slow_requests_leaves_healthz_and_people_answered() -> None:
    """Slowloris from the very address of the probe and the user: every slot held by a request that
    never ends, more of them coming; the probe and the user still get in, at once."""
    address = f"127.0.0.1:{free_port()}"
    server = serve(address, ROUTES, guard=Guard(hash_secret(SECRET, iterations=1000)))
    threads = threading.active_count()
    slow: list[socket.socket] = []
    try:
        with selectors.DefaultSelector() as still_open:
            for _ in range(4 * MAX_CONNECTIONS):
                connection = socket.create_connection(("127.0.0.1", int(address.rpartition(":")[2])), timeout=10)
                slow.append(connection)
                connection.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and never the rest
                still_open.register(connection, selectors.EVENT_READ)
                while len(still_open.get_map()) > MAX_CONNECTIONS:  # the server took it: one of them must go
                    hung_up = still_open.select(timeout=10)
                    assert hung_up, "the server neither took nor refused a slow connection"
                    for key, _ in hung_up:
                        with contextlib.suppress(ConnectionResetError):
                            assert not key.fileobj.recv(64), "a request that never ended was answered"
                        still_open.unregister(key.fileobj)
        started = time.monotonic()
        assert get(f"http://{address}/healthz")[0] == 200
        assert get(f"http://{address}/", basic(SECRET))[0] == 200
        assert time.monotonic() - started < REQUEST_S, "answered at once, not once the slow ones timed out"
        assert threading.active_count() <= threads + MAX_CONNECTIONS
    finally:
        for connection in slow:
            connection.close()
        server.shutdown()


def test_a_request_trickled_a_byte_at_a_time_is_cut_off_after_request_s() -> None:
    """The request line and headers get ``REQUEST_S`` in all, not per byte."""
    address = f"127.0.0.1:{free_port()}"
    server = serve(address, ROUTES)
    try:
        with socket.create_connection(("127.0.0.1", int(address.rpartition(":")[2])), timeout=10) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            connection.settimeout(0.5)
            started = time.monotonic()
            while time.monotonic() - started < REQUEST_S + 3:
                try:
                    if not connection.recv(64):
                        break  # hung up on
                except TimeoutError:
                    connection.sendall(b"x")  # a byte every half second, never the end
                except ConnectionResetError:
                    break
            assert time.monotonic() - started < REQUEST_S + 2  # the reaper looks every second
    finally:
        server.shutdown()


def test_malformed_numbers_get_400() -> None:
    """Numbers int() chokes on, or that it would take although they are not ASCII digits, get an answer."""
    seen: list[Request] = []

    def remember(request: Request) -> tuple[int, str, bytes]:
        seen.append(request)
        return 200, "text/plain", b"ok"

    address = f"127.0.0.1:{free_port()}"
    server = serve(address, {"/clip.mp4": lambda request: (200, "video/mp4", bytes(100)), "POST /api/": remember})
    huge = b"9" * 5000
    try:
        for request in (
            b"GET /clip.mp4 HTTP/1.0\r\nRange: bytes=" + huge + b"-\r\n\r\n",
            b"GET /clip.mp4 HTTP/1.0\r\nRange: bytes=0-" + huge + b"\r\n\r\n",
            "GET /clip.mp4 HTTP/1.0\r\nRange: bytes=\u00b2-\r\n\r\n".encode("latin-1"),  # superscript two
            b"POST /api/x HTTP/1.0\r\nContent-Length: " + huge + b"\r\n\r\n{}",
            "POST /api/x HTTP/1.0\r\nContent-Length: \u00b2\r\n\r\n{}".encode("latin-1"),
            "POST /api/x HTTP/1.0\r\nContent-Length: \u0663\r\n\r\n{}".encode(),  # Arabic-Indic three
        ):
            assert raw(address, request).startswith(b"HTTP/1.0 400"), request[:60]
        cut_short = raw(address, b"POST /api/x HTTP/1.0\r\nContent-Length: 10\r\n\r\n{}")
        assert cut_short.startswith(b"HTTP/1.0 400") and not seen, "a body cut short is no request"
        assert raw(address, b"GET /clip.mp4 HTTP/1.0\r\nRange: bytes=90-\r\n\r\n").startswith(b"HTTP/1.0 206")
    finally:
        server.shutdown()
