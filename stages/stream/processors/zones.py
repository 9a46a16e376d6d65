"""The ``zones`` processor: which zones each person stands in, and the violations that follow.

A person is in a zone by the bottom centre of their box (where they stand). Missing one of the
zone's required items (seen as ``no``, never merely ``unknown``) for ``dwell_s`` of capture time
opens a violation: ``start`` once, ``update`` at most every ``update_s`` or when what is missing
changes, and ``end`` when the person leaves, complies or is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stages.config import EventSettings, StreamSettings, ZoneSettings
from stages.stream.analysis import FrameAnalysis, Person, Phase, Violation
from stages.stream.processors.base import FollowingProcessor

EPS = 1e-3  # seconds: capture times near 1.7e9 carry float noise; a boundary reached is reached


class Zone:
    """A named area of the frame, in pixels of one frame size, and what must be worn in it."""

    def __init__(self, settings: ZoneSettings, width: int, height: int) -> None:
        self.settings = settings
        self.name = settings.name
        self.require = list(settings.require)
        self.width, self.height = width, height
        self._contour = None if settings.polygon is None else self._points(width, height).reshape(-1, 1, 2)

    def _points(self, width: int, height: int) -> np.ndarray:
        """The polygon in pixels of a ``width`` × ``height`` frame, as float32 [K, 2]."""
        if self.settings.polygon is None:
            return np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        points = np.array(self.settings.polygon, np.float32).reshape(-1, 2)
        if self.settings.units == "fraction":
            points = points * np.array([width, height], np.float32)
        return points

    def contains(self, x: float, y: float) -> bool:
        """Whether pixel (x, y) is inside the zone or on its edge; no polygon is the whole frame."""
        if self._contour is None:
            return True  # boxes may reach past the frame's edge: the whole frame has no outside
        return cv2.pointPolygonTest(self._contour, (float(x), float(y)), False) >= 0

    def polygon_pixels(self, width: int, height: int) -> np.ndarray:
        """int32 [K, 2] vertices for a frame of this size, ready for ``cv2.polylines``."""
        return np.round(self._points(width, height)).astype(np.int32)


def zones_for(stream: StreamSettings, width: int, height: int) -> list[Zone]:
    """The stream's zones for frames of this size (also what the renderer draws)."""
    return [Zone(settings, width, height) for settings in stream.zones]


@dataclass
class _Case:
    """One (track, zone) seen missing something: pending until ``dwell_s``, then an open event."""

    track_id: int
    zone: str
    started: float
    missing: list[str]
    last_seen: float
    event_id: str | None = None  # set when the event starts
    announced: float = 0.0  # capture time of the last start or update


class ZonesProcessor(FollowingProcessor):
    """Entry point ``zones``: sets ``person.zones`` and appends violation phases to ``analysis.violations``."""

    def __init__(self, stream: StreamSettings, events: EventSettings, fps: float) -> None:
        super().__init__(stream, events, fps)
        self.zones: list[Zone] = []
        self.cases: dict[tuple[int, str], _Case] = {}

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        now = analysis.clock
        if not self.zones or (self.zones[0].width, self.zones[0].height) != (analysis.width, analysis.height):
            self.zones = zones_for(self.stream, analysis.width, analysis.height)
        out = analysis.violations
        for person in analysis.people:
            x1, _, x2, y2 = person.box
            person.zones = [zone.name for zone in self.zones if zone.contains((x1 + x2) / 2, y2)]
            for zone in self.zones:
                self._step(person, zone, now, out)
        present = {person.track_id for person in analysis.people}
        for key, case in list(self.cases.items()):
            if case.track_id not in present and now - case.last_seen >= self.events.lost_s - EPS:
                del self.cases[key]
                if case.event_id is not None:  # ended when last seen, reported lost_s later
                    out.append(self._phase(case, "end", case.last_seen, reason="lost"))

    def _step(self, person: Person, zone: Zone, now: float, out: list[Violation]) -> None:
        """Advance the case of one person in one zone."""
        key = (person.track_id, zone.name)
        case = self.cases.get(key)
        missing = [item for item in zone.require if getattr(person, item) == "no"]
        if zone.name not in person.zones and case is not None:
            # out of the zone counts like out of view: a box jittering at the edge keeps its case
            if now - case.last_seen >= self.events.lost_s - EPS:
                del self.cases[key]
                if case.event_id is not None:
                    out.append(self._phase(case, "end", case.last_seen, reason="left"))
            return
        if zone.name not in person.zones or not missing:
            if case is not None:
                del self.cases[key]
                if case.event_id is not None:
                    out.append(self._phase(case, "end", now, reason="complied"))
            return
        if case is None:
            case = self.cases[key] = _Case(person.track_id, zone.name, now, missing, now)
        case.last_seen = now
        if case.event_id is None:
            case.missing = missing
            if now - case.started >= self.events.dwell_s - EPS:
                case.event_id = f"{self.stream.id}-{int(case.started * 1000)}-{case.track_id}-{case.zone}"
                case.announced = now
                out.append(self._phase(case, "start", now))
        elif missing != case.missing or now - case.announced >= self.events.update_s - EPS:
            case.missing = missing
            case.announced = now
            out.append(self._phase(case, "update", now))

    @staticmethod
    def _phase(case: _Case, phase: Phase, now: float, reason: str | None = None) -> Violation:
        """One phase of the case's event, as of capture time ``now`` (its end time for ``end``)."""
        assert case.event_id is not None
        return Violation(
            event_id=case.event_id,
            phase=phase,
            track_id=case.track_id,
            zone=case.zone,
            missing=list(case.missing),
            started=case.started,
            ended=now if phase == "end" else None,
            duration_s=round(max(0.0, now - case.started), 3),
            reason=reason,
        )

    def end_all(self, now: float, reason: str) -> list[Violation]:
        """End every open event (the stage is stopping); a pending case just goes."""
        ends = [self._phase(c, "end", now, reason=reason) for c in self.cases.values() if c.event_id is not None]
        self.cases.clear()
        return ends

    def close(self) -> None:
        self.cases.clear()
