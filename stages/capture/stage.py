"""Capture stage, one process per stream: decode, write frames to the stream's ring, send refs.

Live sources never wait: if the preprocess workers' queues are full the frame is
dropped and counted. Offline sources (``realtime = false``) wait for credit: at
most ``offline_window`` frames in flight, a frame counting as done when its
``det.<stream>`` message is published. A frame to record is never overwritten in the ring before
the stream stage has secured it (its record credit, the ring's ``RingCursor``): capture waits for
that as long as the stage keeps securing frames (a slow one, on a loaded box), and for one that
secures none, offline for ``CREDIT_TIMEOUT_S``, live for ``RECORD_WAIT_S`` (the stage descheduled or
stopped), then goes on, and the frame is counted missed there. A lost source is reopened with backoff,
forever; the state (connecting, connected, reconnecting, ended) goes out with the
heartbeats, and to the stream stage (``SourceStatus``, once a second and at each change), which
says for the stream whether it is watched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import cv2
import zmq

from pipeline.endpoints import Endpoint
from pipeline.frames import FrameRing, RingCursor
from pipeline.messages import ControlState, EncodedPacket, FrameRef, SourceStatus
from pipeline.queues import send_or_drop
from pipeline.repeats import RepeatedFailure
from pipeline.settings import load_settings
from pipeline.stage import Stage
from stages.capture.sources.feeds import Feed, FeedError, FeedFrame, open_feed
from stages.capture.sources.kinds import redact, source_kind
from stages.capture.sources.video import decoder_for
from stages.config import Settings
from stages.media.video import CopiedPacket, VideoCodec
from stages.stats import CaptureStats
from stages.stream.messages import DetectionMessage
from stages.topology import (
    PACKET_HWM,
    capture_ring,
    instance,
    open_detections,
    preprocess_input,
    record_cursor,
    record_input,
    refs_queued,
)

log = logging.getLogger(__name__)

CREDIT_TIMEOUT_S = 10.0  # an offline frame lost in a crashed stage must not stall its stream forever
RECORD_WAIT_S = 2.0  # a live frame to record waits this long for a stream stage that secures no frame
STATUS_EVERY_S = 1.0  # how often the stream stage hears how the source is doing
LOSS_LOG_EVERY_S = 300.0  # a source lost the same way again and again is said once, then this often


def packet_message(stream: str, packet: CopiedPacket, codec: VideoCodec, captured: float) -> EncodedPacket:
    """A copied packet on the wire; a keyframe names the codec and size a segment starts with."""
    described = {"codec": codec.name, "width": codec.width, "height": codec.height} if packet.keyframe else {}
    base = [packet.time_base.numerator, packet.time_base.denominator]
    return EncodedPacket(stream, captured, packet.pts, packet.dts, base, packet.keyframe, packet.data, **described)


class RateSchedule:
    """At most ``rate`` frames a second of source time, on a schedule: 20 of a 30 fps camera's
    frames, not every other one (a minimum interval would give 15). A jump in the timestamps (a
    loop, a reconnect) starts the schedule over. No rate, or no timestamp: every frame."""

    def __init__(self, rate: float | None) -> None:
        self.period = 1 / rate if rate else None
        self.next: float | None = None  # the source time from which the next frame is due

    def due(self, pts: float | None) -> bool:
        period, due = self.period, self.next
        if period is None or pts is None:
            return True
        if due is not None and pts < due - 1e-3 and due - pts <= period:
            return False
        self.next = due + period if due is not None and 0 <= pts - due < period else pts + period
        return True


class CaptureStage(Stage):
    def __init__(self, name: str, config: Path | None, heartbeat: Endpoint | None) -> None:
        super().__init__(name, heartbeat)
        self.settings = load_settings(Settings, config)
        self.stream = self.settings.stream(instance(name))
        self.realtime = self.stream.is_realtime
        self.loop = self.stream.loop or source_kind(self.stream.url) == "demo"
        self.decoder = decoder_for(self.settings.pipeline.decode)
        self.feed: Feed | None = None
        self.frames: Iterator[FeedFrame] | None = None
        self.retry_at = 0.0
        self.failures = 0
        self.seq = int(time.time() * 1000)  # increases across restarts of this stage
        self.awaiting: deque[int] = deque()  # offline: seqs sent for detection whose det has not come yet
        self.last_credit_time = time.monotonic()
        self.pending_drops = 0
        self.taken = RateSchedule(self.stream.fps)  # frames over fps are neither detected nor recorded
        self.detected = RateSchedule(self.stream.detect_fps)  # of those, the ones detected
        self.from_file = False  # a file decodes faster than real time: paced when it stands for a live feed
        self.pace: tuple[float, float] | None = None  # (wall clock, pts) of the first frame since opening
        self.paused = False
        self.copying = False  # the feed's own packets go to be recorded, not the frames
        self.need_keyframe = True  # copying: a packet was lost (or none sent yet); wait for a keyframe
        self.last_frame: float | None = None
        self.frames_since_open = 0
        self.lost_because = ""  # the last reason the source was lost, until it opens again
        self.loss_said = RepeatedFailure(LOSS_LOG_EVERY_S)
        self.status_sent: tuple[float, tuple] = (0.0, ())  # (monotonic, what it said)
        self.sent_times: list[float] = []
        self.unrecorded: deque[int] = deque()  # seqs in the ring to record, maybe not yet secured
        self.recorder_stuck_at: int | None = None  # the cursor of a recorder that did not move: not waited for
        self.stats = CaptureStats(live=self.realtime)

    def report(self) -> dict:
        self.stats.frame_age_s = None if self.last_frame is None else round(time.monotonic() - self.last_frame, 2)
        return super().report()

    def on_control(self, state: ControlState) -> None:
        paused = self.stream.id in state.paused
        if paused != self.paused:
            log.info("%s: %s", self.stream.id, "paused" if paused else "resumed")
        self.paused = self.stats.paused = paused

    def setup(self) -> None:
        p = self.settings.pipeline
        self.ring = FrameRing.create(
            capture_ring(self.settings.runtime_dir, self.stream.id), p.ring_slots, (p.max_frame_pixels, 1, 3)
        )
        self.refs = self.context.socket(zmq.PUSH)
        self.refs.setsockopt(zmq.SNDHWM, refs_queued(p))
        self.refs.setsockopt(zmq.LINGER, 0)
        # one worker per stream keeps its frames in order all the way to its tracker
        worker = [s.id for s in self.settings.streams].index(self.stream.id) % p.preprocess_workers
        self.refs.connect(preprocess_input(self.settings.runtime_dir, worker).address)
        # the stream stage hears the source's status, and every frame (or packet) if it records here
        self.to_stream = self.record_out = None
        self.copy_packets = self.settings.copies_packets(self.stream)
        if "stream" in p.stages:
            hwm = PACKET_HWM if self.copy_packets else p.ring_slots  # a ring's worth waits for credit
            record = record_input(self.settings.runtime_dir, self.stream.id)
            self.to_stream = record.peer("push").open(self.context, hwm=hwm)
            self.record_out = self.to_stream if self.stream.records else None
        self.record_cursor = RingCursor(record_cursor(self.settings.runtime_dir, self.stream.id))
        self.credits = None
        if not self.realtime:
            self.credits = open_detections(self.settings, self.context, self.stream.id)
        self.state = "connecting"

    def teardown(self) -> None:
        self._close_feed()
        self.ring.close()
        self.record_cursor.close()

    def _open(self) -> None:
        if time.monotonic() < self.retry_at:
            time.sleep(0.1)
            return
        try:
            timeout_s = self.settings.pipeline.rtsp_timeout_s
            copy = self.copy_packets and self.record_out is not None
            self.feed = open_feed(self.stream.url, self.settings.runtime_dir, timeout_s, self.decoder, copy)
        except FeedError as error:
            self._lost(str(error))
            return
        if copy and self.feed.codec is None and not self.copying:
            log.info("%s: recorded annotated (no H.264/HEVC packets to copy from this source)", self.stream.id)
        self.copying, self.need_keyframe = self.feed.codec is not None, True
        self.frames = self.feed.frames()
        self.from_file = self.feed.from_file
        self.pace = None
        self.state = "connected"
        self.frames_since_open = 0
        self.lost_because = ""
        log.info("%s: opened %s", self.stream.id, redact(self.stream.url))

    def _close_feed(self) -> None:
        if self.feed:
            self.stats.corrupt += self.feed.corrupt
            self.feed.close()
        self.feed = self.frames = None

    def _lost(self, why: str) -> None:
        self._close_feed()
        pipeline = self.settings.pipeline
        delay = min(pipeline.reconnect_max_s, pipeline.reconnect_min_s * 2**self.failures)
        self.failures += 1
        self.stats.reconnects += 1
        self.retry_at = time.monotonic() + delay
        self.state = "reconnecting"
        self.lost_because = why
        again = self.loss_said.again(why)
        if again is not None:
            log.warning("%s: %s; retrying in %.1f s%s", self.stream.id, why, delay, again)

    def _ended(self) -> None:
        reopen = self.loop or (self.realtime and not self.from_file)
        if reopen and not self.frames_since_open:  # reopened at once, it would end at once again, for ever
            self._lost("it ended before its first decodable frame")
            return
        self._close_feed()
        if reopen:
            self.retry_at = 0.0  # a live stream that ends is reopened at once; a looping file restarts
            self.state = "connected" if self.loop and self.from_file else "connecting"
        else:
            self.state = "ended"
            log.info("%s: end of %s after %d frames", self.stream.id, redact(self.stream.url), self.stats.frames)

    def _send_status(self) -> None:
        """Tell the stream stage how the source is doing: at once when that changed, else once a second."""
        if self.to_stream is None:
            return
        said = (self.state, self.lost_because, self.paused)
        now = time.monotonic()
        if said == self.status_sent[1] and now - self.status_sent[0] < STATUS_EVERY_S:
            return
        age = None if self.last_frame is None else round(now - self.last_frame, 2)
        status = SourceStatus(self.stream.id, self.state, self.lost_because, age, self.stats.fps_in, self.paused)
        with contextlib.suppress(zmq.Again):  # the stage is far behind or gone: it judges by silence then
            self.to_stream.send(status.encode(), zmq.NOBLOCK)
        self.status_sent = (now, said)

    def step(self) -> None:
        self._send_status()
        if self.state == "ended":
            time.sleep(0.2)
            return
        if self.frames is None:
            self._open()
            return
        if self.paused and not self.realtime:  # an offline file waits where it is
            time.sleep(0.1)
            return
        try:
            frame = next(self.frames)
        except StopIteration:
            self._ended()
            return
        except FeedError as error:
            self._lost(str(error))
            return
        if not self.frames_since_open:  # it works: its next failure is retried soon, and said at once
            self.failures = 0
            self.loss_said.reset()
        self.frames_since_open += 1
        if self.realtime and self.from_file:
            self._wait_for_pts(frame.pts)
        if self.paused:  # live: keep the connection, process nothing
            self.last_frame = time.monotonic()
            self.need_keyframe = True
            return
        if self.copying:
            self._send_packets(frame)
        if not self.taken.due(frame.pts):
            return
        if not self.realtime and not self._wait_for_credit():
            return
        self._send(frame)

    def _wait_for_pts(self, pts: float | None) -> None:
        """Play a file that stands for a live source at its own speed."""
        if pts is None:
            return
        if self.pace is None:
            self.pace = (time.monotonic(), pts)
        delay = self.pace[0] + (pts - self.pace[1]) - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, 1.0))

    def _wait_for_credit(self) -> bool:
        window = self.settings.pipeline.offline_window
        while len(self.awaiting) >= window and not self.stopping:
            if self.credits.poll(200):
                for message in self.drain(self.credits, DetectionMessage, topics=True):
                    if message.stream == self.stream.id and self.awaiting and message.seq >= self.awaiting[0]:
                        while self.awaiting and self.awaiting[0] <= message.seq:
                            self.awaiting.popleft()
                        self.last_credit_time = time.monotonic()
            elif time.monotonic() - self.last_credit_time > CREDIT_TIMEOUT_S:
                log.warning(
                    "%s: no credit for %.0f s; assuming in-flight frames lost", self.stream.id, CREDIT_TIMEOUT_S
                )
                self.awaiting.clear()
                self.last_credit_time = time.monotonic()
            self.beat()
            self._send_status()
        return not self.stopping

    def _await_recorder(self, seq: int) -> None:
        """Record's credit: before frame ``seq`` overwrites one still to record, wait until the stream
        stage has secured it (recorded or copied out), as long as it keeps securing frames. A recorder
        that does not move within the bound (stopped, restarting) is not waited for again until it
        moves: capture goes on meanwhile."""
        overwritten = seq - self.ring.slots
        if not self.unrecorded or self.unrecorded[0] > overwritten:
            return
        started = moved = time.monotonic()
        patience = RECORD_WAIT_S if self.realtime else CREDIT_TIMEOUT_S
        seen: int | None = None
        while not self.stopping and (secured := self.record_cursor.get()) is not None and secured < overwritten:
            if secured == self.recorder_stuck_at:
                break
            if secured != seen:  # a slow recorder, not a stuck one: waited for while it moves
                seen, moved = secured, time.monotonic()
            if time.monotonic() - moved > patience:
                log.warning("%s: the recorder secured no frame for %.0f s; going on without it",
                            self.stream.id, patience)  # fmt: skip
                self.recorder_stuck_at = secured
                break
            time.sleep(0.005)  # a shared-memory cursor: nothing to poll on
            self.beat()
            self._send_status()
        else:
            self.recorder_stuck_at = None
        self.stats.record_wait_s = round(self.stats.record_wait_s + time.monotonic() - started, 3)
        while self.unrecorded and self.unrecorded[0] <= overwritten:
            self.unrecorded.popleft()

    def _send_packets(self, frame: FeedFrame) -> None:
        """The source's packets that came with this frame, to be recorded as they are: whatever the
        rate, every one (a copied stream cannot skip frames). A live packet the stream stage has no
        room for is lost with the rest up to the next keyframe, which a recording can start at."""
        captured = time.time()
        for packet in frame.packets:
            if self.need_keyframe and not packet.keyframe:
                self.stats.record_dropped += 1
                continue
            payload = packet_message(self.stream.id, packet, self.feed.codec, captured).encode()
            self.need_keyframe = not self._to_record(payload)

    def _to_record(self, payload: bytes) -> bool:
        """Send to the stream stage's recorder; offline waits (lossless), live never does."""
        if send_or_drop(self.record_out, payload, self.realtime, self):
            return True
        self.stats.record_dropped += 1  # live, and record is gone or far behind
        return False

    def _send(self, frame: FeedFrame) -> None:
        now = self.last_frame = time.monotonic()  # a frame came, whether or not it is detected
        self.sent_times = [t for t in self.sent_times if now - t < 5.0] + [now]
        self.stats.fps_in = round(len(self.sent_times) / 5.0, 2)
        detect = self.detected.due(frame.pts)
        if self.copying and not detect:  # its packets are recorded; its pixels are never looked at
            self.stats.recorded_only += 1
            return
        image = frame.image
        max_pixels = self.settings.pipeline.max_frame_pixels
        if image.shape[0] * image.shape[1] > max_pixels:
            scale = (max_pixels / (image.shape[0] * image.shape[1])) ** 0.5
            image = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)))
        self.seq += 1
        self._await_recorder(self.seq)
        captured = time.time()
        slot = self.ring.write(self.seq, image, frame.pts, captured)
        record = self.record_out is not None and not self.copying  # recorded whether or not inference sees it
        ref = FrameRef(self.stream.id, self.seq, slot, captured, frame.pts, self.realtime, self.pending_drops, record)
        payload = ref.encode()
        # live and every worker behind: it goes, to be recorded only
        detected = detect and send_or_drop(self.refs, payload, self.realtime, self)
        # the stream stage keeps a detected frame for its results (a snapshot), and only those
        if record and self._to_record(payload if detected else dataclasses.replace(ref, detected=False).encode()):
            self.unrecorded.append(self.seq)
        if not detect:
            self.stats.recorded_only += 1
            return
        if not detected:
            self.pending_drops += 1
            self.stats.dropped += 1
            return
        if not record and self.to_stream is not None:
            send_or_drop(self.to_stream, payload, self.realtime, self)
        self.pending_drops = 0
        if not self.realtime:
            self.awaiting.append(self.seq)
        self.stats.frames += 1


def create(name: str, config: Path | None, heartbeat: Endpoint | None) -> CaptureStage:
    return CaptureStage(name, config, heartbeat)
