"""Event clips: an H.264 MP4 (faststart, plays in a browser) cut from a stream's segments.

No re-encoding: packets are copied from the MPEG-TS segments into the MP4. A clip therefore
starts on the keyframe at or before the moment asked for (the recorder puts one every two
seconds; a copied camera, where the camera does) and may span several segments, as long as
they share a picture size.

Where each packet belongs in time comes from the segment's sidecar: every line carries the
frame's ``clock`` (the stream's event clock: capture time live, a file's own timeline anchored
at its start), so clips line up with events' ``started`` and ``ended`` across restarts.

Layout: ``<recordings>/<stream>/<YYYY-MM-DD of the start>/clips/<event_id>.mp4``; a clip is
written to a ``.partial`` file and renamed, so a reader never sees half of one. A clip with frames
that have nothing drawn on them (copied segments, the camera's own video; frames recorded undrawn
while annotation was shed) gets ``<event_id>.jsonl`` beside it: the people on each such frame, ``t``
seconds into the clip, for the review page to draw.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from stages.media.video import FrameTimes
from stages.recording.paths import SEGMENTS_OF_A_STREAM, partial, segment_start, sidecar
from stages.recording.retention import mtime
from stages.recording.timeline import first_clock

log = logging.getLogger(__name__)

CLIP_TIME_BASE = Fraction(1, 90000)  # FrameTimes' ticks


@dataclass(frozen=True)
class Clip:
    path: Path
    start: float  # clock of its first frame
    duration_s: float  # to its last frame, as placed in the clip (on a grid: not quite its clock)
    frames: int
    last: float  # clock of its last frame, as recorded: where what follows it begins


def _undrawn(segment: Path) -> list[dict]:
    """The lines of a segment's frames that have no boxes drawn on them: every detected frame of a
    copied segment (the camera's own video), the frames an annotated one recorded undrawn (shed)."""
    try:
        lines = [json.loads(line) for line in sidecar(segment).read_text().splitlines()]
    except (OSError, ValueError):
        return []
    copied = bool(lines and lines[0].get("copied"))
    return [line for line in lines if "seq" in line and "pts_s" in line and (copied or line.get("annotated") is False)]


def _write_overlay(clip: Clip, segments: list[tuple[float, Path]], end: float) -> None:
    """The people of the clip's frames that have none drawn on them, timed from its start as its
    packets are: the segment's first clock plus the frame's place in it."""
    lines = []
    for origin, segment in segments:
        for line in _undrawn(segment):
            at = origin + line["pts_s"]
            if clip.start <= at <= end:
                size = {"width": line["width"], "height": line["height"]} if "width" in line else {}
                lines.append({"t": round(at - clip.start, 3), **size, "people": line.get("people", [])})
    if not lines:
        return
    overlay = sidecar(clip.path)
    unfinished = partial(overlay)
    try:
        unfinished.write_text("".join(json.dumps(line) + "\n" for line in sorted(lines, key=lambda line: line["t"])))
        os.replace(unfinished, overlay)
    except OSError as error:  # a full disk: the clip plays without its boxes
        unfinished.unlink(missing_ok=True)
        log.warning("%s: no boxes for the review page (%s)", overlay, error.strerror)


def _segments_between(stream_root: Path, start: float, end: float) -> list[tuple[float, Path]]:
    """The segments that may hold frames between ``start`` and ``end``, by their first frame's clock.
    Walks back from the newest segment to the one the start is in: a clip is cut soon after its
    event, so only the last few sidecars are read, however many days are kept. Newest by the last write,
    then by start: a segment just opened may share its mtime with the one just closed (the kernel
    stamps files with a clock of a few milliseconds' grain), and was then missed."""
    found = []
    segments = stream_root.glob(SEGMENTS_OF_A_STREAM)
    newest_first = sorted(segments, key=lambda s: (mtime(s), segment_start(s)), reverse=True)
    for segment in newest_first:
        origin = first_clock(segment)
        if origin is None:
            continue
        if origin <= end:
            found.append((origin, segment))
        if origin <= start:
            break
    return sorted(found)


def holds_span(stream_root: Path, start: float, end: float) -> bool:
    """Whether the stream's segments may hold frames between ``start`` and ``end``: a clip may be promised."""
    return bool(_segments_between(stream_root, start, end))


class _ClipWriter:
    """The MP4 being written: packets copied in, timed from its first frame, renamed into place at the end."""

    def __init__(self, out: Path, template: av.video.stream.VideoStream, origin: float) -> None:
        self.out, self.partial = out, partial(out)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.partial), "w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream_from_template(template)
        self.stream.time_base = CLIP_TIME_BASE
        self.size = (template.codec_context.width, template.codec_context.height)
        self.origin, self.last_pts, self.frames, self.last = origin, -1, 0, origin
        self.times = FrameTimes()  # segments' clocks need not meet: where one ends, the next may overlap

    def write(self, clock: float, packet: av.Packet) -> None:
        """The packet shown at ``clock``; a copied camera's B-frames keep their decode order (the
        recorder's own x264 makes none: zerolatency)."""
        reorder_s = 0.0 if packet.dts is None else float((packet.pts - packet.dts) * packet.time_base)
        pts, dts = self.times.place(clock - self.origin, clock - self.origin - reorder_s)
        packet.stream, packet.time_base = self.stream, CLIP_TIME_BASE
        packet.pts, packet.dts = pts, dts
        self.container.mux(packet)
        self.last_pts, self.frames, self.last = max(self.last_pts, pts), self.frames + 1, max(self.last, clock)

    def finish(self) -> Clip:
        self.container.close()  # faststart: the index moves to the front here
        os.replace(self.partial, self.out)
        return Clip(self.out, self.origin, round(float(self.last_pts * CLIP_TIME_BASE), 3), self.frames, self.last)

    def abandon(self) -> None:
        """Close what may still be open and remove the partial file: a failed cut leaves nothing."""
        with contextlib.suppress(OSError, av.error.FFmpegError):
            self.container.close()
        self.partial.unlink(missing_ok=True)


def cut_clip(stream_root: Path, start: float, end: float, out: Path) -> Clip | None:
    """Copy the frames from the keyframe at or before ``start`` up to ``end`` into ``out``; None
    when the segments hold no frame of that span. A segment that cannot be read is skipped."""
    writer: _ClipWriter | None = None
    lead: list[tuple[float, av.Packet]] = []  # from the latest keyframe on, while the start is ahead
    lead_size: tuple[int, int] | None = None
    read: list[tuple[float, Path]] = []
    try:
        for origin, segment in _segments_between(stream_root, start, end):
            read.append((origin, segment))
            try:
                source = av.open(str(segment))
            except (OSError, av.error.FFmpegError) as error:
                log.warning("%s: not read for a clip (%s)", segment, error)
                continue
            with source:
                video = source.streams.video[0]
                size = (video.codec_context.width, video.codec_context.height)
                if writer is not None and size != writer.size:
                    break  # the camera changed its picture size: the clip ends there
                if size != lead_size:
                    lead, lead_size = [], size  # what was held is of another picture size
                first_pts = None
                for packet in source.demux(video):
                    if packet.pts is None or packet.size == 0:
                        continue
                    first_pts = packet.pts if first_pts is None else first_pts
                    clock = origin + float((packet.pts - first_pts) * packet.time_base)
                    if clock > end:
                        break
                    if writer is None:
                        if packet.is_keyframe:
                            lead = []
                        if packet.is_keyframe or lead:
                            lead.append((clock, packet))
                        if clock < start or not lead:
                            continue
                        writer = _ClipWriter(out, video, lead[0][0])
                        for at, held in lead:
                            writer.write(at, held)
                        continue
                    writer.write(clock, packet)
        if writer is None:
            return None
        clip = writer.finish()  # a full disk may only show here: the muxer reports a failed write at the end
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise
    _write_overlay(clip, read, end)
    return clip


def main() -> None:
    """``python -m stages.recording.clips STREAM_ROOT START END OUT``: ``cut_clip`` in a process of its
    own, for the HTTP server (in the supervisor, which stays free of FFmpeg's libraries): prints the
    clip's first clock, duration and last clock as JSON, or null when nothing was recorded then."""
    root, start, end, out = sys.argv[1:5]
    clip = cut_clip(Path(root), float(start), float(end), Path(out))
    print(json.dumps(clip and {"start": clip.start, "duration_s": clip.duration_s, "last": clip.last}))


if __name__ == "__main__":
    main()
