"""Retention: what the recordings folder may hold, by age and size per stream and by the disk's free
space for all of them. Whole segments go (with their sidecars), oldest first, and never a stream's
newest, which may be the one being written; event clips and snapshots go by age and with the
segments' budget. Which files are which is ``paths``'s to say."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from stages.recording.paths import CLIPS, PARTIAL_CLIPS, SEGMENT, SNAPSHOTS, sidecar

PARTIAL_CLIP_S = 3600.0  # a clip still being written after this long was abandoned


def apply_retention(root: Path, max_age_s: float, max_bytes: int, now: float | None = None) -> list[Path]:
    """Delete whole segments (with sidecars) and event clips older than ``max_age_s``, then the oldest
    of them while over ``max_bytes``; and event snapshots older than ``max_age_s``."""
    now = time.time() if now is None else now
    segments = sorted(root.rglob(SEGMENT), key=mtime)  # make_room in another stream's stage may delete any
    clips = list(root.rglob(CLIPS))
    sizes = {p: _size(p) + (_size(sidecar(p)) if p.suffix == ".ts" else 0) for p in segments + clips}
    total = sum(sizes.values())
    deleted = []
    for path in sorted(segments[:-1] + clips, key=mtime):  # the newest segment may be the one being written
        too_old = now - mtime(path) > max_age_s
        if not too_old and total <= max_bytes:
            break
        total -= sizes[path]
        path.unlink(missing_ok=True)
        sidecar(path).unlink(missing_ok=True)
        deleted.append(path)
    for snapshot in root.rglob(SNAPSHOTS):  # event snapshots go by age too
        if now - mtime(snapshot) > max_age_s:
            snapshot.unlink(missing_ok=True)
            deleted.append(snapshot)
    for partial in root.rglob(PARTIAL_CLIPS):  # a clip whose cutting a stop or a crash cut short
        if now - mtime(partial) > PARTIAL_CLIP_S:
            partial.unlink(missing_ok=True)
            deleted.append(partial)
    for folder in sorted({p.parent for p in deleted}, key=lambda f: len(f.parts), reverse=True):
        for empty in (folder, folder.parent):
            if empty.is_dir() and empty != root and not any(empty.iterdir()):
                empty.rmdir()
    return deleted


def make_room(recordings: Path, min_free: int) -> tuple[int, list[Path]]:
    """Delete the oldest segments of any stream, with their sidecars, until ``min_free`` bytes are free
    on the recordings' filesystem; a stream's newest segment (perhaps being written) stays.
    Returns the free bytes then, and what was deleted."""
    free = shutil.disk_usage(recordings).free
    if free >= min_free:
        return free, []
    candidates = []
    for stream in (p for p in recordings.iterdir() if p.is_dir()):
        candidates += sorted(stream.rglob(SEGMENT), key=mtime)[:-1]
    deleted = []
    for path in sorted(candidates, key=mtime):
        path.unlink(missing_ok=True)
        sidecar(path).unlink(missing_ok=True)
        deleted.append(path)
        free = shutil.disk_usage(recordings).free
        if free >= min_free:
            break
    return free, deleted


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
