"""Retention: what the recordings folder may hold, by age and size per stream and by the disk's free
space for all of them. A stream's segments (with their sidecars), its events' clips (with theirs),
snapshots and the frames kept for the learning loop count alike and go alike, oldest first: an event's
clip and snapshots with the recording around them. Never a stream's newest segment, which may be the
one being written, nor the one that is. Which files are which is ``paths``'s to say."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import NamedTuple

from stages.recording.paths import CLIPS, LEARNING, PARTIAL_CLIPS, REVIEW_CUTS, SEGMENT, SNAPSHOTS, besides

PARTIAL_CLIP_S = 60.0  # a clip being cut is written to all the time: one untouched this long was abandoned
REVIEW_CUT_S = 3600.0  # the review page's cuts (played, exported) are kept this long; made again when asked


def apply_retention(
    root: Path, max_age_s: float, max_bytes: int, now: float | None = None, writing: Path | None = None
) -> list[Path]:
    """Delete a stream's segments, event clips and snapshots older than ``max_age_s``, then the oldest
    of them while the stream holds more than ``max_bytes``; and the partial clips nothing writes any more.
    ``writing``: the segment being written, whatever its time says."""
    now = time.time() if now is None else now
    deletable, kept = _recorded(root, writing)
    total = sum(file.size for file in deletable + kept)
    deleted = []
    for file in deletable:
        if now - file.mtime <= max_age_s and total <= max_bytes:
            break
        total -= file.size
        _delete(file.path)
        deleted.append(file.path)
    deleted += remove_partials(root, PARTIAL_CLIP_S, now)
    for folder in sorted({p.parent for p in deleted}, key=lambda f: len(f.parts), reverse=True):
        for empty in (folder, folder.parent):
            if empty.is_dir() and empty != root and not any(empty.iterdir()):
                empty.rmdir()
    return deleted


def remove_partials(root: Path, older_than_s: float | None = None, now: float | None = None) -> list[Path]:
    """Delete a stream's partial clips (and clip sidecars) untouched for ``older_than_s``, cuts that a stop,
    a crash or a full disk cut short; all of them without it, at start, when none is being cut yet."""
    now = time.time() if now is None else now
    stale = [p for p in root.rglob(PARTIAL_CLIPS) if older_than_s is None or now - mtime(p) > older_than_s]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def make_room(recordings: Path, min_free: int, writing: Path | None = None) -> tuple[int, list[Path]]:
    """Delete the oldest segments (with their sidecars), event clips and snapshots of any stream until
    ``min_free`` bytes are free on the recordings' filesystem; a stream's newest segment (perhaps being
    written) and ``writing`` stay. Returns the free bytes then, and what was deleted."""
    forget_review_cuts(recordings, REVIEW_CUT_S)
    free = shutil.disk_usage(recordings).free
    if free >= min_free:
        return free, []
    forget_review_cuts(recordings)  # they can be cut again: they go before any recording
    free = shutil.disk_usage(recordings).free
    if free >= min_free:
        return free, []
    candidates = []
    for stream in (p for p in recordings.iterdir() if p.is_dir() and p.name != REVIEW_CUTS):
        candidates += _recorded(stream, writing)[0]
    deleted = []
    for file in sorted(candidates):
        _delete(file.path)
        deleted.append(file.path)
        free = shutil.disk_usage(recordings).free
        if free >= min_free:
            break
    return free, deleted


def forget_review_cuts(recordings: Path, older_than_s: float | None = None) -> None:
    """Delete the review page's cuts made over ``older_than_s`` ago (all of them without it)."""
    folder = recordings / REVIEW_CUTS
    if not folder.is_dir():
        return
    for cut in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if older_than_s is None or time.time() - cut.stat().st_mtime > older_than_s:
                cut.unlink()


class _Recorded(NamedTuple):
    """A recorded file as retention weighs it, once; sorts oldest first, a tie of mtimes by name (a
    stream's segments are named by their start)."""

    mtime: float
    name: str
    path: Path
    size: int  # with its sidecar's


def _recorded(stream: Path, writing: Path | None) -> tuple[list[_Recorded], list[_Recorded]]:
    """A stream's segments, clips and snapshots that may be deleted, oldest first (make_room in another
    stream's stage may delete any meanwhile); and the segments that stay: its newest and ``writing``."""
    files = []
    for path in (*stream.rglob(SEGMENT), *stream.rglob(CLIPS), *stream.rglob(SNAPSHOTS), *stream.rglob(LEARNING)):
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            files.append(_Recorded(stat.st_mtime, path.name, path, stat.st_size + sum(map(_size, besides(path)))))
    files.sort()
    newest = max((file for file in files if file.path.match(SEGMENT)), default=None)
    kept = [file for file in files if file is newest or file.path == writing]
    return [file for file in files if file not in kept], kept


def _delete(path: Path) -> None:
    """A recorded file and what goes with it: a segment's detections, a clip's people, a kept frame's
    description (a snapshot has none)."""
    path.unlink(missing_ok=True)
    for beside in besides(path):
        beside.unlink(missing_ok=True)


def mtime(path: Path) -> float:
    """Its modification time; 0 for a file another stage's retention deleted meanwhile."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # another stream's recorder deleted it meanwhile
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
