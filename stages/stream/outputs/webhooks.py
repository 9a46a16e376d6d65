"""The ``webhooks`` sink: each violation phase POSTed as JSON to the configured URLs, and each change of
the camera's state (``camera_down``, ``camera_degraded``, ``camera_up``: a ``camera`` message).

A receiver that is down or slow must neither stall the stream nor lose what it can still get:
each URL has a bounded queue drained by its own thread, a failed POST (connection error,
timeout, or a status other than 2xx) is retried with doubling back-off, and what falls out of
a full queue or runs out of retries is counted, never silently lost.

A redirect is not followed: urllib would re-send the POST as a GET, headers (the Authorization token)
included, to whatever host or scheme the answer names; a 3xx is a failed POST, its Location logged.
URLs are logged redacted (``redact``): a webhook's URL often carries its token. Stopping gives all the
queues together ``FLUSH_ON_CLOSE_S``, not each in turn, so that slow receivers cannot outlast the stage's
stop grace; what is still waiting then is counted as ``dropped_on_stop``.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass

from stages.config import Settings, StreamSettings, WebhookSettings, redact
from stages.stats import PluginStats, counter, gauge
from stages.stream.messages import CameraMessage, EventMessage
from stages.stream.outputs.base import Sink

log = logging.getLogger(__name__)

FLUSH_ON_CLOSE_S = 2.0  # a stopping stage gives all its queues together this long


@dataclass
class WebhookStats(PluginStats):
    """Summed over the URLs; ``webhook_sent``... in ``ctl status``."""

    sent: int = counter("vestwatch_webhook_sent_total", "Event phases a webhook receiver took")
    retried: int = counter("vestwatch_webhook_retried_total", "Webhook POSTs tried again")
    failed: int = counter("vestwatch_webhook_failed_total", "Event phases a webhook gave up on, out of retries")
    overflowed: int = counter("vestwatch_webhook_overflowed_total", "Event phases pushed out of a full webhook queue")
    dropped_on_stop: int = counter(
        "vestwatch_webhook_dropped_on_stop_total", "Event phases still waiting for a webhook receiver at stop"
    )
    queued: int = gauge(
        "vestwatch_webhook_queued", "Event phases waiting for a webhook receiver, those being tried included"
    )


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect, so that the 3xx reaches ``_post`` as an ``HTTPError``."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirects)  # urlopen's handlers, its redirect handler replaced


class WebhookPoster:
    """One URL's queue and the thread that sends it; counts into the sink's figures under ``counting``."""

    def __init__(self, target: WebhookSettings, stats: WebhookStats, counting: threading.Lock) -> None:
        self.target = target
        self.shown = redact(target.url)  # the URL as logs show it
        self.queue: deque[bytes] = deque()
        self.ready = threading.Condition()  # guards queue, closing and trying
        self.closing = False
        self.trying = False  # an event taken from the queue and not yet counted
        self.stats, self.counting = stats, counting
        self.thread = threading.Thread(target=self._run, name=f"webhook {self.shown}", daemon=True)
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
                self.trying = True
            self._deliver(body)

    def _deliver(self, body: bytes) -> None:
        delay = self.target.backoff_s
        for attempt in range(self.target.retries + 1):
            error = self._post(body)
            if error is None:
                self._settle("sent")
                return
            if attempt == self.target.retries or self.closing:
                break
            with self.counting:
                self.stats.retried += 1
            with self.ready:  # a back-off that stopping cuts short
                self.ready.wait_for(lambda: self.closing, delay)
            delay *= 2
        if self._settle("failed"):
            log.warning("webhook %s: gave up on an event (%s)", self.shown, error)

    def _settle(self, outcome: str) -> bool:
        """Count the event being tried as ``outcome``; False when ``abandon`` has counted it already."""
        with self.ready:
            if not self.trying:
                return False
            self.trying = False
            with self.counting:
                setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
                self.stats.queued -= 1
            return True

    def _post(self, body: bytes) -> str | None:
        """None when the receiver took it, else why not."""
        headers = {"Content-Type": "application/json", **self.target.headers}
        request = urllib.request.Request(self.target.url, data=body, headers=headers, method="POST")
        try:
            with OPENER.open(request, timeout=self.target.timeout_s) as response:
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            error.close()
            location = error.headers.get("Location") if 300 <= error.code < 400 else None
            return f"HTTP {error.code}" + (f", a redirect to {redact(location)}, not followed" if location else "")
        except (OSError, ValueError) as error:  # refused, unreachable, timed out, bad URL
            return redact(str(error))

    def stop(self) -> None:
        """From now on each event gets one more attempt, without back-off; the thread ends with the queue."""
        with self.ready:
            self.closing = True
            self.ready.notify_all()

    def abandon(self) -> int:
        """Counts what is still queued or being tried as dropped, and how many; a thread still in its POST
        is left to it (a daemon) and counts nothing more."""
        with self.ready:
            left = len(self.queue) + self.trying
            self.queue.clear()
            self.trying = False
            with self.counting:
                self.stats.dropped_on_stop += left
                self.stats.queued -= left
        return left


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
        """Within ``FLUSH_ON_CLOSE_S`` however many receivers hang: the stage's stop grace is short."""
        for poster in self.posters:
            poster.stop()
        deadline = time.monotonic() + FLUSH_ON_CLOSE_S
        for poster in self.posters:
            poster.thread.join(max(0.0, deadline - time.monotonic()))
        dropped = sum(poster.abandon() for poster in self.posters)
        if dropped:
            log.warning("webhooks: %d events not delivered at stop", dropped)
