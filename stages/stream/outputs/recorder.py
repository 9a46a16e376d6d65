"""The ``recorder`` sink: every captured frame of a stream into segments with their detections' sidecar.

It is the one ``every_frame`` sink: it gets every captured frame, drawn with its own results or,
for a frame inference skipped, the latest earlier ones (undrawn while the stage sheds annotation to
keep up, in segments encoded with x264's fastest preset: ``stages.stream.shedding``); or, for a
camera whose own packets are recorded (``recording.video = "camera"``), each packet, with a line
per detected frame beside them.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.messages import EncodedPacket
from stages.config import Settings, StreamSettings
from stages.recording.paths import stream_folder
from stages.recording.retention import apply_retention, make_room, remove_partials
from stages.recording.segments import DiskFullError, SegmentRecorder
from stages.stats import PluginStats, counter, gauge
from stages.stream.analysis import FrameAnalysis, Violation
from stages.stream.messages import Evidence
from stages.stream.outputs.base import Sink
from stages.stream.outputs.overlay import draw, hide

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 60.0  # by age, whether frames come or not; the budget also as each segment closes
FREE_SPACE_EVERY_S = 1.0
SHED_PRESET = "ultrafast"  # x264's cheapest, while annotation is shed


@dataclass
class RecorderStats(PluginStats):
    """Unprefixed (``frames``, ``bytes``, ``disk_low``...), as before plug-ins had prefixes."""

    frames: int = counter("vestwatch_recorded_frames_total", "Frames recorded")  # annotated frames, or copied packets
    undrawn: int = counter("vestwatch_recorded_undrawn_frames_total", "Frames recorded without their boxes drawn")
    # copied packets left out: no segment to add them to until a keyframe
    awaiting_keyframe: int = counter(
        "vestwatch_record_awaiting_keyframe_total", "Copied packets not recorded for want of a keyframe to start with"
    )
    disk_dropped: int = counter("vestwatch_record_disk_dropped_total", "Frames not recorded for want of disk space")
    write_errors: int = counter("vestwatch_record_write_errors_total", "Frames not recorded for another I/O error")
    disk_free_bytes: int | None = gauge("vestwatch_disk_free_bytes", "Free bytes on the recordings' filesystem", None)
    # below the floor even after deleting what may be deleted
    disk_low: bool = gauge(
        "vestwatch_record_disk_low",
        "1 while the recordings' disk is below its floor, nothing left to delete",
        False,
    )
    bytes: int = counter("vestwatch_recording_bytes_total", "Bytes of video recorded")
    segments: int = counter("vestwatch_recording_segments_total", "Recording segments closed")

    def problem(self) -> str | None:
        if not self.disk_low:
            return None
        return f"recordings disk full ({(self.disk_free_bytes or 0) / 2**20:.0f} MB free, nothing left to delete)"


class RecorderSink(Sink):
    """Segments with their detections' sidecar: annotated frames (``handle``), or the camera's own
    packets (``handle_packet``) with a line per detected frame (``note``); tells events where the
    recording holds them (``evidence``); keeps the disk above its floor and the stream within retention
    (its budget as each segment closes), and clears the partial clips a stop left behind."""

    every_frame = True
    stats_type = RecorderStats
    stats: RecorderStats

    @classmethod
    def create(cls, settings: Settings, stream: StreamSettings) -> RecorderSink | None:
        """Entry point ``recorder``: none for a stream with ``record = false``."""
        return cls(settings, stream) if stream.record else None

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        super().__init__()
        self.settings, self.stream = settings, stream
        recording = settings.recording
        self.recorder = SegmentRecorder(
            settings.recordings_dir, stream.id, recording.segment_s, recording.crf, stream.fps or 25.0, recording.preset
        )
        self.root = stream_folder(settings.recordings_dir, stream.id)
        self.blur = settings.privacy.blur if settings.blurs_recording(stream) else []
        if settings.privacy.blur_recordings and settings.privacy.blur and not self.blur:
            log.warning(
                '%s: privacy.blur_recordings: the camera\'s own video is recorded (recording.video = "camera"), '
                "which cannot be blurred; its clips and recordings are not served over HTTP",
                stream.id,
            )
        for path in remove_partials(self.root):  # before this stage's clips sink cuts any
            log.info("%s: deleted %s, a clip a stop left unfinished", stream.id, path)
        self.last_retention = 0.0
        self.retained_at_close = 0  # recorder.segments_closed when retention last ran
        self.last_space_check = 0.0
        self.last_recorded: float | None = None  # monotonic

    def timeline(self, analysis: FrameAnalysis) -> float:
        """Copied segments and offline files keep the source's clock; annotated live frames the wall clock."""
        own = analysis.pts is not None and (self.recorder.copying or not self.stream.is_realtime)
        return analysis.pts if own else analysis.captured

    def evidence(self, frame: np.ndarray | None, analysis: FrameAnalysis, violation: Violation) -> Evidence:
        """The segment that holds the phase's frame, and where in it (none for the stage's idle tick)."""
        if not analysis.seq or (self.recorder.copying and analysis.pts is None):
            return {}  # a copied segment is placed by the source's timestamps only
        found = self.recorder.position(self.timeline(analysis))
        return {"segment": str(found[0].resolve()), "offset_s": found[1]} if found else {}

    def recorded_at(self) -> float | None:
        return self.last_recorded

    @staticmethod
    def _line(analysis: FrameAnalysis) -> dict:
        """A frame's sidecar line (less its place in the segment)."""
        return {
            "seq": analysis.seq,
            "captured": analysis.captured,
            "width": analysis.width,  # the frame the boxes are in (capture scales a frame over max_frame_pixels)
            "height": analysis.height,
            "clock": analysis.clock,  # the events' clock, by which clips are cut
            "detections_of": analysis.inferred_seq,  # this frame's seq when it was inferred
            "annotated": analysis.annotated,  # False: the boxes are not drawn on this frame
            "counts": analysis.detections.counts(analysis.names),
            "detections": analysis.detections.records(analysis.names),
            "people": [
                {"track_id": p.track_id, "box": p.box, "vest": p.vest, "hardhat": p.hardhat, "zones": p.zones}
                for p in analysis.people
            ],
        }

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        if frame is None:
            return
        # a new preset starts a new segment
        self.recorder.preset = self.settings.recording.preset if analysis.annotated else SHED_PRESET
        shown = (
            draw(frame, analysis, self.stream, self.blur) if analysis.annotated else hide(frame, analysis, self.blur)
        )
        line = self._line(analysis)
        self.stats.undrawn += not analysis.annotated
        self._written(lambda: self.recorder.write(shown, self.timeline(analysis), analysis.captured, line))

    def handle_packet(self, packet: EncodedPacket, clock: float) -> None:
        """One of the camera's packets, copied; ``clock`` the stream's event clock for it."""
        self._written(lambda: self.recorder.write_packet(packet, clock))
        self.stats.awaiting_keyframe = self.recorder.awaiting_keyframe

    def note(self, analysis: FrameAnalysis) -> None:
        """A detected frame's line, beside the copied packets it was decoded from."""
        if self.recorder.copying and analysis.pts is not None:
            self._written(lambda: self.recorder.note(analysis.pts, self._line(analysis)), frame=False)

    def _written(self, write: Callable[[], bool | None], frame: bool = True) -> None:
        """Run a write (False: nothing written), a full disk answered by making room, any other failure
        logged; ``frame``: a written one counts as a recorded frame."""
        try:
            done = write()
        except DiskFullError as error:
            self.stats.disk_dropped += 1
            if not self.stats.disk_low:
                log.warning("%s; making room", error)
            self._keep_free_space(at_least_one=True)
            return
        except OSError as error:  # not space: deleting recordings would not help
            self.stats.write_errors += 1
            log.warning("%s", error)
            return
        if frame and done is not False:
            self.last_recorded = time.monotonic()
            self.stats.frames += 1
        self.stats.bytes, self.stats.segments = self.recorder.bytes_written, self.recorder.segments_closed
        if self.recorder.segments_closed != self.retained_at_close:  # a minute is long at some bitrates
            self._retain()

    def tick(self) -> None:
        """Free space every second, retention every minute, whether frames come or not."""
        if time.monotonic() - self.last_space_check >= FREE_SPACE_EVERY_S:
            self._keep_free_space()
        if time.monotonic() - self.last_retention >= RETENTION_EVERY_S:
            self._retain()

    @property
    def writing(self) -> Path | None:
        """The segment being written: no retention deletes it, whatever its mtime or name says."""
        return self.recorder.segment.path if self.recorder.segment else None

    def _retain(self) -> None:
        """The stream's recordings, clips and snapshots within ``max_age_days`` and ``max_bytes``."""
        self.last_retention, self.retained_at_close = time.monotonic(), self.recorder.segments_closed
        recording = self.settings.recording
        max_age_s = recording.max_age_days * 86400
        for path in apply_retention(self.root, max_age_s, recording.max_bytes, writing=self.writing):
            log.info("%s: retention deleted %s", self.stream.id, path)

    def _keep_free_space(self, at_least_one: bool = False) -> None:
        """Hold the recordings' disk above ``recording.min_free_mb`` by deleting the oldest segments, event
        clips and snapshots of any stream; after a failed write, room for at least one more segment's worth
        is made."""
        self.last_space_check = time.monotonic()
        recordings = self.settings.recordings_dir
        floor = self.settings.recording.min_free_mb * 2**20
        try:
            if at_least_one:
                floor = max(floor, shutil.disk_usage(recordings).free + 1)
            free, deleted = make_room(recordings, floor, self.writing)
        except OSError as error:  # the disk is gone (unmounted?): say so, keep running
            log.warning("%s: recordings disk: %s", self.stream.id, error)
            self.stats.disk_free_bytes, self.stats.disk_low = None, True
            return
        for path in deleted:
            log.info("%s: deleted %s for free space", self.stream.id, path)
        low = free < self.settings.recording.min_free_mb * 2**20 or (at_least_one and not deleted)
        if low and not self.stats.disk_low:
            log.warning("%s: recordings disk has %.0f MB free and nothing left to delete", self.stream.id, free / 2**20)
        self.stats.disk_free_bytes, self.stats.disk_low = free, low

    def close(self) -> None:
        self.recorder.close()
