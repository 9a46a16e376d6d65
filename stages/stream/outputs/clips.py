"""The ``clips`` sink: an MP4 per event, cut from the recorded segments once they hold all of it."""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.config import Settings, StreamSettings
from stages.recording.clips import cut_clip, holds_span
from stages.recording.eventstore import EventFilter, EventStore
from stages.recording.paths import clip_path, stream_folder
from stages.stats import PluginStats, counter
from stages.stream.analysis import FrameAnalysis, Violation
from stages.stream.messages import Evidence
from stages.stream.outputs.base import Sink
from stages.web.review import event_file

log = logging.getLogger(__name__)

CLIP_GRACE_S = 10.0  # no results this long (camera or inference down, a file's end): due clips are cut anyway
CLOSE_WAIT_S = 3.0  # a stopping stage waits this long for clips being cut; the rest are not written
# after each clip the thread rests this many times as long as the cut took: many events ending at once
# (a crowd leaving) must not take the stage's time (and the GIL) from recording, which capture waits for
CUT_REST = 3.0
PARTIAL_SLACK_S = 1.0  # a clip may start at the keyframe before, and end a frame short: still whole
NO_CLIP = ""  # an event's clip that cannot be cut (its recording is gone): neither promised nor tried again


@dataclass
class ClipStats(PluginStats):
    """Unprefixed (``clips``, ``clips_failed``), as before plug-ins had prefixes."""

    clips: int = counter("vestwatch_clips_total", "Event clips written")
    clips_failed: int = counter(
        "vestwatch_clips_failed_total", "Event clips not written: no recording of the event, or it could not be cut"
    )
    clips_partial: int = counter(
        "vestwatch_clips_partial_total", "Event clips written from part of their span: the recording lacked the rest"
    )


@dataclass
class _DueClip:
    path: Path
    start: float  # event clock
    end: float
    event_id: str
    left_by_stop: bool = False  # a clip a stop left uncut: not tried again after this


class ClipSink(Sink):
    """An MP4 per event, from ``clip_pre_s`` before its start to ``clip_post_s`` after its end (at most
    ``clip_max_s`` long), cut from the segments once they hold that much. The ``end`` event carries
    where it will be; a thread does the cutting (packet copies, no encoding) so that recording never
    waits for it. Clips a stop or a crash left uncut (the event store has their path, the disk not
    the file) are cut when the stage starts again, the segments being still there; so are those of
    events a crash left open (ended ``interrupted`` by the event log, with what was known of them)."""

    stats_type = ClipStats
    stats: ClipStats

    @classmethod
    def create(cls, settings: Settings, stream: StreamSettings) -> ClipSink | None:
        """Entry point ``clips``: none for a stream that is not recorded."""
        return cls(settings, stream) if stream.records else None

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        super().__init__()
        self.settings, self.root = settings, stream_folder(settings.recordings_dir, stream.id)
        self.due: list[_DueClip] = []
        self.work: queue.Queue[_DueClip | None] = queue.Queue()
        self.last_results = time.monotonic()
        self.stream_id = stream.id
        self.store: EventStore | None = None
        self.recovered = False  # on the first tick: the event log has ended what a crash left open by then
        self.closing = threading.Event()  # no more rests: what is due is cut while the stop allows
        self.thread = threading.Thread(target=self._cut, name=f"clips {stream.id}", daemon=True)
        self.thread.start()

    def _recover(self) -> None:
        """Queue the clips of this stream's ended events, within retention, that were promised but never
        written, and promise and queue those of events a crash interrupted (they have none yet)."""
        self.recovered = True
        if not self.settings.events_db.is_file():
            return
        uncut = []
        try:
            self.store = EventStore(self.settings.events_db)
            since = time.time() - self.settings.recording.max_age_days * 86400
            for event in self.store.events(EventFilter(self.stream_id, since=since), limit=1000):
                if event["ended"] is None or event["clip"] == NO_CLIP:
                    continue
                if event["clip"] is None and event["reason"] == "interrupted":
                    event["clip"] = str(clip_path(self.root, event["event_id"], event["started"]).resolve())
                    self.store.promise_clip(event["event_id"], event["clip"])
                if event["clip"] and not Path(event["clip"]).exists():
                    uncut.append(event)
        except sqlite3.Error as error:  # a full disk: what was found so far
            log.warning("%s: uncut clips not all looked for (%s)", self.stream_id, error)
        if uncut:
            log.info("%s: cutting %d clip(s) a stop or crash left uncut", self.stream_id, len(uncut))
        for e in uncut:
            self.work.put(self._due(Path(e["clip"]), e["started"], e["ended"], e["event_id"], left_by_stop=True))

    def _due(self, path: Path, started: float, ended: float, event_id: str, left_by_stop: bool = False) -> _DueClip:
        events = self.settings.events
        start = started - events.clip_pre_s
        end = min(ended + events.clip_post_s, start + events.clip_max_s)
        return _DueClip(path, start, end, event_id, left_by_stop)

    def evidence(self, frame: np.ndarray | None, analysis: FrameAnalysis, violation: Violation) -> Evidence:
        """An ``end`` carries its clip, to be cut once ``clip_post_s`` more is recorded; none when the
        recording of the event is gone already (retention or a full disk took it): promised, it never came."""
        if violation.phase != "end" or violation.ended is None:
            return {}
        path = clip_path(self.root, violation.event_id, violation.started)
        due = self._due(path, violation.started, violation.ended, violation.event_id)
        if not holds_span(self.root, due.start, due.end):
            log.warning("%s: no recording of %s left to cut a clip from", self.stream_id, violation.event_id)
            self.stats.clips_failed += 1
            return {}
        self.due.append(due)
        return {"clip": str(path.resolve()), "clip_url": self.settings.link(event_file(violation.event_id, "clip.mp4"))}

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        if analysis.seq:  # a frame, not the stage's idle tick
            self.last_results = time.monotonic()
        self._hand_over(lambda due: due.end <= analysis.clock)  # recorded up to this frame by now

    def tick(self) -> None:
        if not self.recovered:
            self._recover()
        if time.monotonic() - self.last_results >= CLIP_GRACE_S:  # nothing more will be recorded soon
            self._hand_over(lambda due: True)

    def _hand_over(self, ready: Callable[[_DueClip], bool]) -> None:
        for due in [due for due in self.due if ready(due)]:
            self.due.remove(due)
            self.work.put(due)

    def _cut(self) -> None:
        while (due := self.work.get()) is not None:
            began = time.monotonic()
            self._cut_one(due)
            self.closing.wait(CUT_REST * (time.monotonic() - began))

    def _cut_one(self, due: _DueClip) -> None:
        try:
            clip = cut_clip(self.root, due.start, due.end, due.path)
            give_up = clip is None or due.left_by_stop  # no recording of it, or its second try
            if clip is None:
                log.warning("%s: no recording of this event to cut a clip from", due.path.name)
        except Exception as error:  # PyAV raises many types; one bad clip must not stop the next
            log.warning("%s: clip not written (%s: %s)", due.path.name, type(error).__name__, error)
            clip, give_up = None, due.left_by_stop
        if clip is None:
            self.stats.clips_failed += 1
            if give_up:  # no longer promised, nor tried at every start
                self._tell_store(lambda store, event=due.event_id: store.promise_clip(event, NO_CLIP))
            return
        log.info("clip %s: %.1f s", clip.path, clip.duration_s)
        self.stats.clips += 1
        covered = (clip.start, clip.start + clip.duration_s)
        if covered[0] > due.start + PARTIAL_SLACK_S or covered[1] < due.end - PARTIAL_SLACK_S:
            self.stats.clips_partial += 1
            log.warning("clip %s holds %.1f of the event's %.1f s: the recording lacks the rest", clip.path.name,
                        covered[1] - covered[0], due.end - due.start)  # fmt: skip
            self._tell_store(lambda store, event=due.event_id, span=covered: store.clip_partial(event, span))

    def _tell_store(self, change: Callable[[EventStore], None]) -> None:
        """A change to the event's row, from the cutting thread; the store opened once it exists."""
        if self.store is None and self.settings.events_db.is_file():
            with contextlib.suppress(sqlite3.Error):
                self.store = EventStore(self.settings.events_db)
        if self.store is not None:
            with contextlib.suppress(sqlite3.Error):
                change(self.store)

    def close(self) -> None:
        """What is due goes out now, cut from what is recorded, as long as the stop allows."""
        self._hand_over(lambda due: True)
        self.closing.set()
        self.work.put(None)
        self.thread.join(timeout=CLOSE_WAIT_S)
        if self.store is not None and not self.thread.is_alive():
            self.store.close()
