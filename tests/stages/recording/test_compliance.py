"""Compliance figures: what the ``compliance`` sink counts from analysed frames, what the database keeps
across flushes and restarts, and the report API that sums it by camera, zone, hour and day."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.web import Request
from stages.config import Settings
from stages.recording.compliance import GRID, figures, footprints
from stages.recording.eventstore import EventStore
from stages.stream.analysis import FrameAnalysis, Person
from stages.stream.outputs.compliance import FLUSH_EVERY_S, ComplianceSink
from stages.web.compliance import ComplianceApi

HOUR0 = 1_700_002_800.0  # an hour's start (UTC-aligned)
FPS = 10
ZONES = [{"name": "site", "require": ["vest"]}, {"name": "scaffold", "require": ["vest", "hardhat"],
                                                   "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}]  # fmt: skip
TICK = 1.5 / FPS  # within a frame's interval
EMPTY = Detections(np.zeros((0, 4)), [], [])


def settings_in(folder: Path, lost_s: float = 1.0) -> Settings:
    return Settings(
        recordings_dir=folder / "rec",
        runtime_dir=folder / "run",
        events={"lost_s": lost_s},
        streams=[{"id": "gate", "url": "demo", "zones": ZONES}],
    )


def frame(seq: int, clock: float, *people: Person) -> FrameAnalysis:
    return FrameAnalysis("gate", seq, clock, None, 640, 360, EMPTY, ["person"], people=list(people))


def worker(track_id: int, vest: str, hardhat: str, zones: list[str], x: float = 100) -> Person:
    return Person(track_id, [x - 20, 100, x + 20, 300], 0.9, vest=vest, hardhat=hardhat, zones=zones)


def play(sink: ComplianceSink, start: float, seconds: float, people: dict[int, tuple[float, float, Person]]) -> None:
    """``seconds`` of frames at ``FPS`` from ``start``; each person in view over their (from, to) seconds."""
    for i in range(round(seconds * FPS) + 1):
        t = i / FPS
        shown = [person for since, until, person in people.values() if since <= t <= until]
        sink.handle(None, frame(i + 1, start + t, *shown))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_in(tmp_path)


def test_person_seconds_are_counted_per_camera_and_zone_by_what_each_zone_requires(settings: Settings) -> None:
    sink = ComplianceSink(settings, settings.streams[0])
    compliant = worker(1, "yes", "yes", ["site", "scaffold"])  # in view all 10 s
    no_vest = worker(2, "no", "unknown", ["site"], x=500)  # 0-4 s, right half: outside the scaffold
    no_hardhat = worker(3, "yes", "no", ["site", "scaffold"], x=200)  # 5-7 s
    play(sink, HOUR0 + 60, 10, {1: (0, 10, compliant), 2: (0, 4, no_vest), 3: (5, 7, no_hardhat)})
    sink.close()
    # a frame's interval goes to those in it: a person who comes in mid-clip gets a frame's worth more

    store = EventStore(settings.events_db)
    camera = figures(store, HOUR0, HOUR0 + 3600, "camera")["rows"]
    assert [row["stream"] for row in camera] == ["gate"]
    row = camera[0]
    assert row["watched_s"] == pytest.approx(10.0, abs=TICK)
    assert row["observed_s"] == pytest.approx(10 + 4 + 2, abs=TICK)
    assert row["compliant_s"] == pytest.approx(10, abs=TICK)
    assert row["violating_s"] == pytest.approx(4 + 2, abs=TICK)  # the no-hardhat worker stands in the scaffold
    assert (row["vest_yes_s"], row["vest_no_s"]) == pytest.approx((12, 4), abs=TICK)
    assert (row["hardhat_yes_s"], row["hardhat_no_s"], row["hardhat_unknown_s"]) == pytest.approx((10, 2, 4), abs=TICK)
    assert row["people"] == 3
    assert row["compliance"] == pytest.approx(row["compliant_s"] / (row["compliant_s"] + row["violating_s"]), abs=1e-3)

    zones = {row["zone"]: row for row in figures(store, HOUR0, HOUR0 + 3600, "zone")["rows"]}
    assert zones["site"]["compliant_s"] == pytest.approx(12, abs=TICK)  # the site asks only for a vest
    assert zones["site"]["violating_s"] == pytest.approx(4, abs=TICK)
    assert zones["scaffold"]["compliant_s"] == pytest.approx(10, abs=TICK)
    assert zones["scaffold"]["violating_s"] == pytest.approx(2, abs=TICK)
    assert zones["scaffold"]["people"] == 2

    cells = footprints(store, HOUR0, HOUR0 + 3600, "gate")
    assert cells["grid"] == list(GRID)
    spots = {i: s for i, s in enumerate(cells["cells"]) if s}
    at = {(x * GRID[0] // 640) + (300 * GRID[1] // 360) * GRID[0]: s for x, s in ((500, 4.0), (200, 2.0))}
    assert spots == pytest.approx(at, abs=TICK), "violators' feet, where they stood"


def test_figures_of_an_hour_are_added_to_across_flushes_and_restarts(settings: Settings) -> None:
    """A flush adds into the hour's row; a stage started again (a crash, a reload) adds to the same rows."""
    for start in (HOUR0, HOUR0 + 100):
        sink = ComplianceSink(settings, settings.streams[0])
        play(sink, start, 5, {1: (0, 5, worker(1, "no", "yes", ["site"]))})
        sink.flush()  # the minute's flush
        play(sink, start + 50, 5, {1: (0, 5, worker(1, "no", "yes", ["site"]))})
        sink.close()
    store = EventStore(settings.events_db)
    row = figures(store, HOUR0, HOUR0 + 3600, "camera")["total"]
    assert row["violating_s"] == pytest.approx(20, abs=0.01)
    assert row["compliance"] == 0
    assert row["people"] == 2, "each start sees the track anew; within one the same track counts once"


def test_a_gap_longer_than_lost_s_is_not_watched_and_an_hour_boundary_splits_the_rows_not_the_people(
    settings: Settings,
) -> None:
    sink = ComplianceSink(settings, settings.streams[0])
    person = worker(1, "yes", "yes", ["site"])
    sink.handle(None, frame(1, HOUR0 - 2.0, person))
    sink.handle(None, frame(2, HOUR0 - 1.5, person))  # 0.5 s, the hour before
    sink.handle(None, frame(3, HOUR0 + 0.5, person))  # 2 s later: more than lost_s, not watched
    sink.handle(None, frame(4, HOUR0 + 1.0, person))  # 0.5 s, this hour
    sink.handle(None, frame(0, HOUR0 + 2.0))  # no results for a while (the stage's empty frame)
    sink.handle(None, frame(5, HOUR0 + 2.2, person))  # the first results again: nothing before it counts
    sink.close()
    store = EventStore(settings.events_db)
    rows = figures(store, HOUR0 - 3600, HOUR0 + 3600, "hour")["rows"]
    assert [(row["hour"], row["watched_s"], row["observed_s"], row["people"]) for row in rows] == [
        (HOUR0 - 3600, 0.5, 0.5, 1),
        (HOUR0, 0.5, 0.5, 0),  # counted in the hour they came: the hours add up to the people
    ]


def test_the_database_refusing_keeps_the_figures_for_the_next_flush(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    settings.events_db.mkdir(parents=True)  # a folder where the database should be: it cannot be opened
    sink = ComplianceSink(settings, settings.streams[0])
    play(sink, HOUR0, 3, {1: (0, 3, worker(1, "yes", "yes", ["site"]))})
    sink.flush()
    assert sink.stats.unsaved_s == pytest.approx(3.0, abs=0.01)
    settings.events_db.rmdir()
    sink.close()
    row = figures(EventStore(settings.events_db), HOUR0, HOUR0 + 3600, "camera")["total"]
    assert row["compliant_s"] == pytest.approx(3.0, abs=0.01)
    assert sink.stats.unsaved_s == 0


def recorded(store: EventStore, event_id: str, started: float, duration_s: float, **fields: object) -> None:
    base = {"stream": "gate", "track_id": 1, "zones": ["site"], "require": ["vest"], "missing": ["vest"]}
    store.record({**base, "event_id": event_id, "phase": "end", "started": started, "duration_s": duration_s,
                  "reason": "complied", **fields})  # fmt: skip


def test_violations_come_from_the_events_and_false_alarms_are_counted_apart(settings: Settings) -> None:
    store = EventStore(settings.events_db)
    recorded(store, "a", HOUR0 + 10, 4.0, zones=["site", "scaffold"])
    recorded(store, "b", HOUR0 + 20, 10.0, reason="left")
    recorded(store, "c", HOUR0 + 30, 6.0)
    recorded(store, "d", HOUR0 + 40, 99.0)
    store.judge("d", "false_alarm")
    recorded(store, "e", HOUR0 + 3600 + 5, 1.0, stream="yard")
    report = figures(store, HOUR0, HOUR0 + 3600, "camera")
    (gate,) = report["rows"]
    assert (gate["violations"], gate["false_alarms"], gate["violation_s"]) == (3, 1, 20.0)
    assert gate["violation_median_s"] == 6.0
    assert gate["comply_median_s"] == 5.0  # a and c ended complied
    assert gate["compliance"] is None, "no figures, only events (the stage died before a flush)"
    zones = {row["zone"]: row["violations"] for row in figures(store, HOUR0, HOUR0 + 3600, "zone")["rows"]}
    assert zones == {"site": 3, "scaffold": 1}
    every_camera = figures(store, HOUR0, HOUR0 + 7200, "camera")
    assert every_camera["total"]["violations"] == 4
    assert [row["stream"] for row in every_camera["rows"]] == ["gate", "yard"]
    assert figures(store, HOUR0, HOUR0 + 7200, "camera", stream="yard")["total"]["violations"] == 1


def test_retention_drops_old_hours_with_old_events(settings: Settings) -> None:
    sink = ComplianceSink(settings, settings.streams[0])
    play(sink, HOUR0, 2, {1: (0, 2, worker(1, "no", "yes", ["site"]))})
    play(sink, HOUR0 + 7200, 2, {1: (0, 2, worker(1, "no", "yes", ["site"]))})
    sink.close()
    store = EventStore(settings.events_db)
    store.forget("gate", HOUR0 + 7200)
    assert [row["hour"] for row in figures(store, 0, HOUR0 + 9999, "hour")["rows"]] == [HOUR0 + 7200]
    assert sum(footprints(store, 0, HOUR0 + 9999, "gate")["cells"]) == pytest.approx(2.0, abs=0.01)


def ask(api: ComplianceApi, path: str, **query: str) -> tuple[int, str, bytes]:
    route = api.report if path == "/api/compliance" else api.footprints
    status, kind, body = route(Request("GET", path, query))
    assert isinstance(body, bytes)
    return status, kind, body


def test_the_api_groups_by_day_gives_csv_and_says_what_is_wrong_with_a_query(settings: Settings) -> None:
    sink = ComplianceSink(settings, settings.streams[0])
    play(sink, HOUR0, 4, {1: (0, 2, worker(1, "yes", "yes", ["site"])), 2: (2, 4, worker(2, "no", "no", ["site"]))})
    sink.close()
    api = ComplianceApi(EventStore(settings.events_db))
    status, _, body = ask(api, "/api/compliance", group="day", **{"from": str(HOUR0), "to": str(HOUR0 + 86400)})
    assert status == 200
    (day,) = json.loads(body)["rows"]
    assert day["compliance"] == pytest.approx(0.5, abs=0.03)
    status, kind, body = ask(
        api, "/api/compliance", group="zone", format="csv", **{"from": str(HOUR0), "to": str(HOUR0 + 60)}
    )
    assert (status, kind) == (200, "text/csv; charset=utf-8")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(row["stream"], row["zone"]) for row in rows] == [("gate", "site")]
    assert float(rows[0]["observed_s"]) == pytest.approx(4.0, abs=0.15)
    for query, error in [
        ({"group": "week"}, "group 'week' is none of camera, zone, hour, day"),
        ({"format": "pdf"}, "format 'pdf' is neither json nor csv"),
        ({"from": "soon"}, "from 'soon' is not a number"),
        ({"from": "2026-12-05", "to": "2026-12-01"}, "from must be before to"),
    ]:
        status, _, body = ask(api, "/api/compliance", **query)
        assert status == 400 and error in json.loads(body)["error"], (query, body)
    status, _, body = ask(api, "/api/compliance/footprints")
    assert status == 400 and "stream" in json.loads(body)["error"]


def test_the_sink_stores_its_figures_once_a_minute_while_running(settings: Settings) -> None:
    """What a crash (SIGKILL: no ``close``) loses is the figures since the last minute's flush."""
    sink = ComplianceSink(settings, settings.streams[0])
    play(sink, HOUR0, 3, {1: (0, 3, worker(1, "yes", "yes", ["site"]))})
    sink.tick()
    store = EventStore(settings.events_db)
    assert figures(store, HOUR0, HOUR0 + 3600, "camera")["rows"] == [], "not yet: a minute has not passed"
    sink.flushed -= FLUSH_EVERY_S
    sink.tick()
    assert figures(store, HOUR0, HOUR0 + 3600, "camera")["total"]["observed_s"] == pytest.approx(3.0, abs=TICK)
    assert sink.stats.flushes == 1


def test_a_false_alarms_time_counts_as_compliant(settings: Settings) -> None:
    """The reviewer saw the PPE worn: the seconds the model counted against the person are given back."""
    sink = ComplianceSink(settings, settings.streams[0])
    play(sink, HOUR0, 10, {1: (0, 10, worker(1, "no", "yes", ["site"]))})
    sink.close()
    store = EventStore(settings.events_db)
    recorded(store, "judged", HOUR0 + 1, 4.0)
    before = figures(store, HOUR0, HOUR0 + 3600, "camera")["total"]
    store.judge("judged", "false_alarm")
    after = figures(store, HOUR0, HOUR0 + 3600, "camera")["total"]
    assert (before["violations"], after["violations"], after["false_alarms"]) == (1, 0, 1)
    assert after["violating_s"] == pytest.approx(before["violating_s"] - 4.0, abs=0.05)
    assert after["compliant_s"] == pytest.approx(before["compliant_s"] + 4.0, abs=0.05)
