"""The HTTP server's guard and TLS, over real sockets: what a browser or a probe gets."""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.httpauth import Guard, hash_secret
from pipeline.web import Request, serve
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
