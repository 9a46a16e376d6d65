"""Every violation event of every stream, as the review page lists it, and when it was acknowledged.

One SQLite file beside the recordings (``<recordings>/events.sqlite3``), in WAL mode: each
stream stage writes its own events (one row per event, updated by each phase), the HTTP
server reads them and records acknowledgements, all at once and across restarts. A row
keeps the first snapshot (the start's, where the person is seen without their PPE).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    day TEXT NOT NULL,             -- local date of the start, YYYY-MM-DD, for the day filter
    zone TEXT NOT NULL,
    track_id INTEGER NOT NULL,
    missing TEXT NOT NULL,         -- JSON list
    phase TEXT NOT NULL,           -- the latest: start, update or end
    started REAL NOT NULL,
    ended REAL,
    duration_s REAL NOT NULL,
    reason TEXT,
    snapshot TEXT,
    segment TEXT,
    offset_s REAL,
    clip TEXT,
    acknowledged REAL,             -- when, Unix seconds; NULL: not yet
    last_seen REAL                 -- an open event's person last seen (the stream's clock): where a crash ends it
);
CREATE INDEX IF NOT EXISTS events_by_start ON events (started);
CREATE INDEX IF NOT EXISTS events_by_stream_day ON events (stream, day);
"""

UPSERT = """
INSERT INTO events (event_id, stream, day, zone, track_id, missing, phase, started, ended, duration_s,
                    reason, snapshot, segment, offset_s, clip)
VALUES (:event_id, :stream, :day, :zone, :track_id, :missing, :phase, :started, :ended, :duration_s,
        :reason, :snapshot, :segment, :offset_s, :clip)
ON CONFLICT (event_id) DO UPDATE SET
    missing = excluded.missing, phase = excluded.phase, ended = excluded.ended,
    duration_s = excluded.duration_s, reason = excluded.reason,
    snapshot = coalesce(events.snapshot, excluded.snapshot),
    segment = coalesce(events.segment, excluded.segment),
    offset_s = coalesce(events.offset_s, excluded.offset_s),
    clip = coalesce(excluded.clip, events.clip)
"""

COLUMNS = ("stream", "zone", "track_id", "phase", "started", "ended", "duration_s", "reason")
COLUMNS += ("snapshot", "segment", "offset_s", "clip")


class EventStore:
    """One connection, shared by the HTTP server's threads under a lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)  # the recordings folder, on a first start
        self.lock = threading.Lock()
        self.connection = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self.connection.row_factory = sqlite3.Row
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed event
        self.connection.executescript(SCHEMA)
        columns = {row["name"] for row in self.connection.execute("PRAGMA table_info(events)")}
        if "last_seen" not in columns:  # a database from before it was kept
            self.connection.execute("ALTER TABLE events ADD COLUMN last_seen REAL")

    def record(self, event: dict[str, Any]) -> None:
        """One phase of an event (an ``event.<stream>`` message's fields)."""
        row = {key: event.get(key) for key in ("event_id", *COLUMNS)}
        row.update(
            missing=json.dumps(event["missing"]), day=datetime.fromtimestamp(event["started"]).strftime("%Y-%m-%d")
        )
        with self.lock:
            self.connection.execute(UPSERT, row)

    def events(
        self,
        stream: str | None = None,
        day: str | None = None,
        limit: int = 200,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first, optionally of one stream, one day of the server's (YYYY-MM-DD), and started
        in [since, until) (unix seconds: a day of the viewer's, who may be in another time zone)."""
        query, args = "SELECT * FROM events WHERE 1", []
        for condition, value in (
            ("stream = ?", stream),
            ("day = ?", day),
            ("started >= ?", since),
            ("started < ?", until),
        ):
            if value is not None and value != "":
                query, args = f"{query} AND {condition}", [*args, value]
        with self.lock:
            rows = self.connection.execute(query + " ORDER BY started DESC LIMIT ?", [*args, limit]).fetchall()
        return [_event(row) for row in rows]

    def event(self, event_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.connection.execute("SELECT * FROM events WHERE event_id = ?", [event_id]).fetchone()
        return _event(row) if row else None

    def acknowledge(self, event_id: str, when: float | None = None) -> bool:
        """Mark an event seen; False when there is no such event. The first acknowledgement's time stays."""
        when = time.time() if when is None else when
        with self.lock:
            cursor = self.connection.execute(
                "UPDATE events SET acknowledged = coalesce(acknowledged, ?) WHERE event_id = ?", [when, event_id]
            )
        return cursor.rowcount == 1

    def seen(self, stream: str, clock: float) -> None:
        """A stream's open events are still open at ``clock``: a crash after this ends them no earlier."""
        with self.lock:
            self.connection.execute(
                "UPDATE events SET last_seen = ? WHERE stream = ? AND phase != 'end'", [clock, stream]
            )

    def interrupt(self, stream: str) -> list[dict[str, Any]]:
        """End a stream's events left open (its stage crashed or was killed): reason ``interrupted``,
        ``ended`` when they were last known open (their last update, or later when last seen). Returns
        them as ended."""
        with self.lock:
            open_ = "FROM events WHERE stream = ? AND phase != 'end'"
            ids = [row["event_id"] for row in self.connection.execute(f"SELECT event_id {open_}", [stream])]
            self.connection.execute(f"UPDATE events SET phase = 'end', reason = 'interrupted', "
                                    f"ended = max(started + coalesce(duration_s, 0), coalesce(last_seen, 0)), "
                                    f"duration_s = max(coalesce(duration_s, 0), coalesce(last_seen, 0) - started) "
                                    f"WHERE event_id IN (SELECT event_id {open_})", [stream])  # fmt: skip
        return [event for event_id in ids if (event := self.event(event_id)) is not None]

    def promise_clip(self, event_id: str, path: str) -> None:
        """Where the event's clip is (or will be, once cut); an empty path: it never will be."""
        with self.lock:
            self.connection.execute("UPDATE events SET clip = ? WHERE event_id = ?", [path, event_id])

    def forget(self, stream: str, before: float) -> int:
        """Retention: drop a stream's events that started before ``before``."""
        with self.lock:
            cursor = self.connection.execute("DELETE FROM events WHERE stream = ? AND started < ?", [stream, before])
        return cursor.rowcount

    def close(self) -> None:
        self.connection.close()


def _event(row: sqlite3.Row) -> dict[str, Any]:
    event = dict(row)
    event["missing"] = json.loads(event["missing"])
    return event
