"""Whether a camera is watched, judged by its stream stage from what it hears: capture's
``SourceStatus`` once a second and inference's results. A safety monitor must never read "safe"
for a camera nobody watches, so the state goes everywhere an operator looks (MQTT availability,
``event.<stream>``, webhooks, ``/healthz``, ``/metrics``, the review page):

- ``down``: not watched: the source is lost (reconnecting, or its file ended), paused, silent (no
  frame, or no word from capture, for ``pipeline.down_after_s``), or its frames come but no
  detections have for that long (inference gone or starved);
- ``degraded``: watched, but late or thinly: the median capture-to-result latency over the last
  ``WINDOW_S`` above ``pipeline.max_latency_ms`` (the server is overloaded), fewer detections a
  second than the camera is owed (``pipeline.min_detect_fps``, or its ``detect_fps`` or frame rate
  when lower) over ``RATE_WINDOW_S``, or, in that window, captured frames the recording missed or
  a recording so far behind the camera that capture was held back, or one recording its frames
  undrawn to keep up (``stages.stream.shedding``);
- ``watching``: otherwise.

A camera starts ``down`` ("starting") and is given ``down_after_s`` to become watched before that
is a problem; a change of state is what is announced, the reason's figures change with it.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass

from pipeline.messages import SourceStatus
from stages.config import PipelineSettings

WINDOW_S = 5.0  # latency is judged over this much of the recent past
RATE_WINDOW_S = 20.0  # and the detection rate over this much (a few frames at a low detect_fps)
STARTING = "starting"


@dataclass(frozen=True)
class CameraHealth:
    state: str  # watching | degraded | down
    reason: str = ""  # why it is not watching; empty while it is
    since: float = 0.0  # Unix time the state began
    intended: bool = False  # down by the operator's or the source's own doing (paused, a file's end)

    @property
    def starting(self) -> bool:
        return self.reason == STARTING


class HealthJudge:
    """One camera's state from what its stream stage hears; ``judge`` says when it changes."""

    def __init__(self, pipeline: PipelineSettings, live: bool, detect_fps: float | None) -> None:
        self.down_after_s = pipeline.down_after_s
        self.max_latency_s = pipeline.max_latency_ms / 1e3
        self.floor_fps = min(pipeline.min_detect_fps, detect_fps or pipeline.min_detect_fps)
        self.live = live
        now = time.monotonic()
        self.started = now  # of this stage, or of watching since the source came back
        self.status: SourceStatus | None = None
        self.heard_at = now
        self.results: deque[tuple[float, float]] = deque()  # (monotonic, latency s) over RATE_WINDOW_S
        self.last_result: float | None = None
        self.recording: deque[tuple[float, int, int]] = deque()  # (monotonic, missed so far, behind so far)
        self.shedding = False  # frames recorded undrawn
        self.current = CameraHealth("down", STARTING, time.time())

    def heard(self, status: SourceStatus) -> None:
        if self.status is not None and self._source_problem(self.status) and not self._source_problem(status):
            self.started = time.monotonic()  # back: detections are owed from now on
        self.status, self.heard_at = status, time.monotonic()

    def results_overdue(self) -> bool:
        """Whether a wait for results may mean people are gone: always live; for a file only once its
        source stopped playing (ended, lost or paused). A file that plays waits for every result (it is
        lossless), and a slow inference is no reason to lose the people in it: its clock is the file's."""
        status = self.status
        return self.live or status is None or status.paused or status.state != "connected"

    def inferred(self, captured: float) -> None:
        now = self.last_result = time.monotonic()
        self.results.append((now, max(0.0, time.time() - captured)))

    def judge(self, missed: int = 0, behind: int = 0, shedding: bool = False) -> CameraHealth | None:
        """The camera's state now, given the frames its recording has missed so far, the times it
        held capture back and whether it records frames undrawn: a new ``CameraHealth`` when its
        state changed, else None (the current one's reason is kept up to date in ``current`` either way)."""
        now = time.monotonic()
        self.recording.append((now, missed, behind))
        self.shedding = shedding
        while now - self.recording[0][0] > RATE_WINDOW_S:
            self.recording.popleft()
        state, reason, intended = self._assess(now)
        changed = state != self.current.state or (self.current.starting and reason != STARTING)
        since = time.time() if changed else self.current.since
        self.current = CameraHealth(state, reason, since, intended)
        return self.current if changed else None

    def _assess(self, now: float) -> tuple[str, str, bool]:
        while self.results and now - self.results[0][0] > RATE_WINDOW_S:
            self.results.popleft()
        status, silent = self.status, now - self.heard_at
        if silent > self.down_after_s:
            return "down", f"no word from capture for {silent:.0f} s (is it running?)", False
        if status is None:
            return "down", STARTING, False
        if problem := self._source_problem(status):
            return "down", problem, status.paused or status.state == "ended"
        since_result = now - max(self.last_result or self.started, self.started)
        if since_result > self.down_after_s:
            return "down", f"frames come but no detections for {since_result:.0f} s (is inference running?)", False
        if self.last_result is None:
            return "down", STARTING, False
        return self._degraded(now)

    def _source_problem(self, status: SourceStatus) -> str | None:
        if status.paused:
            return "paused by the operator"
        if status.state == "ended":
            return "the source ended"
        if status.state == "reconnecting":
            return f"source lost, reconnecting: {status.reason}"
        if status.frame_age_s is None:
            return f"no frame yet ({status.state})" if time.monotonic() - self.started > self.down_after_s else None
        if self.live and status.frame_age_s > self.down_after_s:
            return f"no frame for {status.frame_age_s:.0f} s"
        return None

    def _degraded(self, now: float) -> tuple[str, str, bool]:
        recent = [latency for at, latency in self.results if now - at <= WINDOW_S]
        if self.results and not recent:  # results further apart than the window: the last one tells
            recent = [self.results[-1][1]]
        if recent:
            latency = statistics.median(recent)
            if latency > self.max_latency_s:
                bound = f"max_latency_ms {self.max_latency_s * 1e3:.0f}"
                return "degraded", f"overloaded: latency {latency:.1f} s, over {bound}", False
        (_, missed_then, behind_then), (_, missed, behind) = self.recording[0], self.recording[-1]
        if missed > missed_then:
            return (
                "degraded",
                f"overloaded: the recording missed {missed - missed_then} frames in {RATE_WINDOW_S:.0f} s",
                False,
            )
        if behind > behind_then:
            return "degraded", "overloaded: the recording fell behind the camera, holding capture back", False
        if self.shedding:
            return "degraded", "overloaded: frames recorded without boxes drawn, to keep up with the camera", False
        if self.live and self.status is not None and now - self.started > RATE_WINDOW_S:
            owed = min(self.floor_fps, self.status.fps_in)
            rate = len(self.results) / RATE_WINDOW_S
            if rate < 0.8 * owed:  # a margin for the window's edges
                return "degraded", f"detecting {rate:.1f} frames/s, under the {owed:.1f} it is owed", False
        return "watching", "", False
