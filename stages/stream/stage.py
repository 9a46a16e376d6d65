"""``stream.<id>``: the single owner of a stream after inference, one process per stream.

For each frame inference returns (internal topic ``inferred.<stream>``) it runs the
stream's processors in order (tracked people and their PPE, zones and violations), then
the sinks that want inferred frames (live view, event snapshots), then publishes
``det.<stream>`` and one ``event.<stream>`` per violation phase. Offline captures take
their credit from that ``det``, so nothing is read ahead of this stage.

Recording does not depend on inference keeping up: capture sends this stage a reference to
every frame of a recorded stream, which is copied out of the ring at once and handed to the
``every_frame`` sinks with its own results when they come (an offline stream waits for them:
it is lossless), else, live, after at most ``RECORD_DELAY_S`` with the latest earlier ones.
A frame already overwritten in the ring (this stage fell behind) is counted as missed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict, deque
from dataclasses import fields
from pathlib import Path

import numpy as np
import zmq

from pipeline.analysis import FrameAnalysis
from pipeline.detections import Detections
from pipeline.endpoints import Endpoint
from pipeline.frames import RingReaders
from pipeline.messages import DetectionMessage, EventMessage, FrameRef, InferredMessage, topic
from pipeline.settings import load_settings
from pipeline.stage import Stage
from stages.settings import Settings
from stages.stats import RecorderStats, StreamStats
from stages.stream import plugins
from stages.topology import capture_ring, instance, open_inferred, record_input

log = logging.getLogger(__name__)

RECORD_DELAY_S = 0.3  # a live frame waits this long at most for its own results
OFFLINE_WAIT_S = 10.0  # an offline frame whose results were lost in a crash is recorded without them
RECENT_EVENTS = 5
NO_DETECTIONS = Detections(np.zeros((0, 4)), [], [])  # a frame recorded before any results came


class StreamStage(Stage):
    def __init__(self, name: str, config: Path | None, heartbeat: Endpoint | None) -> None:
        super().__init__(name, heartbeat)
        self.settings = load_settings(Settings, config)
        self.stream = self.settings.stream(instance(name))
        self.ring = RingReaders()  # the one capture ring of this stream, once its capture created it
        self.stats = StreamStats(recording=self.stream.record)
        self.pending: deque[tuple[FrameRef, np.ndarray, float]] = deque()  # frames to record, and when they came
        self.analysed: OrderedDict[int, FrameAnalysis] = OrderedDict()  # seq -> results, newest last
        # enough for every frame that can be waiting here (refs queue up to the ring's size twice over)
        self.analysed_kept = 2 * self.settings.pipeline.ring_slots + 64
        self.last_inferred: float | None = None  # monotonic time of this stream's latest results
        self.file_anchor: float | None = None  # capture time minus pts, for a file's clock
        self.last_clock = 0.0

    def report(self) -> dict:
        now = time.monotonic()
        self.stats.detection_age_s = None if self.last_inferred is None else round(now - self.last_inferred, 2)
        recorded = getattr(self.recorder, "last_recorded", None)
        self.stats.recorded_age_s = None if recorded is None else round(now - recorded, 2)
        recorder_stats = getattr(self.recorder, "stats", None)
        if isinstance(recorder_stats, RecorderStats):
            for figure in fields(RecorderStats):
                setattr(self.stats, figure.name, getattr(recorder_stats, figure.name))
        return super().report()

    def setup(self) -> None:
        self.processors = plugins.load(plugins.PROCESSORS, self.stream.processors, self.settings, self.stream)
        self.sinks = plugins.load(plugins.SINKS, self.stream.sinks, self.settings, self.stream)
        self.recorder = next((s for s in self.sinks if getattr(s, "every_frame", False)), None)
        self.inferred = open_inferred(self.settings, self.context, self.stream.id)
        self.poller = zmq.Poller()
        self.poller.register(self.inferred, zmq.POLLIN)
        self.frames_in = None
        if self.recorder is not None:
            hwm = self.settings.pipeline.ring_slots
            self.frames_in = record_input(self.settings.runtime_dir, self.stream.id).open(self.context, hwm=hwm)
            self.poller.register(self.frames_in, zmq.POLLIN)
        self.publisher = self.open_publisher()

    def teardown(self) -> None:
        while self.pending:  # what waited for results is recorded with what there is
            ref, image, _ = self.pending.popleft()
            self._record(ref, image)
        for plugin in [*self.processors, *self.sinks]:
            plugin.close()
        self.ring.close()

    def step(self) -> None:
        for sink in self.sinks:
            if hasattr(sink, "tick"):
                sink.tick()
        self.poller.poll(100)
        if self.frames_in is not None:
            for ref in self.drain(self.frames_in, FrameRef):
                self._take(ref)
        for message in self.drain(self.inferred, InferredMessage, topics=True):
            if self._valid(message):
                self._analyse(message)
        self._record_ready()

    def _valid(self, message: InferredMessage) -> bool:
        if message.stream != self.stream.id:  # the subscription is a prefix: cam1 also matches cam10
            return False
        if not self.ring.has_slot(capture_ring(self.settings.runtime_dir, self.stream.id), message.source_slot):
            self.reject(message.TYPE, ValueError(f"source_slot {message.source_slot} is not in the capture ring"))
            return False
        return True

    def _analyse(self, message: InferredMessage) -> None:
        """Processors, the inferred-frame sinks, then what subscribers read."""
        self.last_inferred = time.monotonic()
        analysis = message.analysis(self._clock(message))
        ring = capture_ring(self.settings.runtime_dir, self.stream.id)
        frame = self.ring.read(ring, message.source_slot, message.seq)
        image = frame.image if frame is not None else self._pending_image(message.seq)
        for processor in self.processors:
            processor.handle(image, analysis)
        for sink in self.sinks:
            if not getattr(sink, "every_frame", False):
                sink.handle(image, analysis)
        self.analysed[message.seq] = analysis
        while len(self.analysed) > self.analysed_kept:
            self.analysed.popitem(last=False)
        self._record_ready()  # first, so that an event below finds its frame in the open segment
        published = DetectionMessage.from_analysis(analysis, message)
        self.publisher.send_multipart([topic("det", self.stream.id), published.encode()])
        boxes = {person.track_id: person.box for person in analysis.people}
        for violation in analysis.violations:
            violation.box = violation.box or boxes.get(violation.track_id, [])  # none once the person is lost
            position = self.recorder.position(analysis) if self.recorder else None
            violation.segment, violation.offset_s = position or (None, None)
            event = EventMessage.from_violation(analysis, violation)
            self.publisher.send_multipart([topic("event", self.stream.id), event.encode()])
            self._remember(event)

    def _clock(self, message: InferredMessage) -> float:
        """Capture time live; a file's own timeline, anchored at the capture time of its first frame here."""
        if self.stream.is_realtime or message.pts is None:
            return message.captured
        if self.file_anchor is None or message.pts + self.file_anchor < self.last_clock - 1.0:  # started over
            self.file_anchor = message.captured - message.pts
        self.last_clock = message.pts + self.file_anchor
        return self.last_clock

    def _pending_image(self, seq: int) -> np.ndarray | None:
        return next((image for ref, image, _ in self.pending if ref.seq == seq), None)

    def _remember(self, event: EventMessage) -> None:
        self.stats.events += event.phase == "start"
        recent = {k: getattr(event, k) for k in ("event_id", "phase", "track_id", "zone", "missing", "started")}
        recent.update(duration_s=round(event.duration_s, 1), snapshot=event.snapshot, segment=event.segment)
        self.stats.recent_events = [*self.stats.recent_events[-(RECENT_EVENTS - 1) :], recent]
        log.info(
            "%s: %s %s person %d in %s without %s (%.0f s)",
            self.stream.id,
            event.event_id,
            event.phase,
            event.track_id,
            event.zone,
            "+".join(event.missing),
            event.duration_s,
        )

    def _take(self, ref: FrameRef) -> None:
        """Copy a captured frame out of the ring at once: the ring holds about half a second, and
        the frame may wait here for its results while this stage encodes others."""
        try:
            frame = self.ring.read(capture_ring(self.settings.runtime_dir, self.stream.id), ref.slot, ref.seq)
        except ValueError as error:
            self.reject(ref.TYPE, error)
            return
        if frame is None:
            self.stats.missed += 1
            return
        self.pending.append((ref, frame.image, time.monotonic()))

    def _record_ready(self) -> None:
        """Record the waiting frames, oldest first, whose results are known or who waited long enough."""
        newest = next(reversed(self.analysed), -1)
        while self.pending:
            ref, image, arrived = self.pending[0]
            if ref.seq not in self.analysed and newest < ref.seq:
                patience = RECORD_DELAY_S if ref.realtime else OFFLINE_WAIT_S
                if time.monotonic() - arrived < patience:
                    return
            self.pending.popleft()
            self._record(ref, image)

    def _record(self, ref: FrameRef, image: np.ndarray) -> None:
        """Hand a captured frame to the every-frame sinks with its own results or the latest earlier ones."""
        own = self.analysed.get(ref.seq)
        earlier = own or self._latest_before(ref.seq)
        if earlier is None:
            height, width = image.shape[:2]
            analysis = FrameAnalysis(self.stream.id, ref.seq, ref.captured, ref.pts, width, height, NO_DETECTIONS, [])
        else:
            analysis = dataclasses.replace(earlier, seq=ref.seq, captured=ref.captured, pts=ref.pts, violations=[])
        analysis.inferred_seq = earlier.seq if earlier else None
        for sink in self.sinks:
            if getattr(sink, "every_frame", False):
                sink.handle(image, analysis)

    def _latest_before(self, seq: int) -> FrameAnalysis | None:
        """The newest results of an earlier frame: what a frame inference skipped is drawn with."""
        earlier = [s for s in self.analysed if s <= seq]
        return self.analysed[max(earlier)] if earlier else None


def create(name: str, config: Path | None, heartbeat: Endpoint | None) -> StreamStage:
    return StreamStage(name, config, heartbeat)
