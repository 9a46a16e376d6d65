"""Annotated H.264 recordings in short MPEG-TS segments that stay playable if the process dies.

Layout: ``<recordings>/<stream>/<YYYY-MM-DD>/<stream>-<YYYYmmdd-HHMMSS>.ts`` with a
``.jsonl`` sidecar beside it, one line of detections per frame.

Why MPEG-TS and one write per frame: the muxer's output for a frame is gathered in
memory and handed to the kernel in a single ``os.write`` once the frame is complete,
and x264 runs with ``zerolatency`` so that each frame is emitted when it is encoded.
A file cut by a crash therefore ends on a frame boundary, and TS needs no index at
the end: every segment on disk decodes to its last frame.

Retention deletes whole segments (and their sidecars), oldest first, by age and by
the disk budget.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
MAX_GAP_S = 5.0  # a longer silence (a camera outage) ends the segment instead of freezing across it


class _FrameSink:
    """A file object for PyAV that reaches the disk only at ``commit()``, one write per frame."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.pending = bytearray()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.pending += data
        return len(data)

    def commit(self) -> None:
        if self.pending:
            os.write(self.fd, self.pending)
            self.size += len(self.pending)
            self.pending.clear()

    def close(self) -> None:
        self.commit()
        os.close(self.fd)


@dataclass
class Segment:
    path: Path
    started: float  # timeline position of its first frame, seconds
    width: int
    height: int
    sink: _FrameSink
    container: Any
    stream: Any
    sidecar: Any
    last_pts: int = -1


class SegmentRecorder:
    def __init__(self, root: Path, stream_id: str, segment_s: float, crf: int, fps_hint: float = 25.0) -> None:
        self.root = root / stream_id
        self.stream_id = stream_id
        self.segment_s = segment_s
        self.crf = crf
        self.fps_hint = fps_hint
        self.segment: Segment | None = None
        self.bytes_written = 0
        self.segments_closed = 0

    def write(self, image: np.ndarray, timeline_s: float, captured: float, record: dict[str, Any]) -> None:
        """Encode one annotated frame (BGR) and its detections line.

        ``timeline_s`` places the frame in time: capture time for live streams, the
        source's own timestamps for files; a jump back (a looped file) or a gap of more than
        ``MAX_GAP_S`` (a reconnect) starts a new segment.
        """
        height, width = image.shape[0] - image.shape[0] % 2, image.shape[1] - image.shape[1] % 2
        segment = self.segment
        if segment and (
            not 0 <= timeline_s - segment.started < self.segment_s
            or timeline_s - segment.started - segment.last_pts * float(TIME_BASE) > MAX_GAP_S
            or (width, height) != (segment.width, segment.height)
        ):
            self.close()
            segment = None
        if segment is None:
            segment = self.segment = self._open(timeline_s, captured, width, height)
        pts = max(int((timeline_s - segment.started) / TIME_BASE), segment.last_pts + 1)
        segment.last_pts = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]), format="bgr24")
        frame.pts, frame.time_base = pts, TIME_BASE
        segment.container.mux(segment.stream.encode(frame))
        before = segment.sink.size
        segment.sink.commit()
        self.bytes_written += segment.sink.size - before
        segment.sidecar.write(json.dumps({"pts_s": round(pts * float(TIME_BASE), 4), **record}) + "\n")
        segment.sidecar.flush()

    def _open(self, timeline_s: float, captured: float, width: int, height: int) -> Segment:
        stamp = datetime.fromtimestamp(captured, timezone.utc).astimezone()
        folder = self.root / stamp.strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.stream_id}-{stamp.strftime('%Y%m%d-%H%M%S')}.ts"
        while path.exists():  # a restart within the same second
            path = path.with_stem(path.stem + "b")
        sink = _FrameSink(path)
        container = av.open(sink, mode="w", format="mpegts", options={"flush_packets": "1"})
        stream = container.add_stream("libx264", rate=Fraction(self.fps_hint).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = TIME_BASE  # no rounding of close timestamps
        gop = str(max(1, round(self.fps_hint * 2)))
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "crf": str(self.crf), "g": gop}
        sidecar = path.with_suffix(".jsonl").open("a", encoding="utf-8")
        log.info("%s: recording %s", self.stream_id, path)
        return Segment(path, timeline_s, width, height, sink, container, stream, sidecar)

    def position(self) -> tuple[Path, float] | None:
        """The open segment and the offset (s) of the last frame written to it."""
        if self.segment is None or self.segment.last_pts < 0:
            return None
        return self.segment.path, round(self.segment.last_pts * float(TIME_BASE), 3)

    def close(self) -> None:
        """Finish the open segment, if any: flush the encoder, close the files."""
        segment, self.segment = self.segment, None
        if segment is None:
            return
        try:
            segment.container.mux(segment.stream.encode(None))
            segment.sink.commit()
            segment.container.close()
        finally:
            segment.sink.close()
            segment.sidecar.close()
        self.segments_closed += 1


def apply_retention(root: Path, max_age_s: float, max_bytes: int, now: float | None = None) -> list[Path]:
    """Delete whole segments (with sidecars) older than ``max_age_s``, then oldest-first over ``max_bytes``;
    and event snapshots older than ``max_age_s``."""
    now = time.time() if now is None else now
    segments = sorted(root.rglob("*.ts"), key=lambda p: p.stat().st_mtime)
    sizes = {p: p.stat().st_size + _size(p.with_suffix(".jsonl")) for p in segments}
    total = sum(sizes.values())
    deleted = []
    for path in segments[:-1] if segments else []:  # the newest may be the one being written
        too_old = now - path.stat().st_mtime > max_age_s
        if not too_old and total <= max_bytes:
            break
        total -= sizes[path]
        path.unlink(missing_ok=True)
        path.with_suffix(".jsonl").unlink(missing_ok=True)
        deleted.append(path)
    for snapshot in root.rglob("events/*.jpg"):  # event snapshots go by age too
        if now - snapshot.stat().st_mtime > max_age_s:
            snapshot.unlink(missing_ok=True)
            deleted.append(snapshot)
    for folder in sorted({p.parent for p in deleted}, key=lambda f: len(f.parts), reverse=True):
        for empty in (folder, folder.parent):
            if empty.is_dir() and empty != root and not any(empty.iterdir()):
                empty.rmdir()
    return deleted


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
