"""What a stream's recordings hold over time: the stretches that can be played, from each segment's
sidecar (its first line's clock, its last line's place), for the review page's day timeline."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from stages.recording.paths import SEGMENTS_OF_A_STREAM, sidecar

JOIN_S = 2.0  # segments this close make one stretch (the recorder closes one and opens the next at once)
TAIL_BYTES = 8192  # what is read first of a sidecar's end, for its last whole line


def first_clock(segment: Path) -> float | None:
    """The clock of a segment's first frame, from its sidecar; None for a segment written before
    sidecars carried it, or an empty one."""
    try:
        with sidecar(segment).open() as lines:
            first = json.loads(lines.readline() or "{}")
    except (OSError, ValueError):
        return None
    clock = first.get("clock")
    return clock - first.get("pts_s", 0.0) if isinstance(clock, (int, float)) else None


def _last_place(segment: Path) -> float | None:
    """Where in the segment its sidecar's last whole line is, seconds (a cut may leave half a line; a
    crowded frame's line may be long: the end is read in growing pieces until one is whole)."""
    try:
        with sidecar(segment).open("rb") as lines:
            size, piece = os.fstat(lines.fileno()).st_size, TAIL_BYTES
            while True:
                lines.seek(max(0, size - piece))
                tail = lines.read().splitlines()[0 if piece >= size else 1 :]  # the first may be cut
                for line in reversed(tail):
                    try:
                        place = json.loads(line).get("pts_s")
                    except (ValueError, AttributeError):
                        continue
                    if isinstance(place, (int, float)):
                        return float(place)
                if piece >= size:
                    return None
                piece *= 8
    except OSError:
        return None


class Timeline:
    """The recorded stretches of every stream, each finished segment's span read once (a segment is
    read again only when it changed: the one being written)."""

    def __init__(self) -> None:
        self.known: dict[Path, tuple[int, tuple[float, float] | None]] = {}  # by size

    def span(self, segment: Path) -> tuple[float, float] | None:
        """(first frame's clock, last frame's clock) of a segment; None when its sidecar lacks them."""
        try:
            size = sidecar(segment).stat().st_size
        except OSError:
            return None
        known = self.known.get(segment)
        if known is None or known[0] != size:
            start, last = first_clock(segment), _last_place(segment)
            known = self.known[segment] = (size, None if start is None or last is None else (start, start + last))
        return known[1]

    def stretches(self, stream_root: Path, since: float, until: float) -> list[tuple[float, float]]:
        """The recorded stretches of a stream that meet [since, until), oldest first, joined where
        segments follow each other."""
        days = {(datetime.fromtimestamp(since) + timedelta(days=d)).strftime("%Y-%m-%d")
                for d in range(-1, int((until - since) // 86400) + 2)}  # fmt: skip
        spans = sorted(
            span
            for segment in stream_root.glob(SEGMENTS_OF_A_STREAM)
            if segment.parent.name in days and (span := self.span(segment)) and span[1] >= since and span[0] < until
        )
        joined: list[tuple[float, float]] = []
        for start, end in spans:
            if joined and start - joined[-1][1] <= JOIN_S:
                joined[-1] = (joined[-1][0], max(joined[-1][1], end))
            else:
                joined.append((start, end))
        return joined
