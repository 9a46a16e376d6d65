"""The ``webhooks`` sink: each violation phase POSTed as JSON to the configured URLs, and each change of
the camera's state (``camera_down``, ``camera_degraded``, ``camera_up``: a ``camera`` message).

A receiver that is down or slow must neither stall the stream nor lose what it can still get:
each URL has a bounded queue drained by its own thread, a failed POST (connection error,
timeout, or a status other than 2xx) is retried with doubling back-off, and what falls out of
a full queue or runs out of retries is counted, never silently lost.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass

from stages.config import Settings, StreamSettings, WebhookSettings
from stages.stats import PluginStats, counter, gauge
from stages.stream.messages import CameraMessage, EventMessage
from stages.stream.outputs.base import Sink

log = logging.getLogger(__name__)

FLUSH_ON_CLOSE_S = 2.0  # a stopping stage gives its queues this long


@dataclass
class WebhookStats(PluginStats):
    """Summed over the URLs; ``webhook_sent``... in ``ctl status``."""

    sent: int = counter("vestwatch_webhook_sent_total", "Event phases a webhook receiver took")
    retried: int = counter("vestwatch_webhook_retried_total", "Webhook POSTs tried again")
    failed: int = counter("vestwatch_webhook_failed_total", "Event phases a webhook gave up on, out of retries")
    overflowed: int = counter("vestwatch_webhook_overflowed_total", "Event phases pushed out of a full webhook queue")
    queued: int = gauge(
        "vestwatch_webhook_queued", "Event phases waiting for a webhook receiver, those being tried included"
    )


class WebhookPoster:
    """One URL's queue and the thread that sends it; counts into the sink's figures under ``counting``."""

    def __init__(self, target: WebhookSettings, stats: WebhookStats, counting: threading.Lock) -> None:
        self.target = target
        self.queue: deque[bytes] = deque()
        self.ready = threading.Condition()
        self.closing = False
        self.stats, self.counting = stats, counting
        self.thread = threading.Thread(target=self._run, name=f"webhook {target.url}", daemon=True)
        self.thread.start()

    def put(self, body: bytes) -> None:
        with self.ready:
            if len(self.queue) >= self.target.queue:
                self.queue.popleft()
                with self.counting:
                    self.stats.overflowed += 1
            else:
                with self.counting:
                    self.stats.queued += 1
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
                with self.counting:
                    self.stats.sent += 1
                    self.stats.queued -= 1
                return
            if attempt == self.target.retries or self.closing:
                break
            with self.counting:
                self.stats.retried += 1
            time.sleep(delay)
            delay *= 2
        with self.counting:
            self.stats.failed += 1
            self.stats.queued -= 1
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


class WebhookSink(Sink):
    """Each event phase, as JSON (``EventMessage.to_json``), to every URL that takes this stream's."""

    prefix = "webhook"
    stats_type = WebhookStats
    stats: WebhookStats

    @classmethod
    def create(cls, settings: Settings, stream: StreamSettings) -> WebhookSink | None:
        """Entry point ``webhooks``: none when no webhook takes this stream's events."""
        targets = [w for w in settings.webhooks if w.streams is None or stream.id in w.streams]
        return cls(stream, targets) if targets else None

    def __init__(self, stream: StreamSettings, targets: list[WebhookSettings]) -> None:
        super().__init__()
        self.stream = stream
        counting = threading.Lock()  # the posters' threads count into one WebhookStats
        self.posters = [WebhookPoster(target, self.stats, counting) for target in targets]

    def _to_all(self, body: bytes) -> None:
        for poster in self.posters:
            poster.put(body)

    def events(self, events: tuple[EventMessage, ...]) -> None:
        for event in events:
            self._to_all(event.to_json())

    def camera(self, message: CameraMessage) -> None:
        if message.previous:  # a change; not the state a camera starts in
            self._to_all(message.to_json())

    def close(self) -> None:
        for poster in self.posters:
            poster.close()
