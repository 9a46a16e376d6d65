"""The ``snapshots`` sink: an annotated JPEG per violation start and end, the person highlighted,
beside the recordings; none for the end of a person lost from view (the frame no longer shows them)."""

from __future__ import annotations

import contextlib

import cv2
import numpy as np

from stages.config import Settings, StreamSettings
from stages.recording.paths import snapshot_path, stream_folder
from stages.stream.analysis import FrameAnalysis, Violation
from stages.stream.messages import Evidence
from stages.stream.outputs.base import Sink
from stages.stream.outputs.overlay import draw
from stages.web.review import event_file


class SnapshotSink(Sink):
    """Adds ``snapshot`` (the file) and ``snapshot_url`` (the start's, through the HTTP server) to events."""

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        super().__init__()
        self.root = stream_folder(settings.recordings_dir, stream.id)
        self.settings, self.stream = settings, stream

    def evidence(self, frame: np.ndarray | None, analysis: FrameAnalysis, violation: Violation) -> Evidence:
        found: Evidence = {"snapshot_url": self.settings.link(event_file(violation.event_id, "snapshot.jpg"))}
        if frame is None or violation.phase == "update" or violation.reason == "lost":
            return found
        path = snapshot_path(self.root, violation.event_id, violation.phase, analysis.clock)
        with contextlib.suppress(OSError):  # a full disk: the event goes out without its picture
            path.parent.mkdir(parents=True, exist_ok=True)
            if cv2.imwrite(str(path), draw(frame, analysis, self.stream, highlight=violation.track_id)):
                found["snapshot"] = str(path.resolve())
        return found
