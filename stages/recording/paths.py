"""Where every recorded file goes: the one place that knows the recordings folder's layout.

::

    <recordings>/events.sqlite3                               the event store
    <recordings>/privacy.json                                 since when files are blurred (blurring)
    <recordings>/<stream>/<YYYY-MM-DD>/<stream>-<time>.ts     a segment, and its .jsonl sidecar
    <recordings>/<stream>/<YYYY-MM-DD>/events/<event>-<phase>.jpg   an event's snapshot
    <recordings>/<stream>/<YYYY-MM-DD>/clips/<event>.mp4      an event's clip (.jsonl: its people;
                                                              .partial while it is being cut)
    <recordings>/.review/<stream>-<ms>-<ms>.mp4               a stretch of recording cut for the review
                                                              page (played or exported), kept an hour

Days and times are the server's local ones, so that an operator finds a day's files under that day.
Retention finds what it may delete through the patterns here (``SEGMENT``, ``CLIPS``...).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

EVENTS_DB = "events.sqlite3"
SEGMENT = "*.ts"  # under a stream's folder, at any depth
SEGMENTS_OF_A_STREAM = "*/*.ts"  # a stream's day folders
CLIPS = "clips/*.mp4"
SNAPSHOTS = "events/*.jpg"
LEARNING = "learning/*.jpg"  # frames kept for the learning loop (stages.recording.learning)
PARTIAL_CLIPS = "clips/*.partial"


def stream_folder(recordings: Path, stream: str) -> Path:
    return recordings / stream


def events_db(recordings: Path) -> Path:
    return recordings / EVENTS_DB


def privacy_note(recordings: Path) -> Path:
    """Since when the files hide what ``privacy.blur`` hides (``stages.recording.blurring``)."""
    return recordings / "privacy.json"


REVIEW_CUTS = ".review"  # no stream is named so: stream ids have no leading dot


def review_cut(recordings: Path, stream: str, start: float, end: float) -> Path:
    """Where a stretch of a stream's recording is cut to for the review page."""
    return recordings / REVIEW_CUTS / f"{stream}-{int(start * 1000)}-{int(end * 1000)}.mp4"


def day_folder(stream_root: Path, when: float) -> Path:
    """The folder of the local day ``when`` (Unix seconds) falls on."""
    return stream_root / datetime.fromtimestamp(when).astimezone().strftime("%Y-%m-%d")


def segment_path(stream_root: Path, stream: str, started: float) -> Path:
    """A new segment's file, named after its stream and its first frame's local time with the UTC offset."""
    stamp = datetime.fromtimestamp(started).astimezone()
    return day_folder(stream_root, started) / f"{stream}-{stamp.strftime('%Y%m%d-%H%M%S%z')}.ts"


def segment_start(segment: Path) -> tuple[float, int]:
    """When a segment began by its name, in Unix seconds (its offset read: a clock put back an hour
    makes names that sort before the last ones), and its rank among those begun in the same second."""
    named = re.search(r"(\d{8}-\d{6}[+-]\d{4})(b*)$", segment.stem)
    if named is None:
        return 0.0, 0
    return datetime.strptime(named[1], "%Y%m%d-%H%M%S%z").timestamp(), len(named[2])


def sidecar(recorded: Path) -> Path:
    """The JSON-lines file beside a segment (detections per frame) or a clip (the people to draw)."""
    return recorded.with_suffix(".jsonl")


def snapshot_path(stream_root: Path, event_id: str, phase: str, when: float) -> Path:
    return day_folder(stream_root, when) / "events" / f"{event_id}-{phase}.jpg"


def about_frame(picture: Path) -> Path:
    """A kept frame's description (``stages.recording.learning``): one JSON object, not a segment's lines."""
    return picture.with_suffix(".json")


def besides(recorded: Path) -> tuple[Path, ...]:
    """The files that go with a recorded one: a segment's detections or a clip's people (``sidecar``),
    a kept frame's description (``about_frame``)."""
    return sidecar(recorded), about_frame(recorded)


def with_faces(snapshot: Path) -> Path:
    """Where a snapshot's unblurred copy is, kept for reviewers when ``privacy.reviewers_see_faces``."""
    return snapshot.with_suffix(".faces.jpg")


def clip_path(stream_root: Path, event_id: str, started: float) -> Path:
    """Where an event's clip goes: beside the recordings of the day it started."""
    return day_folder(stream_root, started) / "clips" / f"{event_id}.mp4"


def partial(path: Path) -> Path:
    """Where a file is written before it is renamed into place whole."""
    return path.with_name(path.name + ".partial")
