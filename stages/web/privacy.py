"""What recorded evidence the HTTP server may hand out under ``[privacy]``: the recorded video of a stream
whose recording is not blurred stays on the server, and unblurred evidence (``?faces=1``) goes to
reviewers only, where ``privacy.reviewers_see_faces`` allows it (which requires the HTTP password, so
every such request was authenticated)."""

from __future__ import annotations

import json

from pipeline.web import Reply
from stages.config import Settings


class FacesGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.blur = list(settings.privacy.blur)
        self.reviewers = bool(self.blur) and settings.privacy.reviewers_see_faces

    def serves(self, stream_id: str) -> bool:
        """Whether the stream's recording (its clips, its windows) may leave the server as it is."""
        stream = next((s for s in self.settings.streams if s.id == stream_id), None)
        if stream is None:  # a camera no longer configured: its recording was blurred only if drawn and asked
            privacy = self.settings.privacy
            return not privacy.blur or (privacy.blur_recordings and self.settings.recording.video == "annotated")
        return self.settings.serves_recording(stream)

    def refusal(self, stream_id: str, faces: bool) -> Reply | None:
        """None when this recorded video may be served (``faces``: unblurred, asked for by a reviewer);
        else the 403 that says why."""
        if faces:
            if self.reviewers:
                return None
            why = "unblurred evidence is shown only where privacy.reviewers_see_faces = true"
        elif self.serves(stream_id):
            return None
        else:
            why = f"privacy.blur: the recording of {stream_id} is not blurred (privacy.blur_recordings): it stays here"
            why += "; a reviewer may ask for it with ?faces=1" if self.reviewers else ""
        return 403, "application/json", json.dumps({"error": why}).encode()

    def shown(self) -> dict[str, object]:
        """What the review page is told: what is blurred, and whether its user may see faces."""
        return {"blur": self.blur, "faces": self.reviewers}
