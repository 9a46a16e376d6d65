"""Render/record stage, one process per stream: record every captured frame annotated, raise events.

Recording does not depend on inference keeping up: capture sends this stage a reference to
every frame of a recorded stream. A frame is drawn with its own detections when they come
(an offline stream waits for them: it is lossless), else, for a live stream, after at most
``RECORD_DELAY_S`` with the latest detections before it, so a recording plays at the
camera's rate however few frames inference takes. Each recorded frame gets a sidecar line.

From its stream's ``det.<stream>`` messages it also runs the violation rule (an annotated
JPEG snapshot and ``event.<stream>`` with where to watch the moment) and refreshes the live
view's frame. A frame already overwritten in the ring (this stage fell behind) is counted
as missed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections import OrderedDict, deque
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import zmq

from pipeline.detections import Detections
from pipeline.endpoints import Endpoint
from pipeline.frames import RingReaders
from pipeline.messages import DetectionMessage, EventMessage, FrameRef, topic
from pipeline.settings import load_settings
from pipeline.stage import Stage
from stages.annotate import annotate
from stages.events import ViolationRule
from stages.segments import DiskFullError, SegmentRecorder, apply_retention, make_room
from stages.settings import Settings
from stages.topology import capture_ring, instance, live_frame, open_detections, record_input

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 60.0
RECORD_DELAY_S = 0.3  # a live frame waits this long at most for its own detections
OFFLINE_WAIT_S = 10.0  # an offline frame whose detections were lost in a crash is recorded without them
FREE_SPACE_EVERY_S = 1.0
LIVE_EVERY_S = 0.2  # the live view's frame, at most 5 per second
RECENT_EVENTS = 5


class RecordStage(Stage):
    def __init__(self, name: str, config: Path | None, heartbeat: Endpoint | None) -> None:
        super().__init__(name, heartbeat)
        self.settings = load_settings(Settings, config)
        self.stream = self.settings.stream(instance(name))
        self.ring = RingReaders()  # the one capture ring of this stream, once its capture created it
        self.names: list[str] = []
        self.last_retention = 0.0
        self.last_space_check = 0.0
        self.rule = ViolationRule(self.settings.events) if self.settings.events else None
        self.last_live = 0.0
        self.live_path = live_frame(self.settings.runtime_dir, self.stream.id)
        self.stats = {
            "frames": 0,
            "missed": 0,
            "disk_dropped": 0,  # frames not recorded for want of disk space
            "write_errors": 0,  # frames not recorded for another I/O error
            "disk_free_bytes": None,
            "disk_low": False,  # below the floor even after deleting what may be deleted
            "bad_messages": 0,
            "bytes": 0,
            "segments": 0,
            "events": 0,
            "recent_events": [],
        }
        self.pending: deque[tuple[FrameRef, np.ndarray, float]] = deque()  # frames to record, and when they came
        self.detected: OrderedDict[int, DetectionMessage] = OrderedDict()  # seq -> det message, newest last
        # enough for every frame that can be waiting here (refs queue up to the ring's size twice over)
        self.detections_kept = 2 * self.settings.pipeline.ring_slots + 64
        self.last_detection: float | None = None  # monotonic time of this stream's latest det message
        self.last_recorded: float | None = None  # and of its latest recorded frame

    def report(self) -> dict:
        now = time.monotonic()
        detected = None if self.last_detection is None else round(now - self.last_detection, 2)
        recorded = None if self.last_recorded is None else round(now - self.last_recorded, 2)
        return {**self.stats, "detection_age_s": detected, "recorded_age_s": recorded, "recording": self.stream.record}

    def setup(self) -> None:
        self.detections = open_detections(self.settings, self.context, self.stream.id)
        self.poller = zmq.Poller()
        self.poller.register(self.detections, zmq.POLLIN)
        self.frames_in = None
        if self.stream.record:
            hwm = self.settings.pipeline.ring_slots
            self.frames_in = record_input(self.settings.runtime_dir, self.stream.id).open(self.context, hwm=hwm)
            self.poller.register(self.frames_in, zmq.POLLIN)
        recording = self.settings.recording
        self.recorder = None
        if self.stream.record:
            self.recorder = SegmentRecorder(
                self.settings.recordings_dir,
                self.stream.id,
                recording.segment_s,
                recording.crf,
                self.stream.fps or 25.0,
            )
        self.events = self.open_publisher() if self.rule else None

    def teardown(self) -> None:
        if self.recorder:
            while self.pending:  # what waited for detections is recorded with what there is
                ref, image, _ = self.pending.popleft()
                self._record(ref, image, self.detected.get(ref.seq) or self._latest_before(ref.seq))
            self.recorder.close()
        self.ring.close()

    def step(self) -> None:
        self._retention()
        if time.monotonic() - self.last_space_check >= FREE_SPACE_EVERY_S:
            self._keep_free_space()
        self.poller.poll(100)
        if self.frames_in is not None:
            for ref in self.drain(self.frames_in, FrameRef):
                self._take(ref)
        arrived = [m for m in self.drain(self.detections, DetectionMessage, topics=True) if self._keep(m)]
        if self.frames_in is not None:
            self._record_ready()  # first, so that an event below finds its frame in the open segment
        for message in arrived:
            self._on_detections(message)

    def _take(self, ref: FrameRef) -> None:
        """Copy a captured frame out of the ring at once: the ring holds about half a second, and
        the frame may wait here for its detections while this stage encodes others."""
        try:
            frame = self.ring.read(capture_ring(self.settings.runtime_dir, self.stream.id), ref.slot, ref.seq)
        except ValueError as error:
            self.reject(ref.TYPE, error)
            return
        if frame is None:
            self.stats["missed"] += 1
            return
        self.pending.append((ref, frame.image, time.monotonic()))

    def _record_ready(self) -> None:
        """Record the waiting frames, oldest first, whose detections are known or who waited long enough."""
        newest = next(reversed(self.detected), -1)
        while self.pending:
            ref, image, arrived = self.pending[0]
            own = self.detected.get(ref.seq)
            if own is None and newest < ref.seq:
                patience = RECORD_DELAY_S if ref.realtime else OFFLINE_WAIT_S
                if time.monotonic() - arrived < patience:
                    return
            self.pending.popleft()
            self._record(ref, image, own or self._latest_before(ref.seq))

    def _latest_before(self, seq: int) -> DetectionMessage | None:
        """The newest detections of an earlier frame: what a frame inference skipped is drawn with."""
        earlier = [s for s in self.detected if s <= seq]
        return self.detected[max(earlier)] if earlier else None

    def _record(self, ref: FrameRef, image: np.ndarray, message: DetectionMessage | None) -> None:
        detections = Detections(*(message.boxes, message.scores, message.classes) if message else ([], [], []))
        record = {
            "seq": ref.seq,
            "captured": ref.captured,
            "detections_of": message.seq if message else None,  # this frame's seq when it was inferred
            "counts": message.counts if message else {},
            "detections": detections.records(self.names),
        }
        timeline = ref.pts if ref.pts is not None and not ref.realtime else ref.captured
        try:
            self.recorder.write(annotate(image, detections, self.names), timeline, ref.captured, record)
        except DiskFullError as error:
            self.stats["disk_dropped"] += 1
            if not self.stats["disk_low"]:
                log.warning("%s; making room", error)
            self._keep_free_space(at_least_one=True)
            return
        except OSError as error:  # not space: deleting recordings would not help
            self.stats["write_errors"] += 1
            log.warning("%s", error)
            return
        self.last_recorded = time.monotonic()
        self.stats.update(
            frames=self.stats["frames"] + 1,
            bytes=self.recorder.bytes_written,
            segments=self.recorder.segments_closed,
        )

    def _keep(self, message: DetectionMessage) -> bool:
        """Keep a det message of this stream for recording; False for one to ignore."""
        if message.stream != self.stream.id:  # the subscription is a prefix: det.cam1 also matches det.cam10
            return False
        if not self.ring.has_slot(capture_ring(self.settings.runtime_dir, self.stream.id), message.source_slot):
            self.reject(message.TYPE, ValueError(f"source_slot {message.source_slot} is not in the capture ring"))
            return False
        self.last_detection = time.monotonic()
        self.detected[message.seq] = message
        while len(self.detected) > self.detections_kept:
            self.detected.popitem(last=False)
        return True

    def _on_detections(self, message: DetectionMessage) -> None:
        """Run the violation rule on a kept det message and refresh the live view."""
        ring = capture_ring(self.settings.runtime_dir, self.stream.id)
        for class_id, name in zip(message.classes, message.names):
            while len(self.names) <= class_id:
                self.names.append(str(len(self.names)))
            self.names[class_id] = name
        fired = self.rule.observe(message.names, message.scores) if self.rule else None
        live_due = time.monotonic() - self.last_live >= LIVE_EVERY_S
        if fired is None and not live_due:
            return
        frame = self.ring.read(ring, message.source_slot, message.seq)
        annotated = None
        if frame is not None:
            annotated = annotate(frame.image, Detections(message.boxes, message.scores, message.classes), self.names)
        if live_due and annotated is not None:
            self._write_live(annotated)
        if fired is not None:
            self._raise_event(message, fired, annotated)

    def _write_live(self, annotated: np.ndarray) -> None:
        """The newest annotated frame for the live view, replaced atomically so a reader never sees half."""
        self.last_live = time.monotonic()
        ok, jpeg = cv2.imencode(".jpg", annotated, [cv2.IMWRITE_JPEG_QUALITY, 75])
        if ok:
            partial = self.live_path.with_suffix(".partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)  # the owner's eyes only
            with os.fdopen(fd, "wb") as out:
                out.write(jpeg.tobytes())
            os.replace(partial, self.live_path)

    def _raise_event(self, message: DetectionMessage, frames_seen: int, annotated: np.ndarray | None) -> None:
        snapshot = None
        if annotated is not None:
            stamp = datetime.fromtimestamp(message.captured).astimezone()
            folder = self.settings.recordings_dir / self.stream.id / stamp.strftime("%Y-%m-%d") / "events"
            path = folder / f"{self.stream.id}-{stamp.strftime('%Y%m%d-%H%M%S')}-{message.seq}.jpg"
            with contextlib.suppress(OSError):  # a full disk: the event goes out without its picture
                folder.mkdir(parents=True, exist_ok=True)
                if cv2.imwrite(str(path), annotated):
                    snapshot = str(path.resolve())
        timeline = message.pts if message.pts is not None and not self.stream.is_realtime else message.captured
        position = self.recorder.position(timeline) if self.recorder else None  # its frame may still be pending
        event = EventMessage(
            stream=message.stream,
            seq=message.seq,
            captured=message.captured,
            rule=self.settings.events.model_dump(by_alias=True),
            frames_seen=frames_seen,
            boxes=message.boxes,
            scores=message.scores,
            classes=message.classes,
            names=message.names,
            counts=message.counts,
            snapshot=snapshot,
            segment=str(position[0].resolve()) if position else None,
            offset_s=position[1] if position else None,
        )
        self.events.send_multipart([topic("event", self.stream.id), event.encode()])
        self.stats["events"] += 1
        self.stats["recent_events"] = [
            *self.stats["recent_events"][-(RECENT_EVENTS - 1) :],
            {
                "captured": message.captured,
                "class": self.rule.rule.class_name,
                "frames_seen": frames_seen,
                "snapshot": snapshot,
                "segment": event.segment,
                "offset_s": event.offset_s,
            },
        ]
        log.info(
            "%s: event %s in %d of %d frames (snapshot %s)",
            self.stream.id,
            self.rule.rule.class_name,
            frames_seen,
            self.rule.rule.window,
            snapshot,
        )

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
            self.stats.update(disk_free_bytes=None, disk_low=True)
            return
        for path in deleted:
            log.info("%s: deleted %s for free space", self.stream.id, path)
        low = free < self.settings.recording.min_free_mb * 2**20 or (at_least_one and not deleted)
        if low and not self.stats["disk_low"]:
            log.warning("%s: recordings disk has %.0f MB free and nothing left to delete", self.stream.id, free / 2**20)
        self.stats.update(disk_free_bytes=free, disk_low=low)

    def _retention(self) -> None:
        if time.monotonic() - self.last_retention < RETENTION_EVERY_S:
            return
        self.last_retention = time.monotonic()
        recording = self.settings.recording
        root = self.settings.recordings_dir / self.stream.id
        for path in apply_retention(root, recording.max_age_days * 86400, recording.max_bytes):
            log.info("%s: retention deleted %s", self.stream.id, path)


def create(name: str, config: Path | None, heartbeat: Endpoint | None) -> RecordStage:
    return RecordStage(name, config, heartbeat)
