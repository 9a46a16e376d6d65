"""Render/record stage, one process per stream: annotate the original frame, record it, raise events.

It subscribes to its stream's ``det.<stream>`` messages, takes the frame from the
capture ring by (slot, seq), draws the detections and per-class counts, and writes
the segment and its sidecar line (when the stream is recorded). When the violation
rule fires it writes an annotated JPEG snapshot and publishes ``event.<stream>``
with where the moment can be watched. A frame already overwritten in the ring (this
stage fell behind a live source) is skipped and counted.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import zmq

from pipeline.detections import Detections
from pipeline.endpoints import Endpoint
from pipeline.frames import RingReaders
from pipeline.messages import DetectionMessage, EventMessage, topic
from pipeline.settings import load_settings
from pipeline.stage import Stage
from stages.annotate import annotate
from stages.events import ViolationRule
from stages.segments import DiskFullError, SegmentRecorder, apply_retention, make_room
from stages.settings import Settings
from stages.topology import capture_ring, detections_source, instance, live_frame

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 60.0
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
            "disk_free_bytes": None,
            "disk_low": False,  # below the floor even after deleting what may be deleted
            "bad_messages": 0,
            "bytes": 0,
            "segments": 0,
            "events": 0,
            "recent_events": [],
        }
        self.last_detection: float | None = None  # monotonic time of this stream's latest det message
        self.last_recorded: float | None = None  # and of its latest recorded frame

    def report(self) -> dict:
        now = time.monotonic()
        detected = None if self.last_detection is None else round(now - self.last_detection, 2)
        recorded = None if self.last_recorded is None else round(now - self.last_recorded, 2)
        return {**self.stats, "detection_age_s": detected, "recorded_age_s": recorded, "recording": self.stream.record}

    def setup(self) -> None:
        self.detections = detections_source(self.settings).open(self.context, hwm=1000)
        self.detections.setsockopt(zmq.SUBSCRIBE, topic("det", self.stream.id))
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
            self.recorder.close()
        self.ring.close()

    def step(self) -> None:
        self._retention()
        if time.monotonic() - self.last_space_check >= FREE_SPACE_EVERY_S:
            self._keep_free_space()
        if not self.detections.poll(200):
            return
        for message in self.drain(self.detections, DetectionMessage, topics=True):
            if message.stream == self.stream.id:  # the subscription is a prefix: det.cam1 also matches det.cam10
                self._record(message)

    def _record(self, message: DetectionMessage) -> None:
        self.last_detection = time.monotonic()
        for class_id, name in zip(message.classes, message.names):
            while len(self.names) <= class_id:
                self.names.append(str(len(self.names)))
            self.names[class_id] = name
        fired = self.rule.observe(message.names, message.scores) if self.rule else None
        live_due = time.monotonic() - self.last_live >= LIVE_EVERY_S
        if self.recorder is None and fired is None and not live_due:
            return
        try:
            frame = self.ring.read(
                capture_ring(self.settings.runtime_dir, self.stream.id), message.source_slot, message.seq
            )
        except ValueError as error:
            self.reject(message.TYPE, error)
            return
        if frame is None:
            self.stats["missed"] += 1
        detections = Detections(message.boxes, message.scores, message.classes)
        annotated = annotate(frame.image, detections, self.names) if frame is not None else None
        if self.recorder is not None and annotated is not None:
            record = {
                "seq": message.seq,
                "captured": message.captured,
                "counts": message.counts,
                "detections": detections.records(self.names),
            }
            timeline = message.pts if message.pts is not None and not self.stream.is_realtime else message.captured
            try:
                self.recorder.write(annotated, timeline, message.captured, record)
            except DiskFullError as error:
                self.stats["disk_dropped"] += 1
                if not self.stats["disk_low"]:
                    log.warning("%s; making room", error)
                self._keep_free_space(at_least_one=True)
            else:
                self.last_recorded = time.monotonic()
            self.stats.update(
                frames=self.stats["frames"] + 1,
                bytes=self.recorder.bytes_written,
                segments=self.recorder.segments_closed,
            )
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
            partial.write_bytes(jpeg.tobytes())
            os.replace(partial, self.live_path)

    def _raise_event(self, message: DetectionMessage, frames_seen: int, annotated: np.ndarray | None) -> None:
        snapshot = None
        if annotated is not None:
            stamp = datetime.fromtimestamp(message.captured).astimezone()
            folder = self.settings.recordings_dir / self.stream.id / stamp.strftime("%Y-%m-%d") / "events"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{self.stream.id}-{stamp.strftime('%Y%m%d-%H%M%S')}-{message.seq}.jpg"
            if cv2.imwrite(str(path), annotated):
                snapshot = str(path.resolve())
        position = self.recorder.position() if self.recorder else None
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
        if at_least_one:
            floor = max(floor, shutil.disk_usage(recordings).free + 1)
        free, deleted = make_room(recordings, floor)
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
