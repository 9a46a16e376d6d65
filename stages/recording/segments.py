"""H.264 recordings in short MPEG-TS segments that stay playable if the process dies.

Layout: ``<recordings>/<stream>/<YYYY-MM-DD>/<stream>-<YYYYmmdd-HHMMSS>.ts`` with a
``.jsonl`` sidecar beside it. Two kinds of segment: annotated (each frame drawn on and encoded
here, a line of detections per frame) and copied (the camera's own packets as they came, cut at
its keyframes; a first line with the segment's clock, then a line per detected frame, placed by
its ``pts_s`` in the segment, for the review page to draw).

Why MPEG-TS and one write per frame: the muxer's output for a frame is gathered in
memory and handed to the kernel in a single ``os.write`` once the frame is complete,
and x264 runs with ``zerolatency`` so that each frame is emitted when it is encoded.
A file cut by a crash therefore ends on a frame boundary, and TS needs no index at
the end: every segment on disk decodes to its last frame.

A full disk never leaves half a frame or half a line: a write that fails is cut back to the
last frame boundary in both files, the segment is closed there (its encoder cannot go on without
the lost frame) and ``DiskFullError`` tells the caller, who makes room and goes on in a new segment.

Every frame's timestamps are ``FrameTimes``' (and its H.264 declares their rate, ``DeclaredRate``):
strictly increasing as FFmpeg reads them back, whatever times capture gave (equal, jittering, in
bursts, stepping back), so that a segment transcodes cleanly (``ffmpeg -i SEGMENT -f null -``).

What is kept, and for how long, is ``retention``'s; where files go, ``paths``'s.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipeline.messages import EncodedPacket
from stages.media.video import DeclaredRate, FrameTimes, yuv420p_frame
from stages.recording.paths import segment_path, stream_folder
from stages.recording.paths import sidecar as sidecar_of

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
ENCODER = "libx264"
ENCODE_THREADS = 2
MAX_GAP_S = 5.0  # a longer silence (a camera outage) ends the segment instead of freezing across it
JITTER_S = 0.5  # a copied camera's timestamps stepping back less than this are its jitter, not a restart
LATE_S = 1.0  # a frame to be placed this much after its own time (its clock stepped back) starts a new segment
AHEAD_S = 1.0  # a detected frame is placed in a copied segment at most this far past its last packet


class DiskFullError(OSError):
    """A frame could not be written whole for want of space; nothing of it is on disk."""


def _failed(error: OSError, what: str) -> OSError:
    """The error to raise for a failed write: DiskFullError when space ran out, else an OSError
    (a permission or I/O error must not make anyone delete recordings)."""
    kind = DiskFullError if error.errno in (errno.ENOSPC, errno.EDQUOT) else OSError
    return kind(error.errno, f"{what} ({error.strerror})")


class _FrameSink:
    """A file that grows only by whole records: bytes gather in memory (PyAV writes the muxed frame
    here; the recorder, a sidecar line) and reach the disk at ``commit()``; ``rollback()`` cuts the
    file back to the last committed record."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.pending = bytearray()
        self.size = 0  # bytes on disk, all of them whole records
        self.tried = 0  # bytes of the record being committed that reached the disk

    def write(self, data: bytes) -> int:
        self.pending += data
        return len(data)

    def commit(self) -> None:
        while self.tried < len(self.pending):  # a short write is not the end of the record
            rest = self.pending if self.tried == 0 else self.pending[self.tried :]  # no view may outlive an error
            self.tried += os.write(self.fd, rest)
        self.size += self.tried
        self.tried = 0
        self.pending.clear()

    def rollback(self, size: int | None = None) -> None:
        """Forget the uncommitted record and cut the file to ``size`` (default: what is committed)."""
        self.size = self.size if size is None else size
        os.ftruncate(self.fd, self.size)
        self.pending.clear()
        self.tried = 0

    def close(self) -> None:
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
    sidecar: _FrameSink
    declare: DeclaredRate  # what goes into the stream: its H.264 declaring the rate its times have (FrameTimes)
    last_pts: int = -1
    codec: str = ENCODER  # encoded here; else the source's codec (h264, hevc: the wire allows no other), copied
    preset: str = ""  # x264's, encoded here
    times: FrameTimes = field(default_factory=FrameTimes)  # where each frame goes, in 90 kHz ticks

    @property
    def copied(self) -> bool:
        return self.codec != ENCODER


class SegmentRecorder:
    def __init__(
        self, root: Path, stream_id: str, segment_s: float, crf: int, fps_hint: float = 25.0, preset: str = "veryfast"
    ) -> None:
        self.root = stream_folder(root, stream_id)
        self.stream_id = stream_id
        self.segment_s = segment_s
        self.crf = crf
        self.preset = preset
        self.fps_hint = fps_hint
        self.segment: Segment | None = None
        self.previous: Segment | None = None  # a copied segment just ended: its sidecar still takes lines
        self.bytes_written = 0
        self.segments_closed = 0
        self.awaiting_keyframe = 0  # copied packets dropped because no segment could start with them

    def write(self, image: np.ndarray, timeline_s: float, captured: float, record: dict[str, Any]) -> None:
        """Encode one annotated frame (BGR) and its detections line.

        ``timeline_s`` places the frame in time: capture time for live streams, the
        source's own timestamps for files; a jump back (a looped file) or a gap of more than
        ``MAX_GAP_S`` (a reconnect) starts a new segment, as does a new ``preset`` (annotation shed).
        """
        height, width = image.shape[0] - image.shape[0] % 2, image.shape[1] - image.shape[1] % 2
        segment = self.segment
        if segment and (
            segment.copied
            or not 0 <= timeline_s - segment.started < self.segment_s
            or timeline_s - segment.started - segment.last_pts * float(TIME_BASE) > MAX_GAP_S
            or segment.times.lateness_s(timeline_s - segment.started) > LATE_S
            or (width, height) != (segment.width, segment.height)
            or segment.preset != self.preset
        ):
            self._end()
            segment = None
        if segment is None:
            segment = self.segment = self._open(timeline_s, captured, width, height)
        pts, _ = segment.times.place(timeline_s - segment.started)
        frame = yuv420p_frame(image[:height, :width])
        frame.pts, frame.time_base = pts, TIME_BASE
        line = {"pts_s": round(pts * float(TIME_BASE), 4), **record}
        self._mux(segment, lambda: segment.declare.packets(segment.stream.encode(frame)), line, "frame")
        segment.last_pts = pts

    def _mux(self, segment: Segment, packets: Callable[[], Any], line: dict | None, what: str) -> None:
        """Mux what ``packets()`` gives and add ``line`` to the sidecar: on disk whole, or not at all.
        A failed write closes the segment where it stands; what the muxer refuses is left out."""
        video_before = segment.sink.size
        try:
            segment.container.mux(packets())
            segment.sink.commit()
            if line is not None:
                segment.sidecar.write((json.dumps(line) + "\n").encode())
            segment.sidecar.commit()
        except OSError as error:
            segment.sink.rollback(video_before)
            segment.sidecar.rollback()
            self._abandon()
            raise _failed(error, f"{self.stream_id}: {what} not recorded") from None
        except av.error.FFmpegError as error:  # not video the muxer can take: this goes, the segment stays
            segment.sink.rollback(video_before)
            segment.sidecar.rollback()
            if segment.last_pts < 0:
                self._abandon()  # nothing in it, not even its first line
            raise ValueError(f"{self.stream_id}: a {what} the muxer refused ({error})") from None
        self.bytes_written += segment.sink.size - video_before

    def write_packet(self, packet: EncodedPacket, clock: float) -> bool:
        """Copy one of the source's packets into the open segment; False when it was dropped (no
        segment, and it is not a keyframe one could start with).

        The timeline of copied segments is the source's own (decode) time: a keyframe after
        ``segment_s`` starts the next segment, a jump back or a gap of more than ``MAX_GAP_S`` (a
        reconnect, a looped file) ends this one, and a new codec or picture size starts another."""
        base = Fraction(*packet.time_base)
        stamp = packet.dts if packet.dts is not None else packet.pts
        if stamp is None:
            self.awaiting_keyframe += 1
            return False
        decode_s = float(stamp * base)
        shown_s = decode_s if packet.pts is None else float(packet.pts * base)
        segment = self.segment
        if segment is not None:
            since_start = decode_s - segment.started
            last_s = since_start if segment.times.own_s is None else segment.times.own_s
            new_picture = packet.keyframe and (packet.codec, packet.width, packet.height) != (
                segment.codec,
                segment.width,
                segment.height,
            )
            if (
                not segment.copied
                or new_picture
                or (packet.keyframe and since_start >= self.segment_s)
                or since_start < last_s - JITTER_S
                or since_start - last_s > MAX_GAP_S
            ):
                self._end()
                segment = None
        if segment is None:
            if not (packet.keyframe and packet.codec):
                self.awaiting_keyframe += 1
                return False
            # its time 0 is the keyframe's presentation time, as a player and the clips count
            segment = self.segment = self._open(shown_s, packet.captured, packet.width, packet.height, packet.codec)
            # where the clips find its time, and that its frames are the camera's, not drawn on
            first = {"pts_s": 0.0, "captured": packet.captured, "clock": clock, "copied": True}
            segment.sidecar.write((json.dumps(first) + "\n").encode())
        pts, dts = segment.times.place(shown_s - segment.started, decode_s - segment.started)
        copy = av.Packet(packet.data)
        copy.pts, copy.dts, copy.time_base, copy.is_keyframe = pts, dts, TIME_BASE, packet.keyframe
        copy.stream = segment.stream
        # the first line, written at its start, goes with it
        self._mux(segment, lambda: segment.declare.packets([copy]), None, "packet")
        segment.last_pts = max(pts, segment.last_pts)
        return True

    def note(self, timeline_s: float, record: dict[str, Any]) -> None:
        """The detections of a frame already copied, in the sidecar of the segment that holds it
        (the one just ended, for a frame from before its last keyframe); older ones are left out."""
        segment = self._copied_holding(timeline_s)
        if segment is not None:
            line = {"pts_s": round(timeline_s - segment.started, 4), **record}
            try:
                segment.sidecar.write((json.dumps(line) + "\n").encode())
                segment.sidecar.commit()
            except OSError as error:
                segment.sidecar.rollback()
                raise _failed(error, f"{self.stream_id}: detections not recorded") from None

    def _copied_holding(self, timeline_s: float) -> Segment | None:
        """The copied segment (the open one, or the one just ended) whose span holds ``timeline_s``: a
        result that comes after a jump back (a looped file, a reconnect) belongs to neither."""
        for segment in (self.segment, self.previous):
            if segment is None or not segment.copied or segment.last_pts < 0:
                continue
            if segment.started <= timeline_s <= segment.started + segment.last_pts * float(TIME_BASE) + AHEAD_S:
                return segment
        return None

    def _open(self, timeline_s: float, captured: float, width: int, height: int, codec: str = ENCODER) -> Segment:
        # the UTC offset in the name: the hour a daylight-saving change repeats gives two names
        path = segment_path(self.root, self.stream_id, captured)
        folder = path.parent
        while path.exists():  # a restart within the same second
            path = path.with_stem(path.stem + "b")
        sink = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            sink = _FrameSink(path)
            sidecar = _FrameSink(sidecar_of(path))
        except OSError as error:
            if sink is not None:
                sink.close()
            path.unlink(missing_ok=True)
            raise _failed(error, f"{self.stream_id}: cannot start a segment") from None
        container = av.open(sink, mode="w", format="mpegts", options={"flush_packets": "1"})
        if codec != ENCODER:
            stream = container.add_mux_stream(codec, width=width, height=height)
            stream.time_base = TIME_BASE
            log.info("%s: recording %s (the camera's %s, copied)", self.stream_id, path, codec)
            declare = DeclaredRate(stream, codec, str(path))
            return Segment(path, timeline_s, width, height, sink, container, stream, sidecar, declare, codec=codec)
        # x264's rate control takes a frame to last 1/rate: the declared rate is rewritten (DeclaredRate)
        stream = container.add_stream(ENCODER, rate=Fraction(self.fps_hint).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = TIME_BASE  # no rounding of close timestamps
        gop = str(max(1, round(self.fps_hint * 2)))
        stream.options = {"preset": self.preset, "tune": "zerolatency", "crf": str(self.crf), "g": gop}
        # two threads encode 1080p30 in real time; x264's default (1.5 per core) would give each of a
        # 16-core server's 64 cameras 24 threads and their buffers
        stream.codec_context.thread_count = ENCODE_THREADS
        log.info("%s: recording %s", self.stream_id, path)
        declare = DeclaredRate(stream, "h264", str(path))
        return Segment(path, timeline_s, width, height, sink, container, stream, sidecar, declare, preset=self.preset)

    @property
    def copying(self) -> bool:
        """The newest segment holds the source's packets: its timeline is the source's."""
        newest = self.segment or self.previous
        return newest is not None and newest.copied

    def position(self, timeline_s: float | None = None) -> tuple[Path, float] | None:
        """Where the moment ``timeline_s`` is (or will be, for a frame still to be written) in the open
        segment (or, copying, the one just ended), else the offset (s) of the last frame written."""
        if timeline_s is not None and self.copying:
            holding = self._copied_holding(timeline_s)
            return (holding.path, round(timeline_s - holding.started, 3)) if holding else None
        segment = self.segment
        if segment is None or segment.last_pts < 0:
            return None
        if timeline_s is not None and timeline_s >= segment.started:
            return segment.path, round(timeline_s - segment.started, 3)
        return segment.path, round(segment.last_pts * float(TIME_BASE), 3)

    def close(self) -> None:
        """Finish recording: the open segment, and the sidecar of a copied one just ended."""
        self._end()
        if self.previous is not None:
            self.previous.sidecar.close()
            self.previous = None

    def _end(self) -> None:
        """Finish the open segment, if any: flush the encoder, close the files. On a full disk the
        encoder's last frames are lost, never the frames already on disk."""
        segment = self.segment
        if segment is None:
            return
        if not segment.copied:
            try:
                segment.container.mux(segment.declare.packets(segment.stream.encode(None)))
                segment.sink.commit()
            except OSError as error:
                segment.sink.rollback()
                what = f"{self.stream_id}: the last frames of {segment.path} were not written"
                log.warning("%s (%s)", what, error.strerror)
        self._abandon()

    def _abandon(self) -> None:
        """Close the open segment where it stands on disk; one without a frame is removed. A copied
        one's sidecar stays open for the detections still to come of its last frames."""
        segment, self.segment = self.segment, None
        if segment is None:
            return
        if self.previous is not None:
            self.previous.sidecar.close()
            self.previous = None
        with contextlib.suppress(OSError, av.error.FFmpegError):
            segment.container.close()  # writes into the sink's memory only; nothing is committed
        segment.sink.close()
        if segment.copied and segment.last_pts >= 0:
            self.previous = segment
        else:
            segment.sidecar.close()
        if segment.last_pts < 0:
            segment.path.unlink(missing_ok=True)
            sidecar_of(segment.path).unlink(missing_ok=True)
        else:
            self.segments_closed += 1
