"""The two limits a run is judged against, measured on this machine just before it: decoding
alone (capture's work) and the detector alone (inference's work)."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.capture.sources.video import Decoder, decoder_for, open_reader
from stages.detector.detector import Detector, Letterboxed, load_detector
from stages.detector.letterbox import letterbox
from stages.media.video import VideoReader


@dataclass
class Ceilings:
    """The machine's two limits, in frames per second: decoding alone and the detector alone."""

    decode_fps: float  # all cores decoding, one decoder per core (or per camera, if fewer)
    decoders: int
    decoded_on: str  # cpu, or cuda (NVDEC)
    inference_fps: float  # forward pass and NMS at max_batch, frames letterboxed beforehand
    batch: int

    def cameras(self, fps: float, detect_fps: float) -> float:
        """Cameras the slower of the two limits allows."""
        return min(self.decode_fps / fps, self.inference_fps / detect_fps)

    def detections_per_s(self, fps: float, detect_fps: float) -> float:
        """Detected frames per second the machine could give at most: min(decode-only, inference-only)."""
        return min(self.decode_fps * detect_fps / fps, self.inference_fps)


def decode_fps(clip: Path, seconds: float, decoder: Decoder) -> float:
    """Frames per second one process decodes ``clip`` at (looping it), for about ``seconds``."""
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        with open_reader(str(clip), None, None, decoder) as reader:  # as capture decodes
            for frame in reader.frames():
                frames += frame.image.size > 0  # converted to BGR, as capture does every frame it passes on
                if time.perf_counter() - start >= seconds:
                    break
    return frames / (time.perf_counter() - start)


def decode_only(clip: Path, processes: int, decoder: Decoder, seconds: float = 3.0) -> float:
    """Frames per second of ``processes`` decoders at once (one per camera, as capture runs them):
    the machine's decode ceiling for that many cameras."""
    if processes == 1:
        return decode_fps(clip, seconds, decoder)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return sum(pool.starmap(decode_fps, [(clip, seconds, decoder)] * processes))


def frames_of(clip: Path, count: int) -> list[np.ndarray]:
    with VideoReader(clip) as reader:
        return [frame.image for frame, _ in zip(reader.frames(), range(count), strict=False)]


def inference_only(detector: Detector, images: list[np.ndarray], batch: int, seconds: float = 3.0) -> float:
    """Frames per second of forward pass plus NMS, in batches of ``batch``, on frames letterboxed beforehand."""
    images = (images * (batch // len(images) + 1))[:batch] if len(images) < batch else images
    target = detector.batch_shape([images[0].shape[:2]])
    boxed = [letterbox(image, target, auto=False) for image in images]
    frames = [Letterboxed(ratio, pad, image.shape[:2]) for image, (_, ratio, pad) in zip(images, boxed, strict=True)]
    pixels = np.stack([b[0] for b in boxed])
    detector.detect_letterboxed(pixels[:batch], frames[:batch])  # warm-up: first-call allocations
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for first in range(0, len(images) - batch + 1, batch):
            detector.detect_letterboxed(pixels[first : first + batch], frames[first : first + batch])
            done += batch
    return done / (time.perf_counter() - start)


def measure_ceilings(args: Any, clip: Path, decoders: int) -> Ceilings:
    """Decode-only and inference-only on this machine, now; the detector is let go afterwards so
    that the daemon's inference has the device to itself."""
    decoder = decoder_for("auto")  # as the daemon's captures decode by default
    decode = decode_only(clip, decoders, decoder)
    detector = load_detector(args.weights, args.device, args.img_size)
    inference = inference_only(detector, frames_of(clip, 16), args.max_batch)
    del detector
    with contextlib.suppress(ImportError):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return Ceilings(round(decode, 1), decoders, decoder.device or "cpu", round(inference, 1), args.max_batch)
