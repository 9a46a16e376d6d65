"""A stream's sinks: where an analysed frame goes after the processors.

``every_frame`` sinks (the recorder) get every captured frame, drawn with its own results
or, for a frame inference skipped, the latest earlier ones; the others get inferred frames.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from pipeline.messages import EncodedPacket
from stages.config import Settings, StreamSettings
from stages.media.annotate import Overlay, annotate
from stages.recording.clips import cut_clip
from stages.recording.paths import clip_path
from stages.recording.eventstore import EventStore
from stages.recording.segments import DiskFullError, SegmentRecorder, apply_retention, make_room
from stages.stats import ClipStats, RecorderStats
from stages.stream.analysis import FrameAnalysis
from stages.stream.processors.zones import zones_for
from stages.topology import live_frame
from stages.web.review import event_file

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 60.0
FREE_SPACE_EVERY_S = 1.0
LIVE_EVERY_S = 0.2  # the live view's frame, at most 5 per second


def draw(
    image: np.ndarray, analysis: FrameAnalysis, stream: StreamSettings, highlight: int | None = None
) -> np.ndarray:
    """The frame as people see it: boxes, zones, people with their id and badge, camera and time."""
    height, width = image.shape[:2]
    zones = zones_for(stream, width, height)
    required = {
        person.track_id: sorted({item for zone in zones if zone.name in person.zones for item in zone.require})
        for person in analysis.people
    }
    overlay = Overlay(
        people=analysis.people,
        required=required,
        zones=[(zone.name, zone.polygon_pixels(width, height)) for zone in zones if zone.settings.polygon],
        highlight=highlight,
        caption=f"{stream.id}  {datetime.fromtimestamp(analysis.clock).astimezone():%Y-%m-%d %H:%M:%S %z}",
    )
    return annotate(image, analysis.detections, analysis.names, overlay)


class RecorderSink:
    """Segments with their detections' sidecar: annotated frames (``handle``), or the camera's own
    packets (``handle_packet``) with a line per detected frame (``note``); keeps the disk above its
    floor and within retention."""

    every_frame = True

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        self.settings, self.stream = settings, stream
        recording = settings.recording
        self.recorder = SegmentRecorder(
            settings.recordings_dir, stream.id, recording.segment_s, recording.crf, stream.fps or 25.0, recording.preset
        )
        self.last_retention = 0.0
        self.last_space_check = 0.0
        self.last_recorded: float | None = None  # monotonic
        self.stats = RecorderStats()

    def timeline(self, analysis: FrameAnalysis) -> float:
        """Copied segments and offline files keep the source's clock; annotated live frames the wall clock."""
        own = analysis.pts is not None and (self.recorder.copying or not self.stream.is_realtime)
        return analysis.pts if own else analysis.captured

    def position(self, analysis: FrameAnalysis) -> tuple[str, float] | None:
        if self.recorder.copying and analysis.pts is None:
            return None  # a copied segment is placed by the source's timestamps only
        found = self.recorder.position(self.timeline(analysis))
        return (str(found[0].resolve()), found[1]) if found else None

    @staticmethod
    def _line(analysis: FrameAnalysis) -> dict:
        """A frame's sidecar line (less its place in the segment)."""
        return {
            "seq": analysis.seq,
            "captured": analysis.captured,
            "width": analysis.width,  # the frame the boxes are in (capture scales a frame over max_frame_pixels)
            "height": analysis.height,
            "clock": analysis.clock,  # the events' clock, by which clips are cut
            "detections_of": analysis.inferred_seq,  # this frame's seq when it was inferred
            "counts": analysis.detections.counts(analysis.names),
            "detections": analysis.detections.records(analysis.names),
            "people": [
                {"track_id": p.track_id, "box": p.box, "vest": p.vest, "hardhat": p.hardhat, "zones": p.zones}
                for p in analysis.people
            ],
        }

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        if frame is not None:
            drawn, line = draw(frame, analysis, self.stream), self._line(analysis)
            self._written(lambda: self.recorder.write(drawn, self.timeline(analysis), analysis.captured, line))

    def handle_packet(self, packet: EncodedPacket, clock: float) -> None:
        """One of the camera's packets, copied; ``clock`` the stream's event clock for it."""
        self._written(lambda: self.recorder.write_packet(packet, clock))
        self.stats.awaiting_keyframe = self.recorder.awaiting_keyframe

    def note(self, analysis: FrameAnalysis) -> None:
        """A detected frame's line, beside the copied packets it was decoded from."""
        if self.recorder.copying and analysis.pts is not None:
            self._written(lambda: self.recorder.note(analysis.pts, self._line(analysis)), frame=False)

    def _written(self, write: Callable[[], bool | None], frame: bool = True) -> None:
        """Run a write (False: nothing written), a full disk answered by making room, any other failure
        logged; ``frame``: a written one counts as a recorded frame."""
        try:
            done = write()
        except DiskFullError as error:
            self.stats.disk_dropped += 1
            if not self.stats.disk_low:
                log.warning("%s; making room", error)
            self._keep_free_space(at_least_one=True)
            return
        except OSError as error:  # not space: deleting recordings would not help
            self.stats.write_errors += 1
            log.warning("%s", error)
            return
        if frame and done is not False:
            self.last_recorded = time.monotonic()
            self.stats.frames += 1
        self.stats.bytes, self.stats.segments = self.recorder.bytes_written, self.recorder.segments_closed

    def tick(self) -> None:
        """Free space every second, retention every minute, whether frames come or not."""
        if time.monotonic() - self.last_space_check >= FREE_SPACE_EVERY_S:
            self._keep_free_space()
        if time.monotonic() - self.last_retention >= RETENTION_EVERY_S:
            self.last_retention = time.monotonic()
            recording = self.settings.recording
            root = self.settings.recordings_dir / self.stream.id
            for path in apply_retention(root, recording.max_age_days * 86400, recording.max_bytes):
                log.info("%s: retention deleted %s", self.stream.id, path)

    def _keep_free_space(self, at_least_one: bool = False) -> None:
        """Hold the recordings' disk above ``recording.min_free_mb`` by deleting the oldest segments of
        any stream; after a failed write, room for at least one more segment's worth is made."""
        self.last_space_check = time.monotonic()
        recordings = self.settings.recordings_dir
        floor = self.settings.recording.min_free_mb * 2**20
        try:
            if at_least_one:
                floor = max(floor, shutil.disk_usage(recordings).free + 1)
            free, deleted = make_room(recordings, floor)
        except OSError as error:  # the disk is gone (unmounted?): say so, keep running
            log.warning("%s: recordings disk: %s", self.stream.id, error)
            self.stats.disk_free_bytes, self.stats.disk_low = None, True
            return
        for path in deleted:
            log.info("%s: deleted %s for free space", self.stream.id, path)
        low = free < self.settings.recording.min_free_mb * 2**20 or (at_least_one and not deleted)
        if low and not self.stats.disk_low:
            log.warning("%s: recordings disk has %.0f MB free and nothing left to delete", self.stream.id, free / 2**20)
        self.stats.disk_free_bytes, self.stats.disk_low = free, low

    def close(self) -> None:
        self.recorder.close()


class LiveSink:
    """The newest annotated frame for the live view, at most 5 a second, replaced atomically."""

    every_frame = False

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        self.stream = stream
        self.path = live_frame(settings.runtime_dir, stream.id)
        self.last = 0.0

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        if frame is None or time.monotonic() - self.last < LIVE_EVERY_S:
            return
        self.last = time.monotonic()
        ok, jpeg = cv2.imencode(".jpg", draw(frame, analysis, self.stream), [cv2.IMWRITE_JPEG_QUALITY, 75])
        if ok:
            partial = self.path.with_suffix(".partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)  # the owner's eyes only
            with os.fdopen(fd, "wb") as out:
                out.write(jpeg.tobytes())
            os.replace(partial, self.path)

    def close(self) -> None:
        """The live frame stays until the daemon removes the runtime dir's frames."""


class SnapshotSink:
    """An annotated JPEG per violation start and end, the person highlighted, beside the recordings;
    none for the end of a person lost from view (the frame no longer shows them)."""

    every_frame = False
    enriches = True  # runs before the sinks that send events on

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        self.root = settings.recordings_dir / stream.id
        self.settings, self.stream = settings, stream

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        for violation in analysis.violations:
            violation.snapshot_url = self.settings.link(event_file(violation.event_id, "snapshot.jpg"))
            if frame is None or violation.phase == "update" or violation.reason == "lost":
                continue
            stamp = datetime.fromtimestamp(analysis.clock).astimezone()
            folder = self.root / stamp.strftime("%Y-%m-%d") / "events"
            path = folder / f"{violation.event_id}-{violation.phase}.jpg"
            with contextlib.suppress(OSError):  # a full disk: the event goes out without its picture
                folder.mkdir(parents=True, exist_ok=True)
                if cv2.imwrite(str(path), draw(frame, analysis, self.stream, highlight=violation.track_id)):
                    violation.snapshot = str(path.resolve())

    def close(self) -> None:
        """Nothing held open."""


CLIP_GRACE_S = 10.0  # no results this long (camera or inference down, a file's end): due clips are cut anyway
CLOSE_WAIT_S = 3.0  # a stopping stage waits this long for clips being cut; the rest are not written
NO_CLIP = ""  # an event's clip that cannot be cut (its recording is gone): neither promised nor tried again


@dataclass
class _DueClip:
    path: Path
    start: float  # event clock
    end: float
    left_by: str | None = None  # the event, for a clip a stop left uncut


class ClipSink:
    """An MP4 per event, from ``clip_pre_s`` before its start to ``clip_post_s`` after its end (at most
    ``clip_max_s`` long), cut from the segments once they hold that much. The ``end`` message carries
    where it will be; a thread does the cutting (packet copies, no encoding) so that recording never
    waits for it. Clips a stop or a crash left uncut (the event store has their path, the disk not
    the file) are cut when the stage starts again, the segments being still there; so are those of
    events a crash left open (ended ``interrupted`` by the event log, with what was known of them)."""

    every_frame = False
    enriches = True

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        self.settings, self.root = settings, settings.recordings_dir / stream.id
        self.due: list[_DueClip] = []
        self.work: queue.Queue[_DueClip | None] = queue.Queue()
        self.stats = ClipStats()
        self.last_results = time.monotonic()
        self.stream_id = stream.id
        self.store: EventStore | None = None
        self.recovered = False  # on the first tick: the event log has ended what a crash left open by then
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
            for event in self.store.events(self.stream_id, limit=1000, since=since):
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
            self.work.put(self._due(Path(e["clip"]), e["started"], e["ended"], e["event_id"]))

    def _due(self, path: Path, started: float, ended: float, left_by: str | None = None) -> _DueClip:
        events = self.settings.events
        start = started - events.clip_pre_s
        return _DueClip(path, start, min(ended + events.clip_post_s, start + events.clip_max_s), left_by)

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        if analysis.seq:  # a frame, not the stage's idle tick
            self.last_results = time.monotonic()
        for violation in analysis.violations:
            if violation.phase != "end" or violation.ended is None:
                continue
            path = clip_path(self.root, violation.event_id, violation.started)
            violation.clip = str(path.resolve())
            violation.clip_url = self.settings.link(event_file(violation.event_id, "clip.mp4"))
            self.due.append(self._due(path, violation.started, violation.ended))
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
            try:
                clip = cut_clip(self.root, due.start, due.end, due.path)
                if clip is None:
                    log.warning("%s: no recording of this event to cut a clip from", due.path.name)
            except Exception as error:  # PyAV raises many types; one bad clip must not stop the next
                log.warning("%s: clip not written (%s: %s)", due.path.name, type(error).__name__, error)
                clip = None
            if clip is None:
                self.stats.clips_failed += 1
                if due.left_by and self.store:  # its second failure, or its recording is gone: not tried again
                    with contextlib.suppress(sqlite3.Error):
                        self.store.promise_clip(due.left_by, NO_CLIP)
            else:
                log.info("clip %s: %.1f s", clip.path, clip.duration_s)
                self.stats.clips += 1

    def close(self) -> None:
        """What is due goes out now, cut from what is recorded, as long as the stop allows."""
        self._hand_over(lambda due: True)
        self.work.put(None)
        self.thread.join(timeout=CLOSE_WAIT_S)
        if self.store is not None and not self.thread.is_alive():
            self.store.close()


class EventLogSink:
    """Each event phase into the event store the review page reads; old events go by retention.

    The database may not be writable for a while (a full disk, until the recorder makes room): the
    events still go out to subscribers, MQTT and webhooks, a line says what was not logged, and the
    store is tried again with the next phase (which carries the whole event)."""

    every_frame = False

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        self.settings, self.stream = settings, stream
        self.last_retention = 0.0
        self.store: EventStore | None = None
        self._open()

    def _open(self) -> EventStore | None:
        """The store, opened on the first success, when this stream's events a crash left open are ended."""
        if self.store is None:
            store = None
            try:
                store = EventStore(self.settings.events_db)
                interrupted = store.interrupt(self.stream.id)
            except sqlite3.Error as error:
                if store is not None:
                    store.close()
                log.warning("%s: events database not open (%s); events still go out", self.stream.id, error)
                return None
            self.store = store
            for event_id in interrupted:  # this stage would never end them otherwise
                log.info("%s: %s was open when the stage last stopped; ended 'interrupted'", self.stream.id, event_id)
        return self.store

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        for violation in analysis.violations:
            store = self._open()
            try:
                if store is not None:
                    store.record({"stream": analysis.stream, **asdict(violation)})
            except sqlite3.Error as error:
                log.warning("%s: %s %s not logged (%s)", self.stream.id, violation.event_id, violation.phase, error)

    def tick(self) -> None:
        if self.store is not None and time.monotonic() - self.last_retention >= RETENTION_EVERY_S:
            self.last_retention = time.monotonic()
            with contextlib.suppress(sqlite3.Error):  # a full disk: the next tick's try
                self.store.forget(self.stream.id, time.time() - self.settings.recording.max_age_days * 86400)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def recorder(settings: Settings, stream: StreamSettings) -> RecorderSink | None:
    """Entry point ``recorder``: none for a stream with ``record = false``."""
    return RecorderSink(settings, stream) if stream.record else None


def live(settings: Settings, stream: StreamSettings) -> LiveSink:
    return LiveSink(settings, stream)


def snapshots(settings: Settings, stream: StreamSettings) -> SnapshotSink:
    return SnapshotSink(settings, stream)


def clips(settings: Settings, stream: StreamSettings) -> ClipSink | None:
    """Entry point ``clips``: none for a stream that is not recorded."""
    return ClipSink(settings, stream) if stream.records else None


def eventlog(settings: Settings, stream: StreamSettings) -> EventLogSink:
    return EventLogSink(settings, stream)
