"""Since when the recorded files hide what ``privacy.blur`` hides.

Turning blur on does not blur what was recorded before: those snapshots and segments keep every face
until retention takes them. So the daemon notes, as it starts, since when the present setting holds
(``<recordings>/privacy.json``), and the HTTP server vouches only for files made since then
(``stages.web.privacy``): older ones stay on the server, shown to reviewers who may see faces.

Snapshots are blurred whenever ``blur`` is set; a stream's recording only where it is drawn and
``blur_recordings`` asks for it (``Settings.blurs_recording``), so each has a time of its own: the
``blur`` list changing resets them all, a stream's recording becoming blurred starts its own (a camera
taken out of the config keeps its time: it records nothing meanwhile).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from stages.config import Settings
from stages.recording.paths import privacy_note

log = logging.getLogger(__name__)

NEVER = math.inf  # since when, where nothing was noted: no file is vouched for


def note_blurring(settings: Settings, now: float) -> None:
    """At the daemon's start: keep the times of what still holds, start the others at ``now``. A note
    that cannot be written is said; the server then vouches only for what the last one did."""
    blur = sorted(settings.privacy.blur)
    noted = _read(settings.recordings_dir)
    if noted.get("blur") != blur:
        noted = {"blur": blur, "since": now, "recordings": {}}
    was = noted.get("recordings", {})
    configured = {stream.id for stream in settings.streams}
    blurred = [stream.id for stream in settings.streams if settings.blurs_recording(stream)]
    gone = {stream: since for stream, since in was.items() if stream not in configured}  # recorded nothing since
    noted["recordings"] = gone | {stream: was.get(stream, now) for stream in blurred}
    path = privacy_note(settings.recordings_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_text(json.dumps(noted))
        os.replace(path.with_suffix(".tmp"), path)
    except OSError as error:
        log.warning("privacy: cannot note since when files are blurred (%s): older notes hold", error)


class Blurred:
    """Since when the snapshots, and each stream's recording, were made under the present ``blur``."""

    def __init__(self, settings: Settings) -> None:
        noted = _read(settings.recordings_dir)
        current = noted.get("blur") == sorted(settings.privacy.blur)
        self.snapshots_since = float(noted.get("since", NEVER)) if current else NEVER
        self.recordings_since = {s: float(t) for s, t in noted.get("recordings", {}).items()} if current else {}

    def recording(self, stream: str) -> float:
        return self.recordings_since.get(stream, NEVER)


def _read(recordings: Path) -> dict[str, Any]:
    try:
        noted = json.loads(privacy_note(recordings).read_text())
    except (OSError, ValueError):
        return {}
    return noted if isinstance(noted, dict) and isinstance(noted.get("recordings", {}), dict) else {}
