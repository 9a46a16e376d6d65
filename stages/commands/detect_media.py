"""One-off detection over images, videos, folders and live sources (a camera or an RTSP stream,
for a number of frames): the desktop tool's job, from a shell.

For each input it writes, under the output folder, the annotated image or H.264 video
and its detections (``NAME.json`` for an image, ``NAME.jsonl`` with a line per frame
for a video), then a ``summary.json``. A file that fails is reported by name and
skipped; the others go on.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
from tqdm import tqdm

from pipeline.detections import Detections
from stages.capture.sources.feeds import FeedError, open_feed
from stages.capture.sources.media_files import MediaFile
from stages.config import redact
from stages.detector.detector import BatchResult, Detector
from stages.media.annotate import annotate
from stages.media.video import VideoReader, VideoWriter

log = logging.getLogger(__name__)

LIVE_TIMEOUT_S = 10.0  # connect and read timeout of a network stream


@dataclass
class Summary:
    """What a run did, for the table and ``summary.json``."""

    files: int = 0
    failed: list[str] = field(default_factory=list)  # one line per failed input
    frames: int = 0
    counts: Counter[str] = field(default_factory=Counter)  # boxes per class over all frames
    inference_ms_total: float = 0.0

    def add(self, result: BatchResult, names: list[str]) -> None:
        self.frames += len(result.detections)
        self.inference_ms_total += result.inference_ms
        for detections in result.detections:
            self.counts.update(detections.counts(names))

    @property
    def mean_inference_ms(self) -> float:
        return self.inference_ms_total / self.frames if self.frames else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "failed": self.failed,
            "frames": self.frames,
            "counts": dict(sorted(self.counts.items())),
            "mean_inference_ms": round(self.mean_inference_ms, 2),
        }

    def table(self) -> str:
        rows = [
            ("files processed", str(self.files)),
            ("files failed", str(len(self.failed))),
            ("frames", str(self.frames)),
            ("mean inference ms/frame", f"{self.mean_inference_ms:.1f}"),
        ]
        per_class = [(f"  {name}", str(count)) for name, count in sorted(self.counts.items())]
        rows += per_class or [("  (no detections)", "")]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{label:<{width}}  {value:>8}" for label, value in rows)


def frame_record(detections: Detections, names: list[str], inference_ms: float) -> dict[str, Any]:
    return {
        "inference_ms": round(inference_ms, 2),
        "counts": detections.counts(names),
        "detections": detections.records(names),
    }


def detect_image(detector: Detector, media: MediaFile, out_dir: Path, summary: Summary) -> None:
    image = cv2.imread(str(media.path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{media.path}: unreadable or corrupt image")
    result = detector.detect([image])
    detections = result.detections[0]
    target = out_dir / media.relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), annotate(image, detections, detector.names)):
        raise ValueError(f"{target}: cannot write the annotated image")
    record = {
        "source": str(media.path),
        "width": image.shape[1],
        "height": image.shape[0],
        **frame_record(detections, detector.names, result.inference_ms),
    }
    target.with_suffix(".json").write_text(json.dumps(record, indent=1))
    summary.add(result, detector.names)


def _batches(frames: Iterable, size: int) -> Iterable[list]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def detect_video(detector: Detector, media: MediaFile, out_dir: Path, summary: Summary, batch_size: int) -> None:
    with VideoReader(media.path) as reader:
        frames = ((frame.index, frame.pts_s, frame.image) for frame in reader.frames())
        written = _detect_frames(detector, frames, reader.fps, reader.frame_count, media, out_dir, summary, batch_size)
        if reader.corrupt_packets:
            log.warning("%s: %d corrupt packet(s) skipped", media.path, reader.corrupt_packets)
    if not written:
        raise ValueError(f"{media.path}: no decodable video frames")


def detect_live(
    detector: Detector, media: MediaFile, out_dir: Path, summary: Summary, batch_size: int, max_frames: int
) -> None:
    """A camera or network stream, for its next ``max_frames`` frames: a live source never ends."""
    try:
        feed = open_feed(media.url, out_dir, timeout_s=LIVE_TIMEOUT_S)
    except FeedError as error:
        raise ValueError(str(error)) from None
    try:
        frames = ((index, frame.pts, frame.image) for index, frame in zip(range(max_frames), feed.frames()))
        written = _detect_frames(detector, frames, feed.fps, max_frames, media, out_dir, summary, batch_size)
    except FeedError as error:  # the annotated video and JSONL keep the frames before the loss
        raise ValueError(f"{error}; frames before the loss are kept") from None
    finally:
        feed.close()
    if not written:
        raise ValueError(f"{redact(media.url)}: the stream ended before its first frame")


def _detect_frames(
    detector: Detector,
    frames: Iterable[tuple[int, float | None, np.ndarray]],
    fps: Fraction,
    total: int | None,
    media: MediaFile,
    out_dir: Path,
    summary: Summary,
    batch_size: int,
) -> int:
    """Detect on (index, pts, image) frames; write the annotated H.264 video and a JSONL line per frame."""
    target = (out_dir / media.relative).with_suffix(".mp4")
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    progress = tqdm(total=total, desc=media.path.name, unit="frame", disable=None, leave=False)
    with VideoWriter(target, fps) as writer, target.with_suffix(".jsonl").open("w") as sidecar:
        for batch in _batches(frames, batch_size):
            result = detector.detect([image for _, _, image in batch])
            per_frame_ms = result.inference_ms / len(batch)
            for (index, pts, image), detections in zip(batch, result.detections):
                writer.write(annotate(image, detections, detector.names))
                _write_line(
                    sidecar, {"frame": index, "pts_s": pts, **frame_record(detections, detector.names, per_frame_ms)}
                )
            summary.add(result, detector.names)
            progress.update(len(batch))
            written += len(batch)
    progress.close()
    return written


def _write_line(stream: TextIO, record: dict[str, Any]) -> None:
    stream.write(json.dumps(record) + "\n")


def run_detect(
    detector: Detector, files: list[MediaFile], out_dir: Path, batch_size: int = 1, live_frames: int = 300
) -> Summary:
    """Process every file (and live source, for ``live_frames``); failures are logged and listed in the
    summary, never fatal."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    for media in tqdm(files, desc="files", unit="file", disable=None if len(files) > 1 else True):
        try:
            if media.kind == "image":
                detect_image(detector, media, out_dir, summary)
            elif media.kind == "live":
                detect_live(detector, media, out_dir, summary, batch_size, live_frames)
            else:
                detect_video(detector, media, out_dir, summary, batch_size)
            summary.files += 1
        except (ValueError, OSError) as error:
            message = str(error) if str(media.path) in str(error) else f"{media.path}: {error}"
            log.error("%s", message)
            summary.failed.append(message)
    (out_dir / "summary.json").write_text(json.dumps(summary.as_dict(), indent=1))
    return summary
