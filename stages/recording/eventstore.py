"""Every violation event of every stream, as the review page lists it, and when it was acknowledged.

One SQLite file beside the recordings (``<recordings>/events.sqlite3``), in WAL mode: each
stream stage writes its own events (one row per event, updated by each phase), the HTTP
server reads them and records acknowledgements and verdicts (``confirmed`` or ``false_alarm``: the
reviewer's word, kept for retraining), all at once and across restarts. A row keeps the first
snapshot (the start's, where the person is seen without their PPE). The same file keeps each
stream's compliance figures per hour (``stages.recording.compliance``), gone with the events.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    day TEXT NOT NULL,             -- local date of the start, YYYY-MM-DD, for the day filter
    zones TEXT NOT NULL,           -- JSON list: the zones that counted against the person, latest
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
    last_seen REAL,                -- an open event's person last seen (the stream's clock): where a crash ends it
    clip_partial TEXT,             -- JSON [from, to]: the span a clip covers when the recording lacked some
    require TEXT,                  -- JSON list: what those zones require
    verdict TEXT,                  -- the reviewer's: confirmed or false_alarm; NULL: none yet
    verdict_at REAL
);
CREATE INDEX IF NOT EXISTS events_by_start ON events (started);
CREATE INDEX IF NOT EXISTS events_by_stream_day ON events (stream, day);
CREATE TABLE IF NOT EXISTS compliance (  -- stages.recording.compliance: what was watched, per hour
    stream TEXT NOT NULL,
    zone TEXT NOT NULL,            -- '': the whole camera
    hour REAL NOT NULL,            -- Unix seconds the hour starts (the stream's clock)
    watched_s REAL NOT NULL DEFAULT 0,
    observed_s REAL NOT NULL DEFAULT 0,
    compliant_s REAL NOT NULL DEFAULT 0,
    violating_s REAL NOT NULL DEFAULT 0,
    vest_yes_s REAL NOT NULL DEFAULT 0,
    vest_no_s REAL NOT NULL DEFAULT 0,
    vest_unknown_s REAL NOT NULL DEFAULT 0,
    hardhat_yes_s REAL NOT NULL DEFAULT 0,
    hardhat_no_s REAL NOT NULL DEFAULT 0,
    hardhat_unknown_s REAL NOT NULL DEFAULT 0,
    people INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, zone, hour)
);
CREATE TABLE IF NOT EXISTS missed (  -- a reviewer's "missed violation here" on a moment of a recording
    stream TEXT NOT NULL,
    at REAL NOT NULL,              -- the moment, on the events' clock
    noted REAL NOT NULL,           -- when it was said, Unix seconds
    PRIMARY KEY (stream, at)
);
CREATE TABLE IF NOT EXISTS footprints (  -- where violators stood: person-seconds per cell of a grid
    stream TEXT NOT NULL,
    hour REAL NOT NULL,
    cell INTEGER NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (stream, hour, cell)
);
"""

UPSERT = """
INSERT INTO events (event_id, stream, day, zones, require, track_id, missing, phase, started, ended, duration_s,
                    reason, snapshot, segment, offset_s, clip)
VALUES (:event_id, :stream, :day, :zones, :require, :track_id, :missing, :phase, :started, :ended, :duration_s,
        :reason, :snapshot, :segment, :offset_s, :clip)
ON CONFLICT (event_id) DO UPDATE SET
    zones = excluded.zones, require = excluded.require, missing = excluded.missing,
    phase = excluded.phase, ended = excluded.ended,
    duration_s = excluded.duration_s, reason = excluded.reason,
    snapshot = coalesce(events.snapshot, excluded.snapshot),
    segment = coalesce(events.segment, excluded.segment),
    offset_s = coalesce(events.offset_s, excluded.offset_s),
    clip = coalesce(excluded.clip, events.clip)
"""

ADDED_COLUMNS = {"last_seen": "REAL", "clip_partial": "TEXT", "require": "TEXT"}
ADDED_COLUMNS |= {"verdict": "TEXT", "verdict_at": "REAL"}
COLUMNS = ("stream", "track_id", "phase", "started", "ended", "duration_s", "reason")
COLUMNS += ("snapshot", "segment", "offset_s", "clip")
LISTS = ("zones", "require", "missing")  # stored as JSON
VERDICTS = ("confirmed", "false_alarm")


@dataclass(frozen=True)
class EventFilter:
    """Which events a listing holds; None: any. ``day`` is the server's date (YYYY-MM-DD), ``since`` and
    ``until`` bound the start in unix seconds (a day of a viewer in another time zone); ``zone`` and
    ``missing`` match one of the event's; ``verdict`` ``none`` is the events without one yet."""

    stream: str | None = None
    day: str | None = None
    since: float | None = None
    until: float | None = None
    zone: str | None = None
    missing: str | None = None
    acknowledged: bool | None = None
    verdict: str | None = None
    open: bool | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition and its arguments (zone and item names hold no quotes: the settings say so)."""
        conditions: list[tuple[str, Any]] = [
            ("stream = ?", self.stream),
            ("day = ?", self.day),
            ("started >= ?", self.since),
            ("started < ?", self.until),
            ("instr(zones, ?) > 0", None if self.zone is None else json.dumps(self.zone)),
            ("instr(missing, ?) > 0", None if self.missing is None else json.dumps(self.missing)),
        ]
        clause, args = "1", []
        for condition, value in conditions:
            if value is not None and value != "":
                clause, args = f"{clause} AND {condition}", [*args, value]
        if self.acknowledged is not None:
            clause += " AND acknowledged IS NOT NULL" if self.acknowledged else " AND acknowledged IS NULL"
        if self.verdict is not None:
            clause += " AND verdict IS NULL" if self.verdict == "none" else " AND verdict = ?"
            args += [] if self.verdict == "none" else [self.verdict]
        if self.open is not None:
            clause += " AND phase != 'end'" if self.open else " AND phase = 'end'"
        return clause, args


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` now (device, inode); None: none."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class EventStore:
    """One connection, shared by the HTTP server's threads under a lock.

    Every use first checks that the file at ``path`` is still the one opened: a database deleted while
    open would otherwise be read and written unseen, and gone with the last process that holds it. One
    removed is written anew from what this connection still reads (no event lost); one replaced (by
    another process's connection that wrote it anew, or a backup put back) is taken, with the events it
    lacks of this connection's added. Either is said in one line and counted in ``renewed``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)  # the recordings folder, on a first start
        self.path = path
        self.lock = threading.Lock()
        self.renewed = 0
        self._connect()

    def _connect(self) -> None:
        self.connection = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self.connection.row_factory = sqlite3.Row
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed event
        self.connection.executescript(SCHEMA)
        self._upgrade()
        self.identity = _identity(self.path)

    def _upgrade(self) -> None:
        """A database an earlier vestwatch wrote, brought to this schema in one transaction (several
        stages open it at once; one that died halfway left it as it was)."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            columns = {row["name"] for row in self.connection.execute("PRAGMA table_info(events)")}
            if "zone" in columns:  # from before one event per person: its zone, a list of one
                self.connection.execute("ALTER TABLE events RENAME COLUMN zone TO zones")
                self.connection.execute("""UPDATE events SET zones = '["' || zones || '"]' WHERE zones NOT LIKE '[%'""")
            for column, kind in ADDED_COLUMNS.items():  # from before they were kept
                if column not in columns:
                    self.connection.execute(f"ALTER TABLE events ADD COLUMN {column} {kind}")
            self.connection.execute("COMMIT")
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise

    def _current(self) -> sqlite3.Connection:
        """The connection to the database at ``path`` now (under ``lock``)."""
        if _identity(self.path) == self.identity:
            return self.connection
        mine = self.connection.execute("SELECT * FROM events").fetchall()
        replaced = self.path.exists()
        log.warning("events database %s was %s while open; %s with the %d events this process still reads",
                    self.path, "replaced" if replaced else "removed", "taking the new one" if replaced
                    else "writing it anew", len(mine))  # fmt: skip
        if not replaced:
            self._write_anew()
        self.connection.close()
        self._connect()
        if replaced and mine:  # another process's connection wrote it anew, or a backup was put back
            columns = ", ".join(mine[0].keys())
            marks = ", ".join("?" * len(mine[0].keys()))
            self.connection.executemany(f"INSERT OR IGNORE INTO events ({columns}) VALUES ({marks})", mine)
        self.renewed += 1
        return self.connection

    def _write_anew(self) -> None:
        """The removed database written again at ``path`` from this connection's view of it."""
        restored = self.path.with_name(self.path.name + ".restoring")
        target = sqlite3.connect(restored)
        try:
            self.connection.backup(target)
        finally:
            target.close()
        try:
            for stale in ("-wal", "-shm"):  # the removed database's: never to be replayed into the new one
                self.path.with_name(self.path.name + stale).unlink(missing_ok=True)
            os.replace(restored, self.path)
        except OSError as error:  # the callers handle the database's own errors
            raise sqlite3.OperationalError(f"cannot write {self.path} anew: {error}") from error

    def record(self, event: dict[str, Any]) -> None:
        """One phase of an event (an ``event.<stream>`` message's fields)."""
        row = {key: event.get(key) for key in ("event_id", *COLUMNS)}
        row.update({key: json.dumps(event.get(key) or []) for key in LISTS})
        row["day"] = datetime.fromtimestamp(event["started"]).strftime("%Y-%m-%d")
        with self.lock:
            self._current().execute(UPSERT, row)

    def events(self, which: EventFilter = EventFilter(), limit: int = 200, offset: int = 0) -> list[dict[str, Any]]:
        """The events ``which`` holds, newest first, ``limit`` of them from the ``offset``-th."""
        clause, args = which.where()
        query = f"SELECT * FROM events WHERE {clause} ORDER BY started DESC, event_id LIMIT ? OFFSET ?"
        with self.lock:
            rows = self._current().execute(query, [*args, limit, offset]).fetchall()
        return [_event(row) for row in rows]

    def count(self, which: EventFilter = EventFilter()) -> int:
        """How many events ``which`` holds."""
        clause, args = which.where()
        with self.lock:
            return self._current().execute(f"SELECT count(*) FROM events WHERE {clause}", args).fetchone()[0]

    def event(self, event_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self._current().execute("SELECT * FROM events WHERE event_id = ?", [event_id]).fetchone()
        return _event(row) if row else None

    def acknowledge(self, event_id: str, when: float | None = None) -> bool:
        """Mark an event seen; False when there is no such event. The first acknowledgement's time stays."""
        return self.acknowledge_all([event_id], when) == 1

    def acknowledge_all(self, event_ids: list[str], when: float | None = None) -> int:
        """Mark events seen (the first acknowledgement's time stays); how many of them there were."""
        when = time.time() if when is None else when
        with self.lock:
            cursor = self._current().executemany(
                "UPDATE events SET acknowledged = coalesce(acknowledged, ?) WHERE event_id = ?",
                [(when, event_id) for event_id in event_ids],
            )
        return cursor.rowcount

    def acknowledge_stream(self, stream: str, when: float | None = None) -> int:
        """Mark every event of a stream not yet seen, open ones included (Home Assistant's button)."""
        when = time.time() if when is None else when
        with self.lock:
            cursor = self._current().execute(
                "UPDATE events SET acknowledged = ? WHERE stream = ? AND acknowledged IS NULL", [when, stream]
            )
        return cursor.rowcount

    def judge(self, event_id: str, verdict: str | None, when: float | None = None) -> bool:
        """The reviewer's verdict (one of ``VERDICTS``, or None to take it back); a verdict also
        acknowledges. False when there is no such event."""
        if verdict is not None and verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is none of {', '.join(VERDICTS)}")
        when = time.time() if when is None else when
        with self.lock:
            cursor = self._current().execute(
                "UPDATE events SET verdict = ?, verdict_at = ?, acknowledged = coalesce(acknowledged, ?) "
                "WHERE event_id = ?",
                [verdict, when if verdict else None, when, event_id],
            )
        return cursor.rowcount == 1

    def seen(self, stream: str, clock: float) -> None:
        """A stream's open events are still open at ``clock``: a crash after this ends them no earlier."""
        with self.lock:
            self._current().execute(
                "UPDATE events SET last_seen = ? WHERE stream = ? AND phase != 'end'", [clock, stream]
            )

    def interrupt(self, stream: str) -> list[dict[str, Any]]:
        """End a stream's events left open (its stage crashed or was killed): reason ``interrupted``,
        ``ended`` when they were last known open (their last update, or later when last seen). Returns
        them as ended."""
        with self.lock:
            open_ = "FROM events WHERE stream = ? AND phase != 'end'"
            ids = [row["event_id"] for row in self._current().execute(f"SELECT event_id {open_}", [stream])]
            self._current().execute(f"UPDATE events SET phase = 'end', reason = 'interrupted', "
                                    f"ended = max(started + coalesce(duration_s, 0), coalesce(last_seen, 0)), "
                                    f"duration_s = max(coalesce(duration_s, 0), coalesce(last_seen, 0) - started) "
                                    f"WHERE event_id IN (SELECT event_id {open_})", [stream])  # fmt: skip
        return [event for event_id in ids if (event := self.event(event_id)) is not None]

    def promise_clip(self, event_id: str, path: str) -> None:
        """Where the event's clip is (or will be, once cut); an empty path: it never will be."""
        with self.lock:
            self._current().execute("UPDATE events SET clip = ? WHERE event_id = ?", [path, event_id])

    def clip_partial(self, event_id: str, covered: tuple[float, float]) -> None:
        """The event's clip covers only ``covered`` (clock from, to) of its span: the recording lacked the rest."""
        with self.lock:
            self._current().execute(
                "UPDATE events SET clip_partial = ? WHERE event_id = ?", [json.dumps(list(covered)), event_id]
            )

    def forget(self, stream: str, before: float) -> int:
        """Retention: drop a stream's events that started before ``before``, and its compliance figures
        of the hours before it; how many events."""
        with self.lock:
            connection = self._current()
            cursor = connection.execute("DELETE FROM events WHERE stream = ? AND started < ?", [stream, before])
            for table in ("compliance", "footprints"):
                connection.execute(f"DELETE FROM {table} WHERE stream = ? AND hour < ?", [stream, before - 3600])
            connection.execute("DELETE FROM missed WHERE stream = ? AND at < ?", [stream, before])
        return cursor.rowcount

    def note_missed(self, stream: str, at: float) -> None:
        """A reviewer saw a violation the model did not raise at ``at`` of the stream's recording."""
        with self.lock:
            self._current().execute("INSERT OR IGNORE INTO missed (stream, at, noted) VALUES (?, ?, ?)",
                                    [stream, at, time.time()])  # fmt: skip

    def query(self, sql: str, args: list[Any] | tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows of a read of any table (the compliance figures read their own)."""
        with self.lock:
            return self._current().execute(sql, args).fetchall()

    def write(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """Several statements, each with its rows, in one transaction: all of them or none."""
        with self.lock:
            connection = self._current()
            connection.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    connection.executemany(sql, rows)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.connection.close()


def _event(row: sqlite3.Row) -> dict[str, Any]:
    event = dict(row)
    event.update({key: json.loads(event[key] or "[]") for key in LISTS})
    event["clip_partial"] = json.loads(event["clip_partial"]) if event.get("clip_partial") else None
    return event
