"""The ``webhooks`` sink: each violation phase POSTed as JSON to the configured URLs.

A receiver that is down or slow must neither stall the stream nor lose what it can still get:
each URL has a bounded queue drained by its own thread, a failed POST (connection error,
timeout, or a status other than 2xx) is retried with doubling back-off, and what falls out of
a full queue or runs out of retries is counted, never silently lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import asdict

import numpy as np

from pipeline.messages import SCHEMA_VERSION
from stages.config import Settings, StreamSettings, WebhookSettings
from stages.stream.analysis import FrameAnalysis
from stages.stream.messages import EventMessage

log = logging.getLogger(__name__)

FLUSH_ON_CLOSE_S = 2.0  # a stopping stage gives its queues this long


class WebhookPoster:
    """One URL's queue and the thread that sends it."""

    def __init__(self, target: WebhookSettings) -> None:
        self.target = target
        self.queue: deque[bytes] = deque()
        self.ready = threading.Condition()
        self.closing = False
        self.stats = {"sent": 0, "failed": 0, "overflowed": 0, "retried": 0}
        self.thread = threading.Thread(target=self._run, name=f"webhook {target.url}", daemon=True)
        self.thread.start()

    def put(self, body: bytes) -> None:
        with self.ready:
            if len(self.queue) >= self.target.queue:
                self.queue.popleft()
                self.stats["overflowed"] += 1
            self.queue.append(body)
            self.ready.notify()

    def _run(self) -> None:
        while True:
            with self.ready:
                while not self.queue and not self.closing:
                    self.ready.wait()
                if not self.queue:
                    return
                body = self.queue.popleft()
            self._deliver(body)

    def _deliver(self, body: bytes) -> None:
        delay = self.target.backoff_s
        for attempt in range(self.target.retries + 1):
            error = self._post(body)
            if error is None:
                self.stats["sent"] += 1
                return
            if attempt == self.target.retries or self.closing:
                break
            self.stats["retried"] += 1
            time.sleep(delay)
            delay *= 2
        self.stats["failed"] += 1
        log.warning("webhook %s: gave up on an event (%s)", self.target.url, error)

    def _post(self, body: bytes) -> str | None:
        """None when the receiver took it, else why not."""
        headers = {"Content-Type": "application/json", **self.target.headers}
        request = urllib.request.Request(self.target.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.target.timeout_s) as response:
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            return f"HTTP {error.code}"
        except (OSError, ValueError) as error:  # refused, unreachable, timed out, bad URL
            return str(error)

    def close(self) -> None:
        with self.ready:
            self.closing = True
            self.ready.notify()
        self.thread.join(FLUSH_ON_CLOSE_S)


class WebhookSink:
    every_frame = False

    def __init__(self, stream: StreamSettings, targets: list[WebhookSettings]) -> None:
        self.stream = stream
        self.posters = [WebhookPoster(target) for target in targets]

    @property
    def stats(self) -> dict[str, int]:
        """Summed over the URLs, for the stage's heartbeat."""
        keys = ("sent", "failed", "overflowed", "retried")
        return {f"webhook_{key}": sum(poster.stats[key] for poster in self.posters) for key in keys}

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        for violation in analysis.violations:
            event = EventMessage.from_violation(analysis, violation)
            body = json.dumps({"v": SCHEMA_VERSION, "type": event.TYPE, **asdict(event)}).encode()
            for poster in self.posters:
                poster.put(body)

    def close(self) -> None:
        for poster in self.posters:
            poster.close()


def webhooks(settings: Settings, stream: StreamSettings) -> WebhookSink | None:
    """Entry point ``webhooks``: none when no webhook takes this stream's events."""
    targets = [w for w in settings.webhooks if w.streams is None or stream.id in w.streams]
    return WebhookSink(stream, targets) if targets else None
