"""The review API behind the page at ``/``: every stream's events from the event store, each
one's snapshot and clip, and acknowledgements.

- ``GET /api/events?stream=&zone=&missing=&acknowledged=&verdict=&open=&day=&since=&until=&limit=&offset=``:
  ``{"total", "offset", "limit", "events"}``, the events newest first; ``day`` is the server's date
  (YYYY-MM-DD), ``since``/``until`` unix seconds (the page sends its viewer's local day so),
  ``acknowledged`` and ``open`` ``yes`` or ``no``, ``verdict`` ``confirmed``, ``false_alarm`` or ``none``
- ``GET /api/events/<id>``, ``/api/events/<id>/snapshot.jpg``, ``/api/events/<id>/clip.mp4``,
  ``/api/events/<id>/people.jsonl`` (a clip of the camera's own video: the people to draw over it,
  a line per detected frame, ``t`` seconds into the clip)
- ``POST /api/events/<id>/ack`` with a JSON body (``{}``): acknowledged, kept across restarts
- ``POST /api/events/ack`` with ``{"ids": [...]}``: those acknowledged; ``{"acknowledged": n}``
- ``POST /api/events/<id>/verdict`` with ``{"verdict": "confirmed" | "false_alarm" | null}``: the
  reviewer's word (which also acknowledges), kept for retraining

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
from stages.recording.eventstore import VERDICTS, EventFilter, EventStore
from stages.recording.paths import sidecar, with_faces
from stages.web.privacy import FacesGate

API = "/api/events"
YES_NO: dict[str, bool | None] = {"yes": True, "no": False, "": None}
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
        self.gate = FacesGate(settings)
        self.clip_pre_s = settings.events.clip_pre_s

    def routes(self) -> dict[str, Route]:
        return {
            API: self.list,
            f"{API}/": self.one,
            f"POST {API}/": self.about_one,
            f"POST {API}/ack": self.acknowledge_all,
        }

    def list(self, request: Request) -> Reply:
        query = request.query
        try:
            numbers = {key: query_number(query, key) for key in ("limit", "offset", "since", "until") if query.get(key)}
        except ValueError as error:
            return json_reply(400, {"error": str(error)})
        flags: dict[str, bool | None] = {}
        for key in ("acknowledged", "open"):
            if query.get(key, "") not in YES_NO:
                return json_reply(400, {"error": f"{key} {query[key]!r} is neither yes nor no"})
            flags[key] = YES_NO[query.get(key, "")]
        verdict = query.get("verdict") or None
        if verdict not in (None, "none", *VERDICTS):
            return json_reply(400, {"error": f"verdict {verdict!r} is none of none, {', '.join(VERDICTS)}"})
        which = EventFilter(
            stream=query.get("stream"),
            day=query.get("day"),
            since=numbers.get("since"),
            until=numbers.get("until"),
            zone=query.get("zone") or None,
            missing=query.get("missing") or None,
            acknowledged=flags["acknowledged"],
            verdict=verdict,
            open=flags["open"],
        )
        limit = min(max(int(numbers.get("limit", 200)), 1), 1000)
        offset = min(max(int(numbers.get("offset", 0)), 0), 2**62)  # past any table, not past SQLite's integers
        events = [self._shown(event, request) for event in self.store.events(which, limit, offset)]
        body = {"total": self.store.count(which), "offset": offset, "limit": limit, "events": events}
        return json_reply(200, body | {"privacy": self.gate.shown(request)})

    def one(self, request: Request) -> Reply:
        rest = request.path.removeprefix(f"{API}/")
        event_id, _, name = rest.rpartition("/") if rest.endswith(tuple(FILES)) else (rest, "", "")
        event = self.store.event(urllib.parse.unquote(event_id))
        if event is None:
            return json_reply(404, {"error": "no such event"})
        if not name:
            return json_reply(200, self._shown(event, request))
        column, beside, content_type, _ = FILES[name]
        faces = request.query.get("faces") == "1"
        if name != "people.jsonl" or faces:
            made_at = event["started"] - (self.clip_pre_s if name == "clip.mp4" else 0.0)
            refused = self.gate.refusal(event["stream"], request, made_at, snapshot=name == "snapshot.jpg")
            if refused:
                return refused
        if faces and name == "snapshot.jpg":  # its unblurred copy; one taken before blurring began is one
            path = self._file(event[column], with_faces) or self._file(event[column])
        else:
            path = self._file(event[column], beside)
        if path is None:
            why = "clip not written yet (or deleted by retention)" if column == "clip" else "no snapshot"
            return json_reply(404, {"error": why})
        return 200, content_type, path  # streamed by the server, by ranges

    def about_one(self, request: Request) -> Reply:
        """``<id>/ack`` or ``<id>/verdict``. JSON only: a form on another site cannot send it without
        the browser asking this server first."""
        rest, _, action = request.path.removeprefix(f"{API}/").rpartition("/")
        if action not in ("ack", "verdict"):
            return json_reply(404, {"error": "not found"})
        body = json_body(request)
        if isinstance(body, tuple):
            return body
        event_id = urllib.parse.unquote(rest)
        if action == "ack":
            done = self.store.acknowledge(event_id)
        else:
            verdict = body.get("verdict", "")
            if verdict not in (None, *VERDICTS):  # none given is no verdict to take back
                return json_reply(400, {"error": f"verdict {verdict!r} is none of {', '.join(VERDICTS)} or null"})
            done = self.store.judge(event_id, verdict)
        event = self.store.event(event_id) if done else None
        if event is None:  # unknown, or gone by retention meanwhile
            return json_reply(404, {"error": "no such event"})
        return json_reply(200, self._shown(event, request))

    def acknowledge_all(self, request: Request) -> Reply:
        """``{"ids": [...]}``: the page's "acknowledge all shown"."""
        ids = json_list(request, "ids", str, '{"ids": ["<event id>", ...]}')
        if isinstance(ids, tuple):
            return ids
        return json_reply(200, {"acknowledged": self.store.acknowledge_all(ids)})

    def _shown(self, event: dict[str, Any], request: Request) -> dict[str, Any]:
        """The event with links to its files that are there and may be served; for a reviewer who may see
        faces (the user who sent ``request``), links to the unblurred ones."""
        for name, (column, beside, _, url) in FILES.items():
            event[url] = event_file(event["event_id"], name) if self._file(event[column], beside) else None
        if event["snapshot_url"] and not self.gate.shows_snapshot(event["started"]):
            event["snapshot_url"] = None
            event["snapshot_withheld"] = self.gate.withheld(event["stream"], snapshot=True)
        if event["clip_url"] and not self.gate.serves(event["stream"], event["started"] - self.clip_pre_s):
            event["clip_url"] = None
            event["withheld"] = self.gate.withheld(event["stream"])
        if self.gate.sees_faces(request):
            clip = self._file(event["clip"])
            snapshot = self._file(event["snapshot"], with_faces) or self._file(event["snapshot"])
            event["clip_faces_url"] = f"{event_file(event['event_id'], 'clip.mp4')}?faces=1" if clip else None
            event["snapshot_faces_url"] = (
                f"{event_file(event['event_id'], 'snapshot.jpg')}?faces=1" if snapshot else None
            )
        return event

    def _file(self, stored: str | None, beside: Callable[[Path], Path] | None = None) -> Path | None:
        """A recorded file by its stored path (``beside``: the file it names beside that one), if it is
        still there and inside the recordings folder."""
        if not stored:
            return None
        path = Path(stored).resolve()
        path = beside(path) if beside else path
        return path if path.is_relative_to(self.recordings) and path.is_file() else None


def json_body(request: Request) -> dict[str, Any] | Reply:
    """A POST's JSON object, or the reply that says why it is not one."""
    if request.content_type.split(";")[0].strip() != "application/json":
        return json_reply(415, {"error": "send Content-Type: application/json"})
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return json_reply(400, {"error": "the body is not JSON"})
    return body if isinstance(body, dict) else json_reply(400, {"error": "the body is not a JSON object"})


def json_list(request: Request, key: str, kind: type, usage: str) -> list[Any] | Reply:
    """The list under ``key`` of a POST's JSON object, each item a ``kind``; or the reply that says
    what to send (``usage``)."""
    body = json_body(request)
    if isinstance(body, tuple):
        return body
    items = body.get(key)
    if not isinstance(items, list) or not all(isinstance(item, kind) for item in items):
        return json_reply(400, {"error": f"send {usage}"})
    return items


def query_number(query: dict[str, str], key: str) -> float:
    """A query parameter as a finite number; the ValueError names it."""
    try:
        value = float(query.get(key, ""))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{key} {query.get(key, '')!r} is not a number")
    return value


def json_reply(status: int, body: object) -> Reply:
    return status, "application/json", json.dumps(body).encode()
