"""The webhooks sink against a real local HTTP server that fails its first attempts."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.detections import Detections
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
        ok = self.server.attempts > self.server.failures
        self.send_response(200 if ok else 503)
        self.end_headers()
        if ok:
            self.server.taken.append((json.loads(body), self.headers.get("Authorization")))
            self.server.took.set()

    def log_message(self, *args: object) -> None:
        """Quiet."""


class Receiver(ThreadingHTTPServer):
    """Answers 503 to the first ``failures`` POSTs, then 200; keeps what it took."""

    def __init__(self, failures: int) -> None:
        self.failures, self.taken, self.attempts = failures, [], 0
        self.took = threading.Event()
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[callable]:
    servers: list[Receiver] = []

    def start(failures: int) -> Receiver:
        servers.append(Receiver(failures))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()


def event(phase: str = "start") -> tuple[EventMessage]:
    analysis = FrameAnalysis("gate", 7, 1700000000.0, None, 640, 360, Detections([], [], []), [])
    violation = Violation("gate-1-3-site", phase, 3, "site", ["vest"], 1699999998.0, None, 2.0)
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
    assert taken == {"v": 2, "type": "event", **json.loads(json.dumps(dataclasses.asdict(sent)))}
    assert authorization == "Bearer t0ken" and server.attempts == 3
    assert sink.stats == WebhookStats(sent=1, failed=0, overflowed=0, retried=2)
    figures = {"webhook_sent": 1, "webhook_retried": 2, "webhook_failed": 0, "webhook_overflowed": 0}
    figures["webhook_queued"] = 0  # new in #23: what waits for the receiver
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
