"""The ``compliance`` sink: how long people were watched wearing, or not, what their zones require.

For each inferred frame, the time since the one before (at most ``events.lost_s``: a longer gap was
not watched) counts once for the camera and once for each zone a person stands in: as watched time,
as a person-second observed, by vest and hardhat state, and as compliant (wearing all the zones
require), violating (seen without one of them) or neither (not seen well enough, or no zone requiring
anything). Violators' foot points go on a coarse grid of the picture. The figures are added into the
events database's hourly rows (``stages.recording.compliance``) once a minute and as the stage stops:
a crash loses at most the last minute's.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

import numpy as np

from stages.config import Settings, StreamSettings
from stages.recording.compliance import CAMERA, GRID, HourFigures, add_figures
from stages.recording.eventstore import EventStore
from stages.stats import PluginStats, counter, gauge
from stages.stream.analysis import PPE_ITEMS, FrameAnalysis, Person
from stages.stream.outputs.base import Sink

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 60.0
FORGET_S = 600.0  # a person unseen this long is forgotten: a track lost (events.lost_s) never comes back


@dataclass
class ComplianceStats(PluginStats):
    """``compliance_*`` in ``ctl status``."""

    flushes: int = counter("vestwatch_compliance_flushes_total", "Times a minute's compliance figures were stored")
    unsaved_s: float = gauge(
        "vestwatch_compliance_unsaved_seconds", "Watched seconds of figures not stored yet (the database refused)"
    )


class ComplianceSink(Sink):
    prefix, stats_type = "compliance", ComplianceStats
    stats: ComplianceStats

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        super().__init__()
        self.settings, self.stream = settings, stream
        self.require = {zone.name: set(zone.require) for zone in stream.zones}
        self.last_clock: float | None = None
        self.hours: dict[tuple[float, str], HourFigures] = {}  # (hour, zone) -> not stored yet
        self.cells: dict[tuple[float, int], float] = {}  # (hour, grid cell) -> violating seconds not stored yet
        self.seen: dict[str, dict[int, float]] = {}  # zone -> track id counted there -> clock last seen there
        self.flushed = time.monotonic()
        self.store: EventStore | None = None

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        if not analysis.seq:  # no results for a while: nothing watched
            self.last_clock = None
            return
        clock = float(analysis.clock or analysis.captured)
        last, self.last_clock = self.last_clock, clock
        step = 0.0 if last is None else clock - last
        if not 0 < step <= self.settings.events.lost_s:
            return
        hour = clock - clock % 3600
        self._figures(hour, CAMERA).watched_s += step
        for person in analysis.people:
            zones = [zone for zone in person.zones if zone in self.require]
            required = set().union(*(self.require[zone] for zone in zones))
            state = self._count(clock, CAMERA, person, required, step)
            for zone in zones:
                self._count(clock, zone, person, self.require[zone], step)
            if state == "violating":
                x1, _, x2, y2 = person.box
                column = min(GRID[0] - 1, max(0, int((x1 + x2) / 2 / analysis.width * GRID[0])))
                row = min(GRID[1] - 1, max(0, int(y2 / analysis.height * GRID[1])))
                key = (hour, row * GRID[0] + column)
                self.cells[key] = self.cells.get(key, 0.0) + step

    def _figures(self, hour: float, zone: str) -> HourFigures:
        return self.hours.setdefault((hour, zone), HourFigures())

    def _count(self, clock: float, zone: str, person: Person, required: set[str], step: float) -> str:
        """Add one person's ``step`` seconds to a zone's hour; whether they were compliant, violating or neither.
        A person is counted once, in the hour they were first seen there: the hours add up to the people."""
        figures = self._figures(clock - clock % 3600, zone)
        figures.observed_s += step
        for item in PPE_ITEMS:
            name = f"{item}_{getattr(person, item)}_s"
            setattr(figures, name, getattr(figures, name) + step)
        worn = {getattr(person, item) for item in required}
        state = "violating" if "no" in worn else "compliant" if worn == {"yes"} else "neither"
        if state == "violating":
            figures.violating_s += step
        elif state == "compliant":
            figures.compliant_s += step
        seen = self.seen.setdefault(zone, {})
        if person.track_id not in seen:
            figures.people += 1
        seen[person.track_id] = clock
        return state

    def tick(self) -> None:
        if time.monotonic() - self.flushed >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Add what was counted since the last flush to the database; kept for the next one if it refuses."""
        self.flushed = time.monotonic()
        if not self.hours and not self.cells:
            return
        try:
            if self.store is None:
                self.store = EventStore(self.settings.events_db)
            add_figures(self.store, self.stream.id, self.hours, self.cells)
        except (sqlite3.Error, OSError) as error:
            self.stats.unsaved_s = round(sum(f.watched_s for (_, zone), f in self.hours.items() if zone == CAMERA), 1)
            log.warning("%s: compliance figures not stored (%s); kept for the next minute", self.stream.id, error)
            return
        self.stats.flushes += 1
        self.stats.unsaved_s = 0.0
        self.hours, self.cells = {}, {}
        if self.last_clock is not None:  # a track lost this long is gone (the tracker never reuses its id)
            now = self.last_clock
            self.seen = {zone: {i: t for i, t in ids.items() if now - t < FORGET_S} for zone, ids in self.seen.items()}

    def close(self) -> None:
        self.flush()
        if self.store is not None:
            self.store.close()
