"""The ``eventlog`` sink: each event phase into the event store the review page reads."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from dataclasses import asdict

from stages.config import Settings, StreamSettings
from stages.recording.eventstore import EventStore
from stages.stream.messages import EventMessage
from stages.stream.outputs.base import Sink

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 60.0  # old events are looked for once a minute


class EventLogSink(Sink):
    """Each event phase into the event store; old events go by retention.

    The database may not be writable for a while (a full disk, until the recorder makes room): the
    events still go out to subscribers, MQTT and webhooks, a line says what was not logged, and the
    store is tried again with the next phase (which carries the whole event)."""

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        super().__init__()
        self.settings, self.stream = settings, stream
        self.last_retention = 0.0
        self.store: EventStore | None = None
        self._open()

    def _open(self) -> EventStore | None:
        """The store, opened on the first success, when this stream's events a crash left open are ended."""
        if self.store is None:
            store = None
            try:
                store = EventStore(self.settings.events_db)
                interrupted = store.interrupt(self.stream.id)
            except sqlite3.Error as error:
                if store is not None:
                    store.close()
                log.warning("%s: events database not open (%s); events still go out", self.stream.id, error)
                return None
            self.store = store
            for event_id in interrupted:  # this stage would never end them otherwise
                log.info("%s: %s was open when the stage last stopped; ended 'interrupted'", self.stream.id, event_id)
        return self.store

    def events(self, events: tuple[EventMessage, ...]) -> None:
        for event in events:
            store = self._open()
            try:
                if store is not None:
                    store.record(asdict(event))
            except sqlite3.Error as error:
                log.warning("%s: %s %s not logged (%s)", self.stream.id, event.event_id, event.phase, error)

    def tick(self) -> None:
        if self.store is not None and time.monotonic() - self.last_retention >= RETENTION_EVERY_S:
            self.last_retention = time.monotonic()
            with contextlib.suppress(sqlite3.Error):  # a full disk: the next tick's try
                self.store.forget(self.stream.id, time.time() - self.settings.recording.max_age_days * 86400)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
