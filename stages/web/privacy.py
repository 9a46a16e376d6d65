"""What recorded evidence the HTTP server may hand out under ``[privacy]``: the recorded video of a stream
whose recording is not blurred stays on the server, and so does every file made before blurring began
(``stages.recording.blurring``); unblurred evidence (``?faces=1``) goes to reviewers only, where
``privacy.reviewers_see_faces`` allows it (which requires the HTTP password, so every such request was
authenticated): every holder of the HTTP password, or where ``privacy.reviewer_password_hash`` is set,
only who gave that one. Each unblurred file handed out is logged with who asked (once an hour per
address and file: a video is fetched in many ranges), for a data protection officer's audit."""

from __future__ import annotations

import json
import logging
import threading
import time

from pipeline.web import Reply, Request
from stages.config import Settings
from stages.recording.blurring import NEVER, Blurred
from stages.recording.paths import stream_folder
from stages.recording.timeline import Timeline

log = logging.getLogger(__name__)

REVIEWER = "reviewer"  # the role ``privacy.reviewer_password_hash`` gives (``pipeline.httpauth``)
SAID_S = 3600.0  # an unblurred file shown to an address is logged again after this


class FacesGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.blur = list(settings.privacy.blur)
        self.reviewers = bool(self.blur) and settings.privacy.reviewers_see_faces
        self.reviewer_secret = settings.privacy.reviewer_password_hash is not None
        self.streams = {stream.id: stream for stream in settings.streams}
        self.blurred = Blurred(settings)
        self.timeline = Timeline()
        self.said: dict[tuple[str, str], float] = {}  # (address, path) -> when its unblurred file was logged
        self.saying = threading.Lock()

    def sees_faces(self, request: Request) -> bool:
        """Whether the user who sent ``request`` may be shown unblurred evidence."""
        return self.reviewers and (not self.reviewer_secret or request.role == REVIEWER)

    def serves(self, stream_id: str, made_at: float) -> bool:
        """Whether the stream's recording from ``made_at`` on (its clips, its windows) may leave the server
        as it is: nothing is to be blurred, or what it holds from there on was blurred as it was recorded
        (a clip's lead may reach back before a restart: only a gap there lets it go)."""
        if not self.blur:
            return True
        stream = self.streams.get(stream_id)
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

    def refusal(self, stream_id: str, request: Request, made_at: float, snapshot: bool = False) -> Reply | None:
        """None when this recorded video (``snapshot``: this snapshot) from ``made_at`` may be served
        (``?faces=1``: unblurred, asked for by a reviewer: logged); else the 403 that says why."""
        if request.query.get("faces") == "1":
            if self.sees_faces(request):
                self._say_shown(request)
                return None
            why = "unblurred evidence is shown only where privacy.reviewers_see_faces = true"
            why += ", to who gave privacy.reviewer_password_hash's secret" if self.reviewer_secret else ""
        elif self.shows_snapshot(made_at) if snapshot else self.serves(stream_id, made_at):
            return None
        else:
            why = self.withheld(stream_id, snapshot)
            why += "; a reviewer may ask for it with ?faces=1" if self.reviewers else ""
        return 403, "application/json", json.dumps({"error": why}).encode()

    def _say_shown(self, request: Request) -> None:
        now, key = time.monotonic(), (request.client, request.path)
        with self.saying:
            if now - self.said.get(key, -SAID_S) < SAID_S:
                return
            self.said = {known: at for known, at in self.said.items() if now - at < SAID_S} | {key: now}
        log.info("privacy: unblurred %s shown to %s (%s)", request.path, request.client or "?", request.role)

    def withheld(self, stream_id: str, snapshot: bool = False) -> str:
        """Why a snapshot or a stretch of ``stream_id``'s recording stays on the server."""
        if snapshot:
            return f"privacy.blur: taken before blurring began ({_local(self.blurred.snapshots_since)}): it stays here"
        stream, since = self.streams.get(stream_id), self.blurred.recording(stream_id)
        if since == NEVER if stream is None else not self.settings.serves_recording(stream):
            return f"privacy.blur: the recording of {stream_id} is not blurred (privacy.blur_recordings): it stays here"
        return f"privacy.blur: recorded before {stream_id}'s recording was blurred ({_local(since)}): it stays here"

    def shown(self, request: Request) -> dict[str, object]:
        """What the review page is told: what is blurred, and whether its user may see faces."""
        return {"blur": self.blur, "faces": self.sees_faces(request)}


def _local(moment: float) -> str:
    if moment == NEVER:
        return "not noted: the daemon notes it as it starts"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(moment))
