"""Preprocess stage, a pool of processes: letterbox captured frames into the worker's own ring
(or, with ``pipeline.letterbox`` on inference, only work out the letterbox and pass the frame's
place in the capture ring on: inference letterboxes it on the GPU).

Each frame is letterboxed to the smallest stride multiple that holds it at ``img_size``
(the official rectangular inference shape: 384x640 for 16:9, 40 % fewer pixels than
640x640); inference centres a batch of mixed shapes in its largest. Live streams keep
only their newest frame when this worker is behind; the frames it skips, or finds
overwritten in the capture ring, are counted as preprocess drops of their stream.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.endpoints import Endpoint
from pipeline.frames import FrameRing, RingReaders, pack_pixels
from pipeline.messages import Batchable, FrameRef
from pipeline.queues import Drops, StreamQueue, send_or_drop
from pipeline.settings import load_settings
from pipeline.stage import Stage
from stages.config import Settings
from stages.detector.letterbox import letterbox, letterbox_geometry
from stages.stats import PreprocessStats
from stages.topology import (
    PREPROCESS_OUT_BATCHES,
    capture_ring,
    crosses_hosts,
    inference_link,
    instance,
    letterbox_in_inference,
    open_inference_link,
    preprocess_input,
    preprocess_ring,
)

log = logging.getLogger(__name__)


class PreprocessStage(Stage):
    def __init__(self, name: str, config: Path | None, heartbeat: Endpoint | None) -> None:
        super().__init__(name, heartbeat)
        self.settings = load_settings(Settings, config)
        self.worker = int(instance(name))
        self.size = self.settings.detector.img_size
        self.queue: StreamQueue[FrameRef] = StreamQueue()
        self.capture_rings = RingReaders()
        self.drops = Drops()
        self.ring_seq = 0
        self.stats = PreprocessStats()

    def setup(self) -> None:
        p, runtime = self.settings.pipeline, self.settings.runtime_dir
        self.inbox = preprocess_input(runtime, self.worker).open(self.context, hwm=p.ring_slots)
        self.outbox, _ = open_inference_link(self.settings, "push", self.context, p.max_batch * PREPROCESS_OUT_BATCHES)
        self.ring_path = preprocess_ring(runtime, self.worker)
        self.ring: FrameRing | None = None  # None: inference may be on another host, frames travel inline
        self.on_device = letterbox_in_inference(self.settings)  # inference reads the capture rings itself
        if not self.on_device and not crosses_hosts(inference_link(self.settings, "push")):
            self.ring = FrameRing.create(self.ring_path, p.ring_slots * 2, (self.size, self.size, 3))

    def teardown(self) -> None:
        if self.ring:
            self.ring.close()
        self.capture_rings.close()

    def _drain(self) -> None:
        for ref in self.drain(self.inbox, FrameRef):
            self.drops.add(ref.stream, "capture", ref.drops)
            self.queue.put(ref.stream, ref, ref.realtime)

    def step(self) -> None:
        if not self.inbox.poll(200):
            return
        self._drain()
        for ref in self.queue.take_fair(len(self.queue)):
            self.drops.add(ref.stream, "preprocess", self.queue.take_drops(ref.stream))
            try:
                message = self._prepared(ref)
            except ValueError as error:
                self.reject(ref.TYPE, error)
                continue
            if message is None:  # overwritten while waiting: the capture is ahead of us
                self.drops.add(ref.stream, "preprocess")
                self.stats.dropped += 1
                continue
            message.drops = self.drops.take(ref.stream)  # what was dropped before it travels with it
            self._send(message)

    def _prepared(self, ref: FrameRef) -> Batchable | None:
        """The frame for inference: letterboxed into this worker's ring (or inline, for another host);
        or, when inference letterboxes on its device, where it lies in the capture ring and what the
        letterbox will do to it (the header alone is read, not the pixels). None: overwritten."""
        ring = capture_ring(self.settings.runtime_dir, ref.stream)
        timing = (ref.captured, ref.pts, ref.realtime)
        if self.on_device:
            shape = self.capture_rings.shape(ring, ref.slot, ref.seq)
            if shape is None:
                return None
            ratio, pad = letterbox_geometry(shape, self.size)  # auto: the smallest stride multiple
            located = (ring.name, ref.slot, ref.seq, ref.slot, shape[1], shape[0], ratio, list(pad))
            return Batchable(ref.stream, ref.seq, *located, *timing)
        frame = self.capture_rings.read(ring, ref.slot, ref.seq)
        if frame is None:
            return None
        boxed, ratio, pad = letterbox(frame.image, self.size)  # auto: the smallest stride multiple
        self.ring_seq += 1
        slot = self.ring.write(self.ring_seq, boxed, ref.pts, ref.captured) if self.ring else -1
        height, width = frame.image.shape[:2]
        located = (self.ring_path.name, slot, self.ring_seq, ref.slot, width, height, ratio, list(pad))
        message = Batchable(ref.stream, ref.seq, *located, *timing)
        if not self.ring:
            message.pixels, message.pixels_format, message.pixels_shape = pack_pixels(
                boxed, self.settings.pipeline.inline_jpeg_quality
            )
        return message

    def _send(self, message: Batchable) -> None:
        if send_or_drop(self.outbox, message.encode(), message.realtime, self):
            self.stats.frames += 1
        else:  # live and inference is behind: this frame goes, its drop counts travel on
            self.drops.add_all(message.stream, message.drops)
            self.drops.add(message.stream, "preprocess")
            self.stats.dropped += 1


def create(name: str, config: Path | None, heartbeat: Endpoint | None) -> PreprocessStage:
    return PreprocessStage(name, config, heartbeat)
