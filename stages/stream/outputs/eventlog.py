"""The ``eventlog`` sink: each event phase into the event store the review page reads; the events a
crash of the stage left open ended ``interrupted`` when it starts again, for every other output too."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from dataclasses import asdict, dataclass

import numpy as np

from stages.config import Settings, StreamSettings
from stages.recording.eventstore import EventStore
from stages.stats import PluginStats, counter
from stages.stream.analysis import FrameAnalysis
from stages.stream.messages import NO_EVIDENCE, EventMessage
from stages.stream.outputs.base import Sink
from stages.web.review import event_file

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 60.0  # old events are looked for once a minute
RENEWED_SHOWN_S = 600.0  # a database removed or replaced under the daemon is a /healthz problem this long
SEEN_EVERY_S = 1.0  # how often the store hears that open events are still open (where a crash ends them)


@dataclass
class EventLogStats(PluginStats):
    """Unprefixed: ``database_renewed`` in ``ctl status``."""

    database_renewed: int = counter(
        "vestwatch_events_database_renewed_total", "Times the events database was found removed or replaced while open"
    )
    database_renewed_at: float | None = None  # Unix time it last was

    def problem(self) -> str | None:
        if self.database_renewed_at is None or time.time() - self.database_renewed_at > RENEWED_SHOWN_S:
            return None
        when = time.strftime("%H:%M:%S", time.localtime(self.database_renewed_at))
        return f"events database removed or replaced while open, at {when}: see the log"


class EventLogSink(Sink):
    """Each event phase into the event store; old events go by retention.

    The database may not be writable for a while (a full disk, until the recorder makes room): the
    events still go out to subscribers, MQTT and webhooks, a line says what was not logged, and the
    store is tried again with the next phase (which carries the whole event)."""

    stats_type = EventLogStats
    stats: EventLogStats

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        super().__init__()
        self.settings, self.stream = settings, stream
        self.last_retention = self.last_seen = 0.0
        self.open: set[str] = set()  # this stage's events not ended yet
        self.interrupted: list[dict] = []  # ended by this start, to be ended for the other outputs too
        self.store: EventStore | None = None
        self._open()

    def _open(self) -> EventStore | None:
        """The store, opened on the first success, when this stream's events a crash left open are ended."""
        if self.store is None:
            store = None
            try:
                store = EventStore(self.settings.events_db)
                self.interrupted = store.interrupt(self.stream.id)
            except sqlite3.Error as error:
                if store is not None:
                    store.close()
                log.warning("%s: events database not open (%s); events still go out", self.stream.id, error)
                return None
            self.store = store
            for event in self.interrupted:  # this stage would never end them otherwise
                log.info("%s: %s was open when the stage last stopped; ended 'interrupted'", self.stream.id,
                         event["event_id"])  # fmt: skip
        return self.store

    def left_open(self) -> tuple[EventMessage, ...]:
        """The ``end`` of each event this start ended ``interrupted``, as the store has it now (the
        clips sink has promised its clip by the first tick)."""
        ended = []
        for found in self.interrupted:
            event = (self.store.event(found["event_id"]) if self.store else None) or found
            evidence = {key: event.get(key) for key in NO_EVIDENCE}
            for name, key in (("snapshot.jpg", "snapshot"), ("clip.mp4", "clip")):
                if evidence[key]:
                    evidence[f"{key}_url"] = self.settings.link(event_file(event["event_id"], name))
                else:
                    evidence[key] = None  # a clip that cannot be cut is stored as ""
            fields = ("event_id", "phase", "track_id", "zones", "require", "missing", "started", "ended")
            fields += ("duration_s", "reason")
            ended.append(EventMessage(stream=self.stream.id, seq=0, captured=event["ended"], box=[],
                                      **{key: event[key] for key in fields}, **evidence))  # fmt: skip
        self.interrupted = []
        return tuple(ended)

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        """While events are open, the store hears so once a second: a crash ends them when last seen."""
        if self.open and self.store is not None and time.monotonic() - self.last_seen >= SEEN_EVERY_S:
            self.last_seen = time.monotonic()
            with contextlib.suppress(sqlite3.Error):  # a full disk: their last phase's time it is
                self.store.seen(self.stream.id, analysis.clock)

    def events(self, events: tuple[EventMessage, ...]) -> None:
        for event in events:
            if event.phase == "end":
                self.open.discard(event.event_id)
            else:
                self.open.add(event.event_id)
            store = self._open()
            try:
                if store is not None:
                    store.record(asdict(event))
            except sqlite3.Error as error:
                log.warning("%s: %s %s not logged (%s)", self.stream.id, event.event_id, event.phase, error)
            if store is not None and store.renewed != self.stats.database_renewed:
                self.stats.database_renewed, self.stats.database_renewed_at = store.renewed, time.time()

    def tick(self) -> None:
        if self.store is not None and time.monotonic() - self.last_retention >= RETENTION_EVERY_S:
            self.last_retention = time.monotonic()
            with contextlib.suppress(sqlite3.Error):  # a full disk: the next tick's try
                self.store.forget(self.stream.id, time.time() - self.settings.recording.max_age_days * 86400)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
