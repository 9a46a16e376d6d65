"""The recordings behind the review page's camera day: what was recorded when, played from any
moment, exported as one MP4. Segments are MPEG-TS, which browsers do not play: stretches are cut
from them into MP4s (packets copied, nothing re-encoded: ``stages.recording.clips.cut_clip``), each
in a process of its own: the HTTP server runs in the supervisor, which stays free of FFmpeg's libraries.

- ``GET /api/recordings/<stream>?since=&until=``: ``{"stream", "recorded": [[from, to], ...], "events":
  [{"event_id", "started", "ended", "missing"}, ...]}`` (unix seconds; default the last 24 hours)
- ``GET /api/recordings/<stream>/window?at=``: the recording from ``at`` (from the keyframe before it)
  for ``WINDOW_S``, cut into an MP4: ``{"url", "start", "duration_s", "people_url", "next", "live"}``;
  ``people_url`` (a copied camera's, or frames recorded undrawn) has the people to draw over it;
  ``next`` is where the following window starts: a minute on, or, where the window reaches the present
  (``live``: the recording is still being made), just past its last frame, so that playing follows
  the camera. 404 when nothing is recorded in that window (with ``live``: not yet; ask again).
- ``GET /api/recordings/<stream>/export.mp4?from=&to=``: that stretch as one MP4, at most ``EXPORT_MAX_S``
- ``GET /api/recordings/<stream>/cut/<name>``: a cut MP4 (byte ranges) or its people (``.jsonl``)
- ``POST /api/recordings/<stream>/missed`` with ``{"at": <unix seconds>}``: "a violation the model missed
  here", for the site dataset

Under ``[privacy]`` a recording that is not blurred, or was recorded before it was, is not served
(``stages.web.privacy``).

Cuts go to ``<recordings>/.review/``; they are deleted an hour after they were made, and first of
all when the disk runs short (``retention``), and cut again when asked for.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipeline.web import Reply, Request, Route
from stages.config import Settings
from stages.config.streams import STREAM_ID
from stages.recording.eventstore import EventFilter, EventStore
from stages.recording.paths import REVIEW_CUTS, review_cut, sidecar, stream_folder
from stages.recording.retention import REVIEW_CUT_S, forget_review_cuts, mtime
from stages.recording.timeline import Timeline
from stages.web.privacy import FacesGate
from stages.web.review import json_body, json_reply, query_number

log = logging.getLogger(__name__)

API = "/api/recordings/"
WINDOW_S = 60.0  # what the page plays at a time; the next window follows when it ends
PAST_LAST_FRAME_S = 0.001  # a live window's next starts this far past its last frame: none is played twice
EXPORT_MAX_S = 3600.0
DAY_S = 86400.0
LATEST = 1e11  # unix seconds: a time past this (the year 5138) is a mistake, not a moment to cut


class RecordingsApi:
    def __init__(self, settings: Settings, store: EventStore) -> None:
        self.recordings = settings.recordings_dir.resolve()
        self.store = store
        self.gate = FacesGate(settings)
        self.timeline = Timeline()
        self.cutting: dict[Path, threading.Lock] = {}  # one cut of a file at a time (a double click)
        self.locks = threading.Lock()

    def routes(self) -> dict[str, Route]:
        return {API: self.answer, f"POST {API}": self.missed}

    def missed(self, request: Request) -> Reply:
        """``POST <stream>/missed`` with ``{"at": <unix seconds>}``: a violation the model did not raise,
        kept for the site dataset (``vestwatch dataset export``)."""
        stream, _, action = request.path.removeprefix(API).partition("/")
        if action != "missed" or not STREAM_ID.match(stream):
            return json_reply(404, {"error": "not found"})
        body = json_body(request)
        if isinstance(body, tuple):
            return body
        at = body.get("at")
        if not isinstance(at, (int, float)) or isinstance(at, bool) or not 0 < at < LATEST:
            return json_reply(400, {"error": 'send {"at": <unix seconds of the recording>}'})
        self.store.note_missed(stream, float(at))
        return json_reply(200, {"stream": stream, "at": at})

    def answer(self, request: Request) -> Reply:
        stream, _, action = request.path.removeprefix(API).partition("/")
        root = stream_folder(self.recordings, stream)
        if not STREAM_ID.match(stream) or not root.is_dir():
            return json_reply(404, {"error": f"no recordings of stream {stream!r}"})
        try:
            refused = self._refusal(stream, action, request)
            if refused:
                return refused
            if action == "":
                return self._day(stream, root, request.query)
            if action == "window":
                faces = "?faces=1" if request.query.get("faces") == "1" else ""  # the cut asks as the window did
                return self._window(stream, root, _moment(request.query, "at"), faces)
            if action == "export.mp4":
                return self._export(stream, root, _moment(request.query, "from"), _moment(request.query, "to"))
        except ValueError as error:
            return json_reply(400, {"error": str(error)})
        except OSError as error:  # a full disk, the recordings folder gone: said, the page goes on
            log.warning("%s: cannot cut its recording for the review page: %s", stream, error)
            status = 507 if error.errno == errno.ENOSPC else 500
            return json_reply(status, {"error": f"cannot cut the recording: {error.strerror or error}"})
        if action.startswith("cut/"):
            return self._cut_file(stream, action.removeprefix("cut/"))
        return json_reply(404, {"error": "not found"})

    def _refusal(self, stream: str, action: str, request: Request) -> Reply | None:
        """The 403 when what ``action`` would hand out may not leave the server (``stages.web.privacy``)."""
        if action in ("window", "export.mp4"):
            made_at = _moment(request.query, "at" if action == "window" else "from")
        elif cut := re.fullmatch(r"cut/.+-([0-9]+)-[0-9]+\.(mp4|jsonl)", action):
            made_at = int(cut[1]) / 1000
        else:  # not footage, or not found
            return None
        return self.gate.refusal(stream, request, made_at)

    def _day(self, stream: str, root: Path, query: dict[str, str]) -> Reply:
        until = query_number(query, "until") if query.get("until") else time.time()
        since = query_number(query, "since") if query.get("since") else until - DAY_S
        if not 0 < until - since <= 7 * DAY_S:
            raise ValueError("since must be before until, and at most 7 days before it")
        events = self.store.events(EventFilter(stream=stream, since=since - DAY_S, until=until), limit=1000)
        marks = [
            {key: event[key] for key in ("event_id", "started", "ended", "missing")}
            for event in events
            if (event["ended"] or event["started"]) >= since
        ]
        recorded = self.timeline.stretches(root, since, until)
        return json_reply(200, {"stream": stream, "recorded": [list(span) for span in recorded], "events": marks})

    def _window(self, stream: str, root: Path, at: float, faces: str) -> Reply:
        now = time.time()
        live = now - WINDOW_S < at <= now  # the window reaches the present: the camera may record more of it
        cut = self._cut(stream, root, at, at + WINDOW_S)
        if cut is None:
            return json_reply(404, {"error": f"nothing recorded in the {WINDOW_S:.0f} s from {at}", "live": live})
        path, clip = cut
        url = f"{API}{stream}/cut/{path.name}{faces}"
        people = f"{API}{stream}/cut/{sidecar(path).name}{faces}" if sidecar(path).is_file() else None
        following = clip["last"] + PAST_LAST_FRAME_S if live else at + WINDOW_S
        body = {"url": url, "start": clip["start"], "duration_s": clip["duration_s"], "people_url": people}
        return json_reply(200, {**body, "next": following, "live": live})

    def _export(self, stream: str, root: Path, start: float, end: float) -> Reply:
        if not 0 < end - start <= EXPORT_MAX_S:
            raise ValueError(f"from must be before to, and at most {EXPORT_MAX_S:.0f} s before it")
        cut = self._cut(stream, root, start, end)
        if cut is None:
            return json_reply(404, {"error": "nothing recorded between from and to"})
        return 200, "video/mp4", cut[0]

    def _cut(self, stream: str, root: Path, start: float, end: float) -> tuple[Path, dict[str, float]] | None:
        """The stretch cut into an MP4 (again only when the recording may have grown since): its path,
        and its first frame's clock, duration and last frame's clock (``start``, ``duration_s``, ``last``)."""
        out = review_cut(self.recordings, stream, start, end)
        forget_review_cuts(self.recordings, REVIEW_CUT_S)
        with self.locks:
            lock = self.cutting.setdefault(out, threading.Lock())
        with lock:
            made = out.with_suffix(".json")
            if out.is_file() and made.is_file() and end + 10 < mtime(out):  # cut once the stretch was recorded
                return out, json.loads(made.read_text())
            clip = _cut_clip(root, start, end, out)
            if clip is None:
                return None
            made.write_text(json.dumps(clip))
            return out, clip

    def _cut_file(self, stream: str, name: str) -> Reply:
        path = self.recordings / REVIEW_CUTS / name
        if not re.fullmatch(rf"{re.escape(stream)}-[0-9]+-[0-9]+\.(mp4|jsonl)", name):  # this stream's, no other's
            return json_reply(404, {"error": "not found"})
        if not path.is_file():
            return json_reply(404, {"error": "cut no more (they are kept an hour): ask for the window again"})
        return 200, "video/mp4" if path.suffix == ".mp4" else "application/x-ndjson", path


def _cut_clip(root: Path, start: float, end: float, out: Path) -> dict[str, float] | None:
    """``cut_clip`` in a child process: its clip's start and duration, None when nothing was recorded;
    OSError with the child's last line when it failed (a full disk)."""
    command = [sys.executable, "-m", "stages.recording.clips", str(root), repr(start), repr(end), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=EXPORT_MAX_S)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["it failed"])[-1]
        if "No space left" in last:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))
        raise OSError(errno.EIO, last)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _moment(query: dict[str, str], key: str) -> float:
    value = query_number(query, key)
    if not 0 < value < LATEST:
        raise ValueError(f"{key} {query.get(key)!r} is no time (unix seconds)")
    return value
