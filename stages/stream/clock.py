"""A stream's event clock: when things happened, as its events, clips and recordings tell it.

Live, a frame's capture time. A file plays its own timeline instead, anchored at the capture time
of its first result here (and again when it starts over), so that an offline file's events last
as long as they do in the file however fast it is processed. With no result to go by (a camera or
inference down), the clock runs on from the last result's.
"""

from __future__ import annotations

import time

RESTART_S = 1.0  # a file's time this far behind the last result's: it started over


class StreamClock:
    def __init__(self, live: bool) -> None:
        self.live = live
        self.anchor: float | None = None  # a file's capture time minus its pts
        self.last = 0.0  # the latest result's time
        self.last_result_at: float | None = None  # monotonic time the latest result came

    def of_result(self, captured: float, pts: float | None) -> float:
        """A result's time: the stream's latest, which anchors a file's timeline."""
        self.last = self.of(captured, pts, anchor=True)
        self.last_result_at = time.monotonic()
        return self.last

    def of(self, captured: float, pts: float | None, anchor: bool = False) -> float:
        """The time of a frame captured at ``captured`` with source time ``pts``."""
        if self.live or pts is None:
            return captured
        if anchor and (self.anchor is None or pts + self.anchor < self.last - RESTART_S):
            self.anchor = captured - pts
        return pts + self.anchor if self.anchor is not None else captured

    def of_packet(self, captured: float, pts: float | None) -> float:
        """A copied packet's time; one of a file that started over, before its new run's results
        re-anchor the clock, goes by its capture time."""
        clock = self.of(captured, pts)
        return captured if clock < self.last - RESTART_S else clock

    def now(self) -> float:
        """The stream's time with no frame to go by: the last result's plus the time since it came."""
        if self.last_result_at is None:
            return time.time()
        return self.last + time.monotonic() - self.last_result_at
