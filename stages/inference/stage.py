"""Inference stage, the one process that owns the device: dynamic batching across streams.

It takes what is ready across all streams, up to ``max_batch``, waiting at most
``max_wait_ms`` after the first frame (Triton-style), one frame per stream per round
so that streams are served fairly; live streams keep only their newest frame. It runs at a
lower CPU priority (``pipeline.inference_nice``): where cores are short, detection is what gives,
never the recording. Each frame's boxes go to the stream's own stage (internal topic
``inferred.<stream>``) with the drops since the stream's previous message; that stage publishes
``det.<stream>``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
import torch
from zmq.auth.thread import ThreadAuthenticator

from pipeline.control import ALL_STREAMS
from pipeline.endpoints import Endpoint
from pipeline.frames import RingReaders, unpack_pixels
from pipeline.messages import Batchable, ControlState, InferredMessage, box_fields, topic
from pipeline.prometheus import LATENCY_BUCKETS_MS
from pipeline.queues import Drops, StreamQueue
from pipeline.settings import load_settings
from pipeline.stage import Stage
from stages.config import Settings
from stages.detector.detector import Letterboxed, Thresholds, detector_from_settings
from stages.detector.letterbox import letterbox_shape, letterbox_tensor
from stages.stats import InferenceStats, StreamFigures
from stages.topology import INFERENCE_QUEUE_BATCHES, letterbox_in_inference, open_inference_link

log = logging.getLogger(__name__)


class InferenceStage(Stage):
    def __init__(self, name: str, config: Path | None, heartbeat: Endpoint | None) -> None:
        super().__init__(name, heartbeat)
        self.settings = load_settings(Settings, config)
        self.queue: StreamQueue[Batchable] = StreamQueue()
        self.rings = RingReaders()
        self.authenticator: ThreadAuthenticator | None = None  # CURVE on a tcp:// link with link_keys
        self.drops = Drops()
        self.overrides: dict[str, dict[str, float]] = {}
        self.recent: defaultdict[str, deque[tuple[float, float]]] = defaultdict(lambda: deque(maxlen=300))
        self.stats = InferenceStats()

    def on_control(self, state: ControlState) -> None:
        self.overrides = state.overrides

    def thresholds(self, stream: str) -> Thresholds:
        """The config's thresholds with the live overrides for all streams, then for this one, on top."""
        values = {**self.overrides.get(ALL_STREAMS, {}), **self.overrides.get(stream, {})}
        return dataclasses.replace(self.detector.thresholds, **values) if values else self.detector.thresholds

    def _stream_stats(self, stream: str, latency_ms: float, drops: dict[str, int]) -> None:
        """Per stream: published, fps over the last 300 frames, latency p50/p99 of those, totals for /metrics."""
        recent = self.recent[stream]
        recent.append((time.monotonic(), latency_ms))
        latencies = sorted(v for _, v in recent)
        span = recent[-1][0] - recent[0][0]
        entry = self.stats.streams.setdefault(
            stream, StreamFigures(latency_buckets=[0] * (len(LATENCY_BUCKETS_MS) + 1))
        )
        for stage, count in drops.items():
            entry.dropped[stage] = entry.dropped.get(stage, 0) + count
        for i, bound in enumerate([*LATENCY_BUCKETS_MS, float("inf")]):  # cumulative, as Prometheus wants
            entry.latency_buckets[i] += latency_ms <= bound
        entry.latency_sum_ms += latency_ms
        entry.published += 1
        entry.fps_out = round((len(recent) - 1) / span, 2) if span > 0 else 0.0
        entry.latency_p50_ms = round(latencies[len(latencies) // 2], 1)
        entry.latency_p99_ms = round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1)
        entry.conf, entry.iou = self.thresholds(stream).conf, self.thresholds(stream).iou

    def setup(self) -> None:
        # before the model: its CPU threads, made from here on, inherit the lower priority (the
        # heartbeat thread, already running, keeps the stage's own)
        os.nice(self.settings.pipeline.inference_nice)
        self.detector = detector_from_settings(self.settings.detector)
        self.on_device = letterbox_in_inference(self.settings)  # raw frames from the capture rings
        fixed = self.detector.backend.fixed_shape
        size = self.settings.detector.img_size
        if fixed and fixed != (size, size):
            raise ValueError(f"the model takes {fixed[0]}x{fixed[1]} input: set detector.img_size to match")
        self.inbox, self.authenticator = open_inference_link(
            self.settings, "pull", self.context, self.settings.pipeline.max_batch * INFERENCE_QUEUE_BATCHES
        )
        self.publisher = self.open_publisher()
        self.stats.model, self.stats.device = self.settings.detector.weights.name, str(self.detector.device)
        log.info(
            "model %s on %s; publishing on %s",
            self.settings.detector.weights.name,
            self.detector.device,
            self.settings.publish,
        )

    def teardown(self) -> None:
        self.rings.close()
        if self.authenticator:
            self.authenticator.stop()

    def _drain(self) -> None:
        for item in self.drain(self.inbox, Batchable):
            self.drops.add_all(item.stream, item.drops)
            self.queue.put(item.stream, item, item.realtime)

    def step(self) -> None:
        pipeline = self.settings.pipeline
        if not self.inbox.poll(100):
            return
        self._drain()
        deadline = time.monotonic() + pipeline.max_wait_ms / 1e3
        while len(self.queue) < pipeline.max_batch and (remaining := deadline - time.monotonic()) > 0:
            if self.inbox.poll(max(1, int(remaining * 1e3))):
                self._drain()
        items, images = [], []
        for item in self.queue.take_fair(pipeline.max_batch):
            self.drops.add(item.stream, "inference", self.queue.take_drops(item.stream))
            image = self._pixels(item)
            if image is None:
                continue
            items.append(item)
            images.append(image)
        if items:
            self._infer(items, images)

    def _pixels(self, item: Batchable) -> np.ndarray | None:
        """The letterboxed frame: inline from another host, else from the worker's ring (None: overwritten)."""
        try:
            if item.pixels is not None:
                return unpack_pixels(item.pixels, item.pixels_format, item.pixels_shape)
            frame = self.rings.read(self.settings.runtime_dir / Path(item.ring).name, item.slot, item.ring_seq)
        except ValueError as error:
            self.reject(item.TYPE, error)
            return None
        if frame is None:
            self.drops.add(item.stream, "inference")
            self.stats.dropped += 1
            return None
        return frame.image

    def _letterboxed(self, image: np.ndarray) -> torch.Tensor:
        """A raw frame letterboxed on the model's device as preprocess would have on the CPU (the
        smallest stride multiple at img_size), within a grey level."""
        shape = letterbox_shape(image.shape[:2], self.detector.img_size, self.detector.backend.stride)
        return letterbox_tensor(torch.from_numpy(image).to(self.detector.device, non_blocking=True), shape)[0]

    def _infer(self, items: list[Batchable], images: list[np.ndarray]) -> None:
        frames = [Letterboxed(i.ratio, (i.pad[0], i.pad[1]), (i.height, i.width)) for i in items]
        if self.on_device:  # raw frames: each uploaded once and letterboxed where the model runs
            images = [self._letterboxed(image) for image in images]
        batch, frames = self.detector.batch_letterboxed(images, frames)
        result = self.detector.detect_letterboxed(batch, frames, [self.thresholds(i.stream) for i in items])
        for item, detections in zip(items, result.detections):
            message = InferredMessage(
                stream=item.stream,
                seq=item.seq,
                captured=item.captured,
                pts=item.pts,
                width=item.width,
                height=item.height,
                **box_fields(detections),
                names=list(self.detector.names),
                inference_ms=round(result.inference_ms, 2),
                batch_size=len(items),
                drops={stage: n for stage, n in self.drops.take(item.stream).items() if n},  # the stages that dropped
                source_slot=item.source_slot,
            )
            self.publisher.send_multipart([topic("inferred", item.stream), message.encode()])
            self._stream_stats(item.stream, round((time.time() - item.captured) * 1e3, 2), message.drops)
        self.stats.frames += len(items)
        self.stats.batches += 1
        self.stats.batch_size_sum += len(items)
        self.stats.inference_ms_sum += result.inference_ms


def create(name: str, config: Path | None, heartbeat: Endpoint | None) -> InferenceStage:
    return InferenceStage(name, config, heartbeat)
