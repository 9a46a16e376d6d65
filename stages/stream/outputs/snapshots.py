"""The ``snapshots`` sink: an annotated JPEG per violation start and end, the person highlighted,
beside the recordings; none for the end of a person lost from view (the frame no longer shows them).
With ``privacy.blur`` the snapshot is blurred (it leaves the server: HTTP, MQTT), and an unblurred copy
is kept beside it only for reviewers (``privacy.reviewers_see_faces``)."""

from __future__ import annotations

import contextlib

import cv2
import numpy as np

from stages.config import Settings, StreamSettings
from stages.media.annotate import highlight
from stages.recording.paths import snapshot_path, stream_folder, with_faces
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
        self.blur = tuple(settings.privacy.blur)
        self.faces = bool(self.blur) and settings.privacy.reviewers_see_faces
        self.drawn: dict[tuple[int, tuple[str, ...]], np.ndarray] = {}  # (seq, blurred) -> drawn, of one frame

    def evidence(self, frame: np.ndarray | None, analysis: FrameAnalysis, violation: Violation) -> Evidence:
        found: Evidence = {"snapshot_url": self.settings.link(event_file(violation.event_id, "snapshot.jpg"))}
        if frame is None or violation.phase == "update" or violation.reason == "lost":
            return found
        path = snapshot_path(self.root, violation.event_id, violation.phase, analysis.clock)
        with contextlib.suppress(OSError):  # a full disk: the event goes out without its picture
            path.parent.mkdir(parents=True, exist_ok=True)
            person = next((p for p in analysis.people if p.track_id == violation.track_id), None)
            marked = (lambda picture: highlight(picture, person.box)) if person else (lambda picture: picture)
            if cv2.imwrite(str(path), marked(self._drawn(frame, analysis, self.blur))):
                found["snapshot"] = str(path.resolve())
                if self.faces:  # for reviewers only; the HTTP server serves it to them alone
                    cv2.imwrite(str(with_faces(path)), marked(self._drawn(frame, analysis, ())))
        return found

    def _drawn(self, frame: np.ndarray, analysis: FrameAnalysis, blur: tuple[str, ...]) -> np.ndarray:
        """The frame drawn once for every event it starts or ends: a crowd on a busy server must not
        cost the recording a drawing per person (the recorder, in the same loop, is waited for)."""
        if not any(seq == analysis.seq for seq, _ in self.drawn):
            self.drawn.clear()
        key = (analysis.seq, blur)
        if key not in self.drawn:
            self.drawn[key] = draw(frame, analysis, self.stream, blur)
        return self.drawn[key]
