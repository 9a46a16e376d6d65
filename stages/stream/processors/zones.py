"""The ``zones`` processor: which zones each person stands in, and the violations that follow.

A person is in a zone by the bottom centre of their box (where they stand). A zone counts against
a person once they have been missing one of its required items (seen as ``no``, never merely
``unknown``) in it for the zone's ``dwell_s`` (default ``events.dwell_s``) of capture time. A
person has one violation however many zones count against them: ``start`` once, ``update`` at
most every ``update_s`` or when its zones or what is missing change (entering a hardhat zone),
``end`` when they comply, have left every zone that counts (out of it for ``lost_s``: a box
jittering at a zone's edge stays in) or are lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from stages.config import EventSettings, StreamSettings, ZoneSettings
from stages.stream.analysis import PPE_ITEMS, FrameAnalysis, Person, Phase, Violation
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
class _InZone:
    """A person seen missing something in one zone: since when, until when, what."""

    since: float
    last: float
    missing: list[str]


@dataclass
class _Case:
    """One person seen missing something somewhere: pending until a zone's dwell, then an open event."""

    track_id: int
    last_seen: float
    zones: dict[str, _InZone] = field(default_factory=dict)
    event_id: str | None = None  # set when the event starts
    opened: int = 0  # events of this case so far: a zone in its dwell may open a second with the same start
    started: float = 0.0
    announced: float = 0.0  # capture time of the last start or update
    shown: tuple[list[str], list[str], list[str]] = ([], [], [])  # zones, require, missing as announced


class ZonesProcessor(FollowingProcessor):
    """Entry point ``zones``: sets ``person.zones`` and appends violation phases to ``analysis.violations``."""

    def __init__(self, stream: StreamSettings, events: EventSettings, fps: float) -> None:
        super().__init__(stream, events, fps)
        self.zones: list[Zone] = []
        self.cases: dict[int, _Case] = {}  # by track id

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        now = analysis.clock
        if not self.zones or (self.zones[0].width, self.zones[0].height) != (analysis.width, analysis.height):
            self.zones = zones_for(self.stream, analysis.width, analysis.height)
        out = analysis.violations
        for person in analysis.people:
            x1, _, x2, y2 = person.box
            person.zones = [zone.name for zone in self.zones if zone.contains((x1 + x2) / 2, y2)]
            self._step(person, now, out)
        present = {person.track_id for person in analysis.people}
        for track_id, case in list(self.cases.items()):
            if track_id not in present and now - case.last_seen >= self.events.lost_s - EPS:
                del self.cases[track_id]
                if case.event_id is not None:  # ended when last seen, reported lost_s later
                    out.append(self._phase(case, "end", case.last_seen, reason="lost"))

    def _step(self, person: Person, now: float, out: list[Violation]) -> None:
        """Advance one person's case: each zone they are missing something in, then their event."""
        case = self.cases.get(person.track_id) or _Case(person.track_id, now)
        case.last_seen = now
        complied, left_at = False, 0.0
        for zone in self.zones:
            missing = [item for item in zone.require if getattr(person, item) == "no"]
            held = case.zones.get(zone.name)
            if zone.name in person.zones and missing:
                held = case.zones.setdefault(zone.name, _InZone(now, now, missing))
                held.last, held.missing = now, missing
            elif held is not None and zone.name in person.zones:  # in it, wearing what it requires
                del case.zones[zone.name]
                complied = True
            elif held is not None and now - held.last >= self.events.lost_s - EPS:  # out of it long enough
                del case.zones[zone.name]
                left_at = max(left_at, held.last)
        counted = self._counted(case)
        if case.event_id is None and counted:
            case.started = min(case.zones[name].since for name in counted)
            case.opened += 1
            again = f"-{case.opened}" if case.opened > 1 else ""
            case.event_id = f"{self.stream.id}-{int(case.started * 1000)}-{case.track_id}{again}"
            case.announced = now
            case.shown = self._state(case, counted)
            out.append(self._phase(case, "start", now))
        elif case.event_id is not None and not counted:
            reason, ended = ("complied", now) if complied or not left_at else ("left", left_at)
            out.append(self._phase(case, "end", ended, reason=reason))
            case.event_id = None  # zones still in their dwell go on: they may open the next event
        elif case.event_id is not None:
            state = self._state(case, counted)
            if state != case.shown or now - case.announced >= self.events.update_s - EPS:
                case.shown, case.announced = state, now
                out.append(self._phase(case, "update", now))
        if case.zones:
            self.cases[person.track_id] = case
        else:
            self.cases.pop(person.track_id, None)

    def _counted(self, case: _Case) -> list[str]:
        """The zones that count against the person: seen missing something there for the zone's dwell
        (the time since they left a zone they may come back to does not count)."""
        dwell = {zone.name: self.events.dwell_s if zone.settings.dwell_s is None else zone.settings.dwell_s
                 for zone in self.zones}  # fmt: skip
        return [name for name, held in case.zones.items() if held.last - held.since >= dwell.get(name, 0.0) - EPS]

    def _state(self, case: _Case, counted: list[str]) -> tuple[list[str], list[str], list[str]]:
        """The event's zones, the union of what they require and the union of what is missing there."""
        require = {item for zone in self.zones if zone.name in counted for item in zone.require}
        missing = {item for name in counted for item in case.zones[name].missing}
        return counted, [i for i in PPE_ITEMS if i in require], [i for i in PPE_ITEMS if i in missing]

    @staticmethod
    def _phase(case: _Case, phase: Phase, now: float, reason: str | None = None) -> Violation:
        """One phase of the case's event, as of capture time ``now`` (its end time for ``end``)."""
        assert case.event_id is not None
        zones, require, missing = case.shown
        return Violation(
            event_id=case.event_id,
            phase=phase,
            track_id=case.track_id,
            zones=list(zones),
            require=list(require),
            missing=list(missing),
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
