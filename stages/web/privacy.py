"""What recorded evidence the HTTP server may hand out under ``[privacy]``: the recorded video of a stream
whose recording is not blurred stays on the server, and so does every file made before blurring began
(``stages.recording.blurring``); unblurred evidence (``?faces=1``) goes to reviewers only, where
``privacy.reviewers_see_faces`` allows it (which requires the HTTP password, so every such request was
authenticated)."""

from __future__ import annotations

import json
import time

from pipeline.web import Reply
from stages.config import Settings, StreamSettings
from stages.recording.blurring import NEVER, Blurred
from stages.recording.paths import stream_folder
from stages.recording.timeline import Timeline


class FacesGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.blur = list(settings.privacy.blur)
        self.reviewers = bool(self.blur) and settings.privacy.reviewers_see_faces
        self.blurred = Blurred(settings)
        self.timeline = Timeline()

    def serves(self, stream_id: str, made_at: float) -> bool:
        """Whether the stream's recording from ``made_at`` on (its clips, its windows) may leave the server
        as it is: nothing is to be blurred, or what it holds from there on was blurred as it was recorded
        (a clip's lead may reach back before a restart: only a gap there lets it go)."""
        if not self.blur:
            return True
        stream = self._stream(stream_id)
        if stream is not None and not self.settings.blurs_recording(stream):
            return False
        since = self.blurred.recording(stream_id)  # a camera taken out of the config: as it last was
        if made_at >= since:
            return True
        root = stream_folder(self.settings.recordings_dir, stream_id)
        return since != NEVER and not self.timeline.stretches(root, made_at, since)

    def shows_snapshot(self, made_at: float) -> bool:
        """Whether a snapshot taken at ``made_at`` was blurred as it was taken (or nothing is to be)."""
        return not self.blur or made_at >= self.blurred.snapshots_since

    def refusal(self, stream_id: str, faces: bool, made_at: float, snapshot: bool = False) -> Reply | None:
        """None when this recorded video (``snapshot``: this snapshot) from ``made_at`` may be served
        (``faces``: unblurred, asked for by a reviewer); else the 403 that says why."""
        if faces:
            if self.reviewers:
                return None
            why = "unblurred evidence is shown only where privacy.reviewers_see_faces = true"
        elif self.shows_snapshot(made_at) if snapshot else self.serves(stream_id, made_at):
            return None
        else:
            why = self.withheld(stream_id, snapshot)
            why += "; a reviewer may ask for it with ?faces=1" if self.reviewers else ""
        return 403, "application/json", json.dumps({"error": why}).encode()

    def withheld(self, stream_id: str, snapshot: bool = False) -> str:
        """Why a snapshot or a stretch of ``stream_id``'s recording stays on the server."""
        if snapshot:
            return f"privacy.blur: taken before blurring began ({_local(self.blurred.snapshots_since)}): it stays here"
        stream, since = self._stream(stream_id), self.blurred.recording(stream_id)
        if since == NEVER if stream is None else not self.settings.serves_recording(stream):
            return f"privacy.blur: the recording of {stream_id} is not blurred (privacy.blur_recordings): it stays here"
        return f"privacy.blur: recorded before {stream_id}'s recording was blurred ({_local(since)}): it stays here"

    def _stream(self, stream_id: str) -> StreamSettings | None:
        return next((stream for stream in self.settings.streams if stream.id == stream_id), None)

    def shown(self) -> dict[str, object]:
        """What the review page is told: what is blurred, and whether its user may see faces."""
        return {"blur": self.blur, "faces": self.reviewers}


def _local(moment: float) -> str:
    if moment == NEVER:
        return "not noted: the daemon notes it as it starts"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(moment))
