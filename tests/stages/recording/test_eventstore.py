"""The events database as the review page queries it: filters, pages, verdicts, bulk acknowledgement,
and a database written before one event per person."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pipeline.web import Request
from stages.config import Settings
from stages.recording.eventstore import EventFilter, EventStore
from stages.web.review import ReviewApi

T0 = 1_700_000_000.0


def recorded(store: EventStore, event_id: str, started: float, **fields: object) -> None:
    base = {"stream": "gate", "track_id": 1, "zones": ["site"], "require": ["vest"], "missing": ["vest"]}
    store.record({**base, "event_id": event_id, "phase": "end", "started": started, "duration_s": 3.0, **fields})


@pytest.fixture
def api(tmp_path: Path) -> ReviewApi:
    review = ReviewApi(Settings(recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run"))
    store = review.store
    recorded(store, "a", T0, zones=["site", "scaffold"], require=["vest", "hardhat"], missing=["vest", "hardhat"])
    recorded(store, "b", T0 + 10, stream="yard")
    recorded(store, "c", T0 + 20, zones=["scaffold"], require=["hardhat"], missing=["hardhat"], phase="start")
    for i in range(7):
        recorded(store, f"old-{i}", T0 - 100 - i)
    return review


def listing(review: ReviewApi, **query: str) -> tuple[int, dict]:
    status, _, body = review.list(Request("GET", "/api/events", query))
    return status, json.loads(body)


def ids(review: ReviewApi, **query: str) -> list[str]:
    status, body = listing(review, **query)
    assert status == 200, body
    return [e["event_id"] for e in body["events"]]


def post(review: ReviewApi, path: str, body: object, content_type: str = "application/json") -> tuple[int, dict]:
    route = review.routes()[f"POST {path}" if path == "/api/events/ack" else "POST /api/events/"]
    status, _, reply = route(Request("POST", path, {}, json.dumps(body).encode(), content_type))
    return status, json.loads(reply)


def test_filters_by_camera_zone_missing_item_state_and_time(api: ReviewApi) -> None:
    assert ids(api, stream="yard") == ["b"]
    assert ids(api, zone="scaffold") == ["c", "a"], "an event in two zones is found by either"
    assert ids(api, zone="site", missing="hardhat") == ["a"]
    assert ids(api, open="yes") == ["c"] and "c" not in ids(api, open="no")
    assert ids(api, since=str(T0), until=str(T0 + 20)) == ["b", "a"]
    (a,) = [e for e in listing(api, zone="scaffold", missing="vest")[1]["events"]]
    assert (a["zones"], a["require"], a["missing"]) == (["site", "scaffold"], ["vest", "hardhat"], ["vest", "hardhat"])


def test_pages_carry_the_total_and_do_not_overlap(api: ReviewApi) -> None:
    status, first = listing(api, limit="4")
    assert status == 200 and first["total"] == 10 and len(first["events"]) == 4
    _, second = listing(api, limit="4", offset="4")
    _, last = listing(api, limit="4", offset="8")
    pages = [e["event_id"] for page in (first, second, last) for e in page["events"]]
    assert pages == ["c", "b", "a", *[f"old-{i}" for i in range(7)]], "newest first, each once"
    assert listing(api, stream="gate", limit="2")[1]["total"] == 9, "the total is of the filter, not the page"


def test_acknowledge_the_shown_and_give_verdicts(api: ReviewApi) -> None:
    assert ids(api, acknowledged="no")[:3] == ["c", "b", "a"]
    assert post(api, "/api/events/ack", {"ids": ["a", "b", "nope"]}) == (200, {"acknowledged": 2})
    assert ids(api, acknowledged="yes") == ["b", "a"]
    status, judged = post(api, "/api/events/c/verdict", {"verdict": "false_alarm"})
    assert status == 200 and judged["verdict"] == "false_alarm" and judged["acknowledged"], "a verdict is a look"
    assert post(api, "/api/events/a/verdict", {"verdict": "confirmed"})[0] == 200
    assert ids(api, verdict="false_alarm") == ["c"] and ids(api, verdict="confirmed") == ["a"]
    assert "a" not in ids(api, verdict="none") and "b" in ids(api, verdict="none")
    status, taken_back = post(api, "/api/events/a/verdict", {"verdict": None})
    assert status == 200 and taken_back["verdict"] is None and taken_back["verdict_at"] is None


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "error"),
    [
        ("/api/events/a/verdict", {"verdict": "maybe"}, "application/json", 400, "verdict 'maybe'"),
        ("/api/events/nope/verdict", {"verdict": "confirmed"}, "application/json", 404, "no such event"),
        ("/api/events/ack", {"ids": "a"}, "application/json", 400, 'send {"ids"'),
        ("/api/events/ack", ["a"], "application/json", 400, "not a JSON object"),
        ("/api/events/ack", {"ids": ["a"]}, "text/plain", 415, "Content-Type"),
        ("/api/events/a/delete", {}, "application/json", 404, "not found"),
    ],
)
def test_bad_requests_say_what_is_wrong(
    api: ReviewApi, path: str, body: object, content_type: str, status: int, error: str
) -> None:
    got, reply = post(api, path, body, content_type)
    assert got == status and error in reply["error"], reply


@pytest.mark.parametrize(("key", "value"), [("acknowledged", "maybe"), ("open", "1"), ("verdict", "wrong")])
def test_bad_filters_say_which(api: ReviewApi, key: str, value: str) -> None:
    status, body = listing(api, **{key: value})
    assert status == 400 and body["error"].startswith(f"{key} {value!r}")


def test_a_database_of_one_zone_per_event_is_read_with_its_zone_as_a_list(tmp_path: Path) -> None:
    """Written by a vestwatch before version 3 of the schema: its events keep their zone, and new ones
    are written beside them."""
    path = tmp_path / "events.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE events (event_id TEXT PRIMARY KEY, stream TEXT NOT NULL, day TEXT NOT NULL, zone TEXT NOT NULL,"
        " track_id INTEGER NOT NULL, missing TEXT NOT NULL, phase TEXT NOT NULL, started REAL NOT NULL, ended REAL,"
        " duration_s REAL NOT NULL, reason TEXT, snapshot TEXT, segment TEXT, offset_s REAL, clip TEXT,"
        " acknowledged REAL);"
        "INSERT INTO events VALUES ('gate-1-7-pit', 'gate', '2023-11-14', 'pit', 7, '[\"vest\"]', 'end', 1700000000,"
        " 1700000005, 5, 'left', NULL, NULL, NULL, NULL, NULL);"
    )
    old.close()
    store = EventStore(path)
    recorded(store, "gate-2-8", T0 + 1)
    assert [(e["event_id"], e["zones"]) for e in store.events()] == [("gate-2-8", ["site"]), ("gate-1-7-pit", ["pit"])]
    assert store.events(EventFilter(zone="pit"))[0]["require"] == [], "not known then"
    store.close()
