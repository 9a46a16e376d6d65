"""The webhooks sink against real local receivers: an HTTP server that fails its first attempts or
redirects, and a TCP listener that never answers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.detections import Detections
from pipeline.messages import SCHEMA_VERSION
from stages.config import Settings, StreamSettings, WebhookSettings
from stages.stats import plugin_figures
from stages.stream.analysis import FrameAnalysis, Violation
from stages.stream.messages import EventMessage
from stages.stream.outputs.webhooks import WebhookSink, WebhookStats


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.attempts += 1
        self.server.attempted.release()
        if self.server.redirect:
            self.send_response(302)
            self.send_header("Location", self.server.redirect)
            self.end_headers()
            return
        ok = self.server.attempts > self.server.failures
        self.send_response(200 if ok else 503)
        self.end_headers()
        if ok:
            self.server.taken.append((json.loads(body), self.headers.get("Authorization")))
            self.server.took.set()

    def do_GET(self) -> None:
        """What urllib turns a redirected POST into."""
        self.server.attempts += 1
        self.server.attempted.release()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


class Receiver(ThreadingHTTPServer):
    """Answers 503 to the first ``failures`` POSTs, then 200, or to each a redirect to ``redirect``; keeps
    what it took, and releases ``attempted`` at each request."""

    def __init__(self, failures: int, redirect: str | None = None) -> None:
        self.failures, self.redirect, self.taken, self.attempts = failures, redirect, [], 0
        self.took = threading.Event()
        self.attempted = threading.Semaphore(0)
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[callable]:
    servers: list[Receiver] = []

    def start(failures: int, redirect: str | None = None) -> Receiver:
        servers.append(Receiver(failures, redirect))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class Silent:
    """A TCP listener that accepts connections and reads what comes, and never answers: a hung receiver."""

    def __init__(self) -> None:
        self.listening = socket.create_server(("127.0.0.1", 0))
        self.port = self.listening.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.heard = threading.Event()  # some bytes came
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listening.accept()
            except OSError:  # closed
                return
            self.connections.append(connection)
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while connection.recv(65536):
                self.heard.set()

    def close(self) -> None:
        """Wakes the threads blocked on the sockets (shutdown), which a bare close would not."""
        for sock in [self.listening, *self.connections]:
            with contextlib.suppress(OSError):  # a connection the client has closed
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def silent() -> Iterator[callable]:
    listeners: list[Silent] = []

    def start() -> Silent:
        listeners.append(Silent())
        return listeners[-1]

    yield start
    for listener in listeners:
        listener.close()


def event(phase: str = "start") -> tuple[EventMessage]:
    analysis = FrameAnalysis("gate", 7, 1700000000.0, None, 640, 360, Detections([], [], []), [])
    violation = Violation("gate-1-3-site", phase, 3, ["site"], ["vest"], ["vest"], 1699999998.0, None, 2.0)
    return (EventMessage.from_violation(analysis, violation, [1.0, 2.0, 3.0, 4.0], {"snapshot": "/s.jpg"}),)


def test_an_event_reaches_a_receiver_that_fails_twice_first(receiver) -> None:
    server = receiver(failures=2)
    target = WebhookSettings(url=server.url, backoff_s=0.05, headers={"Authorization": "Bearer t0ken"})
    sink = WebhookSink(StreamSettings(id="gate", url="demo"), [target])
    (sent,) = event()
    sink.events((sent,))
    assert server.took.wait(10), "never delivered"
    sink.close()
    ((taken, authorization),) = server.taken
    assert taken["type"] == "event" and taken["event_id"] == "gate-1-3-site" and taken["missing"] == ["vest"]
    assert taken == {"v": SCHEMA_VERSION, "type": "event", **json.loads(json.dumps(dataclasses.asdict(sent)))}
    assert authorization == "Bearer t0ken" and server.attempts == 3
    assert sink.stats == WebhookStats(sent=1, failed=0, overflowed=0, retried=2)
    figures = {"webhook_sent": 1, "webhook_retried": 2, "webhook_failed": 0, "webhook_overflowed": 0}
    figures["webhook_queued"] = 0  # new in #23: what waits for the receiver
    figures["webhook_dropped_on_stop"] = 0  # new: what was still waiting when the stage stopped
    assert plugin_figures(sink.prefix, sink.stats) == figures, "ctl status names them as before"


def test_out_of_retries_and_overflow_are_counted(receiver) -> None:
    server = receiver(failures=100)
    target = WebhookSettings(url=server.url, retries=1, backoff_s=0.05, queue=2)
    sink = WebhookSink(StreamSettings(id="gate", url="demo"), [target])
    for _ in range(6):  # the first is being tried; the queue holds 2 of the other 5
        sink.events(event())
    with sink.posters[0].counting:  # a consistent copy: the poster's thread counts under this lock
        stats = dataclasses.replace(sink.stats)
    assert stats.queued >= 1 and stats.queued + stats.sent + stats.failed + stats.overflowed == 6, stats
    sink.close()
    stats = sink.stats
    assert stats.sent == 0 and stats.overflowed >= 3 and stats.failed >= 1
    assert stats.queued == 0 and stats.failed + stats.overflowed == 6, "each phase counted once, none left waiting"


def test_no_sink_for_a_stream_no_webhook_takes() -> None:
    settings = Settings(webhooks=[WebhookSettings(url="http://127.0.0.1:9/x", streams=["yard"])])
    assert WebhookSink.create(settings, StreamSettings(id="gate", url="demo")) is None
    yard = WebhookSink.create(settings, StreamSettings(id="yard", url="demo"))
    assert yard is not None
    yard.close()


GATE = StreamSettings(id="gate", url="demo")


def test_a_redirect_is_a_failure_not_followed(receiver, caplog) -> None:
    """urllib would re-send the POST as a GET, the Authorization header with it, to the other host."""
    elsewhere = receiver(failures=0)
    server = receiver(failures=0, redirect=f"{elsewhere.url}?token=t0ken")
    target = WebhookSettings(url=server.url, retries=1, backoff_s=0.05, headers={"Authorization": "Bearer t0ken"})
    sink = WebhookSink(GATE, [target])
    sink.events(event())
    for _ in range(2):
        assert server.attempted.acquire(timeout=5), "a redirect is a failure, tried again"
    sink.close()  # the last attempt is answered
    assert elsewhere.attempts == 0, "followed"
    assert sink.stats == WebhookStats(retried=1, failed=1)
    (line,) = [record.getMessage() for record in caplog.records if "redirect" in record.getMessage()]
    assert f"HTTP 302, a redirect to {elsewhere.url}?token=***, not followed" in line


def test_a_redirect_never_leaves_http(receiver, silent) -> None:
    ftp = silent()
    server = receiver(failures=0, redirect=f"ftp://127.0.0.1:{ftp.port}/events")
    sink = WebhookSink(GATE, [WebhookSettings(url=server.url, retries=0, timeout_s=1)])
    sink.events(event())
    assert server.attempted.acquire(timeout=5)
    sink.close()
    assert ftp.connections == [] and sink.stats == WebhookStats(failed=1)


def test_no_secret_of_a_url_reaches_the_log(receiver, caplog) -> None:
    """The URL of the webhook, of where it redirects, of the thread, in an error: each redacted."""
    caplog.set_level(logging.WARNING)
    server = receiver(failures=0, redirect="http://alice:hunter2@127.0.0.1:9/x?token=SECRET")
    urls = [
        f"{server.url}?token=SECRET",
        f"http://alice:hunter2@127.0.0.1:{server.server_address[1]}/hook?token=SECRET",  # the host, for urllib
    ]
    sink = WebhookSink(GATE, [WebhookSettings(url=url, retries=0) for url in urls])
    sink.events(event())
    sink.close()
    assert sink.stats == WebhookStats(failed=2)
    logged = [f"{record.threadName} {record.getMessage()}" for record in caplog.records]
    logged += [poster.thread.name for poster in sink.posters]
    assert "alice:***@" in str(logged) and "token=***" in str(logged), logged
    assert not [line for line in logged if "SECRET" in line or "hunter2" in line]


def test_hung_receivers_hold_a_stop_two_seconds_in_all(silent, caplog) -> None:
    """Each in turn, nine would take 18 s, more than the stage's stop grace."""
    hung = [silent() for _ in range(9)]
    sink = WebhookSink(GATE, [WebhookSettings(url=f"http://127.0.0.1:{h.port}/hook", timeout_s=30) for h in hung])
    for _ in range(3):
        sink.events(event())
    for receiver in hung:
        assert receiver.heard.wait(5), "no POST came"
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 3
    assert sink.stats == WebhookStats(dropped_on_stop=27), "the one being POSTed and the two behind it, each"
    assert "webhooks: 27 events not delivered at stop" in caplog.text
