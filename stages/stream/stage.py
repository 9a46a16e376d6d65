"""``stream.<id>``: the single owner of a stream after inference, one process per stream.

For each frame inference returns (internal topic ``inferred.<stream>``) it runs the
stream's processors in order (tracked people and their PPE, zones and violations), makes each
violation phase's ``EventMessage`` once, with what the sinks add to it (snapshot, clip, recording),
hands the frame to the sinks that want inferred frames (live view, MQTT counts) and the events to
every sink (event log, webhooks, MQTT), then publishes ``det.<stream>`` and the same events on
``event.<stream>``. Offline captures take their credit from that ``det``, so nothing is read ahead
of this stage. It calls only the hooks ``Processor`` and ``Sink`` declare (``stages.stream.plugins``).

Recording does not depend on inference keeping up: capture sends this stage a reference to
every frame of a recorded stream, which is handed to the ``every_frame`` sinks with its own
results when they come (an offline stream waits for them: it is lossless), else, live, after at
most ``RECORD_DELAY_S`` with the latest earlier ones. Where those frames' pixels are, and those of
the frames awaiting results (an event's snapshot is made from its frame), is ``FrameKeeper``'s; how
far the stage has secured them goes back to capture on the ring's cursor, capture's record credit.
The stage also judges whether the camera is watched (``stages.stream.health``) and says so.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from pipeline.detections import Detections
from pipeline.endpoints import Endpoint
from pipeline.frames import RingCursor
from pipeline.messages import EncodedPacket, FrameRef, InferredMessage, SourceStatus, topic
from pipeline.settings import load_settings
from pipeline.stage import Stage
from stages.config import Settings
from stages.stats import StreamStats, plugins_report
from stages.stream import plugins
from stages.stream.analysis import FrameAnalysis, Violation
from stages.stream.clock import StreamClock
from stages.stream.health import CameraHealth, HealthJudge
from stages.stream.keeper import FrameKeeper, Kept
from stages.stream.messages import (
    NO_EVIDENCE,
    CameraMessage,
    DetectionMessage,
    EventMessage,
    Evidence,
    analysis_of,
)
from stages.stream.outputs.base import Sink
from stages.stream.processors.base import Processor
from stages.stream.shedding import AnnotationShedding
from stages.topology import (
    PACKET_HWM,
    capture_ring,
    frames_in_flight,
    instance,
    open_inferred,
    record_cursor,
    record_input,
)

log = logging.getLogger(__name__)

RECORD_DELAY_S = 0.3  # a live frame waits this long at most for its own results
OFFLINE_WAIT_S = 10.0  # an offline frame whose results were lost in a crash is recorded without them
RECENT_EVENTS = 5
PLUGIN_LOG_EVERY_S = 60.0
HEALTH_EVERY_S = 0.5  # how often the camera's state is judged
HEALTH_LOG_EVERY_S = 300.0  # a camera not watched is said again this often (a change at once)
NO_DETECTIONS = Detections(np.zeros((0, 4)), [], [])  # a frame recorded before any results came
RELEASED = 2**63  # the cursor of a stage that stopped: capture waits for nothing


class StreamStage(Stage):
    def __init__(self, name: str, config: Path | None, heartbeat: Endpoint | None) -> None:
        super().__init__(name, heartbeat)
        self.settings = load_settings(Settings, config)
        self.stream = self.settings.stream(instance(name))
        self.stats = StreamStats(recording=self.stream.records)
        ring = capture_ring(self.settings.runtime_dir, self.stream.id)
        pipeline = self.settings.pipeline
        self.keeper = FrameKeeper(ring, pipeline.ring_slots, frames_in_flight(pipeline), self.stats, self.reject)
        self.analysed: OrderedDict[int, FrameAnalysis] = OrderedDict()  # seq -> results, newest last
        # enough for every frame that can be waiting here (refs queue up to the ring's size twice over)
        self.analysed_kept = 2 * self.settings.pipeline.ring_slots + 64
        self.clock = StreamClock(self.stream.is_realtime)
        self.plugin_errors_logged: dict[str, float] = {}  # plug-in -> monotonic time last logged
        self.last_expired = 0.0  # monotonic time the processors last saw an empty frame
        # by setup; empty until then (a stage that failed to set up tears down what it got)
        self.loaded_processors: plugins.Loaded[Processor] = plugins.Loaded([], [])
        self.loaded_sinks: plugins.Loaded[Sink] = plugins.Loaded([], [])
        self.processors: list[Processor] = []
        self.sinks: list[Sink] = []
        self.frame_sinks: list[Sink] = []
        self.result_sinks: list[Sink] = []
        self.publisher: zmq.Socket | None = None
        self.inferred: zmq.Socket | None = None
        self.frames_in: zmq.Socket | None = None
        self.cursor: RingCursor | None = None
        self.health = HealthJudge(self.settings.pipeline, self.stream.is_realtime, self.stream.detect_fps)
        self.shedding = AnnotationShedding(self.stream.id, RECORD_DELAY_S, self.stats)
        self.health_judged = self.health_logged = 0.0  # monotonic
        self.left_open_ended = False  # the events a crash left open, ended for every output after the first tick

    def report(self) -> dict[str, Any]:
        """The stage's own figures, then each plug-in's as ``<prefix>_<field>``."""
        now = time.monotonic()
        last = self.clock.last_result_at
        self.stats.detection_age_s = None if last is None else round(now - last, 2)
        recorded = [at for sink in self.sinks if (at := sink.recorded_at()) is not None]
        self.stats.recorded_age_s = round(now - max(recorded), 2) if recorded else None
        return {
            **super().report(),
            **plugins_report(
                self.loaded_processors.running() + self.loaded_sinks.running(),
                self.loaded_processors.declined_stats() + self.loaded_sinks.declined_stats(),
            ),
        }

    def setup(self) -> None:
        # each list kept as soon as it is made: a setup that fails after it still closes what it opened
        self.loaded_processors = plugins.load(plugins.PROCESSORS, self.stream.processors, self.settings, self.stream)
        self.processors = self.loaded_processors.plugins
        self.loaded_sinks = plugins.load(plugins.SINKS, self.stream.sinks, self.settings, self.stream)
        self.sinks = self.loaded_sinks.plugins
        plugins.check_figures(self.loaded_processors, self.loaded_sinks)
        # split once: the every-frame sinks (recording) get captured frames, the others inferred ones
        self.frame_sinks = [s for s in self.sinks if s.every_frame]
        self.result_sinks = [s for s in self.sinks if not s.every_frame]
        self.inferred = open_inferred(self.settings, self.context, self.stream.id)
        self.poller = zmq.Poller()
        self.poller.register(self.inferred, zmq.POLLIN)
        # capture sends the source's status, and every frame or packet if recorded (the same rule decides there)
        hwm = PACKET_HWM if self.settings.copies_packets(self.stream) else self.settings.pipeline.ring_slots
        self.frames_in = record_input(self.settings.runtime_dir, self.stream.id).open(self.context, hwm=hwm)
        self.poller.register(self.frames_in, zmq.POLLIN)
        # what a stage before this one had not secured is gone with it: capture waits only from here on
        self.cursor = RingCursor.create(
            record_cursor(self.settings.runtime_dir, self.stream.id), self.keeper.newest_seq()
        )
        self.publisher = self.open_publisher()
        self._camera_changed(self.health.current, previous="")

    def teardown(self) -> None:
        while self.keeper.pending:  # what waited for results is recorded with what there is
            self._record_kept(self.keeper.pending.popleft())
        if self.publisher is not None:  # subscribers learn that open events end here, not hang open
            analysis = self._idle_analysis()
            for processor in self.processors:
                analysis.violations += processor.end_all(analysis.clock, "stopped")
            self._events_out(None, analysis, published=None)
            self.publisher.close(linger=500)
        for socket in (self.inferred, self.frames_in):
            if socket is not None:
                socket.close(linger=0)
        for plugin in [*self.processors, *self.sinks]:
            plugin.close()
        self.keeper.close()
        if self.cursor is not None:
            self.cursor.set(RELEASED)
            self.cursor.close()

    def step(self) -> None:
        for sink in self.sinks:
            self._guarded(sink, sink.tick)
        if not self.left_open_ended:
            self._end_left_open()
        now = time.monotonic()
        last = self.clock.last_result_at
        idle = last is not None and now - last >= self.settings.events.lost_s and self.health.results_overdue()
        if idle and now - self.last_expired >= 1.0:
            self._expire()
        self.poller.poll(100)
        for message in self.drain(self.frames_in, (FrameRef, EncodedPacket, SourceStatus)):
            if message.stream != self.stream.id:
                self.reject(message.TYPE, ValueError(f"stream {message.stream!r} on {self.stream.id}'s link"))
            elif isinstance(message, EncodedPacket):
                self._record_packet(message)
            elif isinstance(message, SourceStatus):
                self.health.heard(message)
            else:
                self.keeper.take(message)
        for message in self.drain(self.inferred, InferredMessage, topics=True):
            if self._valid(message):
                self._analyse(message)
        self._record_ready()
        self.cursor.set(self.keeper.secured())
        if now - self.health_judged >= HEALTH_EVERY_S:
            self._judge_camera()

    def _valid(self, message: InferredMessage) -> bool:
        if message.stream != self.stream.id:  # the subscription is a prefix: cam1 also matches cam10
            return False
        if not self.keeper.has_slot(message.source_slot):
            self.reject(message.TYPE, ValueError(f"source_slot {message.source_slot} is not in the capture ring"))
            return False
        return True

    def _analyse(self, message: InferredMessage) -> None:
        """Processors, the inferred-frame sinks, then what subscribers read."""
        self.health.inferred(message.captured)
        analysis = analysis_of(message, self.clock.of_result(message.captured, message.pts))
        image = self.keeper.image(message.source_slot, message.seq)
        for processor in self.processors:
            self._guarded(processor, processor.handle, image, analysis)
        self.analysed[message.seq] = analysis
        while len(self.analysed) > self.analysed_kept:
            self.analysed.popitem(last=False)
        self._record_ready()  # first, so that an event finds its frame in the open segment
        for sink in self.frame_sinks:
            self._guarded(sink, sink.note, analysis)
        self._events_out(image, analysis, published=DetectionMessage.from_analysis(analysis, message))

    def _events_out(
        self, image: np.ndarray | None, analysis: FrameAnalysis, published: DetectionMessage | None
    ) -> None:
        """Each violation phase's event, made once; the inferred-frame sinks; the events to every sink;
        then ``det`` (when there was a frame) and the same events on ``event``."""
        boxes = {person.track_id: person.box for person in analysis.people}
        events = tuple(  # the person's box, none once they are lost
            self._event(image, analysis, violation, list(boxes.get(violation.track_id, [])))
            for violation in analysis.violations
        )
        for sink in self.result_sinks:
            self._guarded(sink, sink.handle, image, analysis)
        if events:
            for sink in self.sinks:
                self._guarded(sink, sink.events, events)
        if published is not None:
            self.publisher.send_multipart([topic("det", self.stream.id), published.encode()])
        for event in events:
            self.publisher.send_multipart([topic("event", self.stream.id), event.encode()])
            self._remember(event)

    def _event(
        self, image: np.ndarray | None, analysis: FrameAnalysis, violation: Violation, box: list[float]
    ) -> EventMessage:
        """The phase's one message, with what each sink adds to it (a failing sink adds nothing)."""
        evidence: Evidence = {}

        def add(sink: Sink) -> None:
            found = sink.evidence(image, analysis, violation)
            unknown = set(found) - set(NO_EVIDENCE)
            if unknown:
                raise ValueError(f"evidence an event has no field for: {sorted(unknown)}")
            evidence.update(found)

        for sink in self.sinks:
            self._guarded(sink, add, sink)
        return EventMessage.from_violation(analysis, violation, box, evidence)

    def _end_left_open(self) -> None:
        """Once: the ``end`` phases of the events a crash of this stage left open (the event log ended
        them in its store), to every sink and on ``event.<stream>``, so that no MQTT or webhook receiver
        keeps one open for ever."""
        self.left_open_ended = True
        ended: list[EventMessage] = []
        for sink in self.sinks:
            self._guarded(sink, lambda s=sink: ended.extend(s.left_open()))
        if not ended:
            return
        for sink in self.sinks:
            self._guarded(sink, sink.events, tuple(ended))
        for event in ended:
            self.publisher.send_multipart([topic("event", self.stream.id), event.encode()])
            self._remember(event)

    def _judge_camera(self) -> None:
        """Whether the camera is watched: a change goes out at once, a camera not watched is said again
        every ``HEALTH_LOG_EVERY_S``."""
        previous = self.health.current
        self.health_judged = now = time.monotonic()
        changed = self.health.judge(self.stats.missed, self.stats.record_behind, self.stats.annotation_shed)
        current = self.health.current
        if changed is not None:
            self._camera_changed(changed, previous.state)
        elif current.state != "watching" and not current.starting and now - self.health_logged >= HEALTH_LOG_EVERY_S:
            self.health_logged = now
            log.warning("%s: still %s: %s", self.stream.id, current.state, current.reason)
        self.stats.camera, self.stats.camera_reason = current.state, current.reason
        self.stats.camera_since, self.stats.camera_intended = current.since, current.intended

    def _camera_changed(self, health: CameraHealth, previous: str) -> None:
        """A new state of the camera: logged, to every sink, on ``event.<stream>``."""
        self.health_logged = time.monotonic()
        if previous:
            quiet = health.state == "watching" or health.intended
            log.log(logging.INFO if quiet else logging.WARNING, "%s: camera %s%s", self.stream.id, health.state,
                    f": {health.reason}" if health.reason else "")  # fmt: skip
        message = CameraMessage.of(self.stream.id, self.settings.site, health, previous)
        for sink in self.sinks:
            self._guarded(sink, sink.camera, message)
        self.publisher.send_multipart([topic("event", self.stream.id), message.encode()])

    def _expire(self) -> None:
        """No results for ``lost_s`` (camera or inference down, a file at its end): the processors see
        an empty frame, once a second, so that the people they were following are lost in time."""
        analysis = self._idle_analysis()
        for processor in self.processors:
            self._guarded(processor, processor.handle, None, analysis)
        self._events_out(None, analysis, published=None)
        self.last_expired = time.monotonic()

    def _idle_analysis(self) -> FrameAnalysis:
        """A frame with nothing on it at the stream's time now; seq 0: no frame of the stream."""
        return FrameAnalysis(self.stream.id, 0, time.time(), None, 1, 1, NO_DETECTIONS, [], clock=self.clock.now())

    def _guarded(self, plugin: object, call: Callable[..., None], *args: object) -> None:
        """A failing plug-in is counted and logged (once a minute), never fatal: the others go on."""
        try:
            call(*args)
        except Exception as error:
            self.stats.plugin_errors += 1
            name = type(plugin).__name__
            if time.monotonic() - self.plugin_errors_logged.get(name, -PLUGIN_LOG_EVERY_S) >= PLUGIN_LOG_EVERY_S:
                self.plugin_errors_logged[name] = time.monotonic()
                log.exception("%s: %s failed (%s); going on", self.stream.id, name, error)

    def _remember(self, event: EventMessage) -> None:
        self.stats.events += event.phase == "start"
        recent = {k: getattr(event, k) for k in ("event_id", "phase", "track_id", "zones", "missing", "started")}
        recent.update(duration_s=round(event.duration_s, 1), snapshot=event.snapshot, segment=event.segment)
        self.stats.recent_events = [*self.stats.recent_events[-(RECENT_EVENTS - 1) :], recent]
        log.info(
            "%s: %s %s person %d in %s without %s (%.0f s)%s",
            self.stream.id,
            event.event_id,
            event.phase,
            event.track_id,
            "+".join(event.zones),
            "+".join(event.missing),
            event.duration_s,
            f": {event.reason}" if event.reason else "",
        )

    def _record_packet(self, packet: EncodedPacket) -> None:
        """One of the camera's own packets, recorded as it came, on the stream's event clock."""
        clock = self.clock.of_packet(packet.captured, packet.pts_s)

        def record(sink: Sink) -> None:
            try:
                sink.handle_packet(packet, clock)
            except ValueError as error:  # well-formed on the wire, not as video
                self.reject(packet.TYPE, error)

        for sink in self.frame_sinks:
            self._guarded(sink, record, sink)

    def _record_ready(self) -> None:
        """Record the waiting frames, oldest first, whose results are known or who waited long enough;
        first, and before each recording (x264 at 1080p takes time), copy out what capture nears."""
        newest = next(reversed(self.analysed), -1)
        pending = self.keeper.pending
        self.keeper.rescue()
        while pending:
            ref = pending[0].ref
            if ref.seq not in self.analysed and newest < ref.seq:
                patience = RECORD_DELAY_S if ref.realtime else OFFLINE_WAIT_S
                if time.monotonic() - pending[0].arrived < patience:
                    return
            self._record_kept(pending.popleft())
            self.keeper.rescue()
            self.cursor.set(self.keeper.secured())  # capture may be waiting for this one

    def _record_kept(self, kept: Kept) -> None:
        image = self.keeper.recordable(kept)
        if image is not None:
            self._record(kept.ref, image)
            if kept.ref.seq not in self.analysed and kept.ref.realtime and kept.ref.detected:
                self.keeper.await_results(kept)

    def _record(self, ref: FrameRef, image: np.ndarray) -> None:
        """Hand a captured frame to the every-frame sinks with its own results or the latest earlier ones."""
        own = self.analysed.get(ref.seq)
        earlier = own or self._latest_before(ref.seq)
        if earlier is None:
            height, width = image.shape[:2]
            analysis = FrameAnalysis(self.stream.id, ref.seq, ref.captured, ref.pts, width, height, NO_DETECTIONS, [])
        else:
            analysis = dataclasses.replace(earlier, seq=ref.seq, captured=ref.captured, pts=ref.pts, violations=[])
        analysis.clock = self.clock.of(ref.captured, ref.pts)
        analysis.inferred_seq = earlier.seq if earlier else None
        self.shedding.recorded(ref, holding_capture=self.keeper.capped)
        analysis.annotated = not self.shedding.active
        for sink in self.frame_sinks:
            self._guarded(sink, sink.handle, image, analysis)

    def _latest_before(self, seq: int) -> FrameAnalysis | None:
        """The newest results of an earlier frame: what a frame inference skipped is drawn with."""
        earlier = [s for s in self.analysed if s <= seq]
        return self.analysed[max(earlier)] if earlier else None


def create(name: str, config: Path | None, heartbeat: Endpoint | None) -> StreamStage:
    return StreamStage(name, config, heartbeat)
