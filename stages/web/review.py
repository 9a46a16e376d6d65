"""The review API behind the page at ``/``: every stream's events from the event store, each
one's snapshot and clip, and acknowledgements.

- ``GET /api/events?stream=&day=YYYY-MM-DD&since=&until=&limit=``: newest first; ``day`` is the
  server's date, ``since``/``until`` unix seconds (the page sends its viewer's local day so)
- ``GET /api/events/<id>``, ``/api/events/<id>/snapshot.jpg``, ``/api/events/<id>/clip.mp4``,
  ``/api/events/<id>/people.jsonl`` (a clip of the camera's own video: the people to draw over it,
  a line per detected frame, ``t`` seconds into the clip)
- ``POST /api/events/<id>/ack`` with a JSON body (``{}``): acknowledged, kept across restarts

The JSON carries links relative to this server (``snapshot_url``, ``clip_url``), present only
when the file is there: a clip appears ``events.clip_post_s`` after its event's end, and
retention takes old ones. Files are served only from inside the recordings folder.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.web import Reply, Request, Route
from stages.config import Settings
from stages.recording.eventstore import EventStore
from stages.recording.paths import sidecar

API = "/api/events"
# name -> (the event's column holding the file, the file served beside it if not that one, content type,
# its URL's field)
FILES: dict[str, tuple[str, Callable[[Path], Path] | None, str, str]] = {
    "snapshot.jpg": ("snapshot", None, "image/jpeg", "snapshot_url"),
    "clip.mp4": ("clip", None, "video/mp4", "clip_url"),
    "people.jsonl": ("clip", sidecar, "application/x-ndjson", "people_url"),
}


def event_file(event_id: str, name: str) -> str:
    """The path of an event's ``snapshot.jpg`` or ``clip.mp4`` here (the id quoted: zone names are free text)."""
    return f"{API}/{urllib.parse.quote(event_id, safe='')}/{name}"


class ReviewApi:
    def __init__(self, settings: Settings) -> None:
        self.store = EventStore(settings.events_db)
        self.recordings = settings.recordings_dir.resolve()

    def routes(self) -> dict[str, Route]:
        return {API: self.list, f"{API}/": self.one, f"POST {API}/": self.acknowledge}

    def list(self, request: Request) -> Reply:
        query = request.query
        numbers: dict[str, float] = {}
        for key in ("limit", "since", "until"):
            if query.get(key):
                try:
                    numbers[key] = float(query[key])
                except ValueError:
                    numbers[key] = math.nan
                if not math.isfinite(numbers[key]):
                    return _json(400, {"error": f"{key} {query[key]!r} is not a number"})
        limit = min(max(int(numbers.get("limit", 200)), 1), 1000)
        since, until = numbers.get("since"), numbers.get("until")
        events = self.store.events(query.get("stream"), query.get("day"), limit, since, until)
        return _json(200, [self._shown(event) for event in events])

    def one(self, request: Request) -> Reply:
        rest = request.path.removeprefix(f"{API}/")
        event_id, _, name = rest.rpartition("/") if rest.endswith(tuple(FILES)) else (rest, "", "")
        event = self.store.event(urllib.parse.unquote(event_id))
        if event is None:
            return _json(404, {"error": "no such event"})
        if not name:
            return _json(200, self._shown(event))
        column, beside, content_type, _ = FILES[name]
        path = self._file(event[column], beside)
        if path is None:
            why = "clip not written yet (or deleted by retention)" if column == "clip" else "no snapshot"
            return _json(404, {"error": why})
        return 200, content_type, path  # streamed by the server, by ranges

    def acknowledge(self, request: Request) -> Reply:
        """JSON only: a form on another site cannot send it without the browser asking this server first."""
        event_id = urllib.parse.unquote(request.path.removeprefix(f"{API}/").removesuffix("/ack"))
        if not request.path.endswith("/ack"):
            return _json(404, {"error": "not found"})
        if request.content_type.split(";")[0].strip() != "application/json":
            return _json(415, {"error": "send Content-Type: application/json"})
        event = self.store.event(event_id) if self.store.acknowledge(event_id) else None
        if event is None:  # unknown, or gone by retention meanwhile
            return _json(404, {"error": "no such event"})
        return _json(200, self._shown(event))

    def _shown(self, event: dict[str, Any]) -> dict[str, Any]:
        for name, (column, beside, _, url) in FILES.items():
            event[url] = event_file(event["event_id"], name) if self._file(event[column], beside) else None
        return event

    def _file(self, stored: str | None, beside: Callable[[Path], Path] | None = None) -> Path | None:
        """A recorded file by its stored path (``beside``: the file it names beside that one), if it is
        still there and inside the recordings folder."""
        if not stored:
            return None
        path = Path(stored).resolve()
        path = beside(path) if beside else path
        return path if path.is_relative_to(self.recordings) and path.is_file() else None


def _json(status: int, body: object) -> Reply:
    return status, "application/json", json.dumps(body).encode()
