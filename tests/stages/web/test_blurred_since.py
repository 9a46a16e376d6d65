"""Blur turned on does not vouch for what was recorded before: real segments and snapshots from before the
daemon started with ``[privacy]`` stay on the server, those made since are served, and the note of since
when survives restarts and is reset when what is blurred changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.httpauth import hash_secret
from pipeline.web import Request
from stages.config import Settings
from stages.recording.blurring import note_blurring
from stages.recording.eventstore import EventStore
from stages.recording.paths import privacy_note, with_faces
from stages.web.recordings import RecordingsApi
from stages.web.review import ReviewApi
from tests.stages.web.test_recordings import T0, record

BLURRED_AT = T0 + 20  # the daemon restarted with blur set, between the two stretches
HEADS = {"blur": ["heads"], "blur_recordings": True}


def settings_in(folder: Path, privacy: dict, clip_pre_s: float = 2.0, **top: object) -> Settings:
    return Settings(
        recordings_dir=folder / "rec",
        runtime_dir=folder / "run",
        streams=[{"id": "gate", "url": "demo"}],
        events={"clip_pre_s": clip_pre_s},
        privacy=privacy,
        **top,
    )


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """10 s of the camera ``gate`` and a violation on it before blurring began, 6 s and another since;
    each violation with its snapshot (the later one's unblurred copy beside it), the later one with its clip."""
    recordings = tmp_path / "rec"
    record(recordings, T0, 10)
    record(recordings, T0 + 30, 6)
    store = EventStore(recordings / "events.sqlite3")
    for event_id, started in (("gate-old", T0 + 3), ("gate-new", T0 + 33)):
        snapshot = recordings / "gate" / f"{event_id}.jpg"
        snapshot.write_bytes(b"\xff\xd8 a snapshot of " + event_id.encode())
        common = {"stream": "gate", "track_id": 1, "zones": ["site"], "missing": ["vest"], "duration_s": 1.0}
        clip = recordings / "gate" / f"{event_id}.mp4"
        clip.write_bytes(b"a clip of " + event_id.encode())
        files = {"snapshot": str(snapshot), "clip": str(clip)}
        store.record({**common, "event_id": event_id, "phase": "end", "started": started, **files})
    with_faces(recordings / "gate" / "gate-new.jpg").write_bytes(b"\xff\xd8 faces")
    store.close()
    return tmp_path


def get(api: RecordingsApi | ReviewApi, path: str, **query: float | str) -> tuple[int, object]:
    answer = api.answer if isinstance(api, RecordingsApi) else api.one
    status, _, body = answer(Request("GET", path, {key: str(value) for key, value in query.items()}))
    return status, json.loads(body) if isinstance(body, bytes) else body


def listed(review: ReviewApi) -> dict[str, dict]:
    status, _, body = review.list(Request("GET", "/api/events", {}))
    assert status == 200
    return {event["event_id"]: event for event in json.loads(body)["events"]}


def test_what_was_recorded_before_blurring_began_stays_on_the_server(recorded: Path) -> None:
    settings = settings_in(recorded, HEADS)
    note_blurring(settings, BLURRED_AT)
    recordings = RecordingsApi(settings, EventStore(settings.events_db))
    status, refused = get(recordings, "/api/recordings/gate/window", at=T0 + 3)
    assert status == 403 and "recorded before gate's recording was blurred" in refused["error"], refused
    assert get(recordings, "/api/recordings/gate/window", at=T0 + 30)[0] == 200, "since then: served"
    assert get(recordings, "/api/recordings/gate/window", at=T0 + 15)[0] == 200, "from the gap before: served"
    assert get(recordings, "/api/recordings/gate/export.mp4", **{"from": T0 + 5, "to": T0 + 35})[0] == 403
    assert get(recordings, "/api/recordings/gate/export.mp4", **{"from": T0 + 30, "to": T0 + 35})[0] == 200
    assert get(recordings, "/api/recordings/gate", since=T0 - 60, until=T0 + 60)[0] == 200, "when, not what: listed"

    review = ReviewApi(settings)
    events = listed(review)
    old, new = events["gate-old"], events["gate-new"]
    assert old["snapshot_url"] is None and "taken before blurring began" in old["snapshot_withheld"]
    assert new["snapshot_url"] == "/api/events/gate-new/snapshot.jpg" and "snapshot_withheld" not in new
    status, refused = get(review, "/api/events/gate-old/snapshot.jpg")
    assert status == 403 and "taken before blurring began" in refused["error"]
    assert get(review, "/api/events/gate-new/snapshot.jpg") == (200, Path(new["snapshot"]).resolve())


def test_the_note_holds_across_restarts_and_is_reset_when_what_is_blurred_changes(recorded: Path) -> None:
    note_blurring(settings_in(recorded, HEADS), BLURRED_AT)
    note_blurring(settings_in(recorded, HEADS), BLURRED_AT + 100)  # a restart: the same setting holds
    review = ReviewApi(settings_in(recorded, HEADS))
    assert listed(review)["gate-new"]["snapshot_url"] is not None, "still vouched for since the first start"

    people = {"blur": ["people"], "blur_recordings": True}
    note_blurring(settings_in(recorded, people), BLURRED_AT + 200)  # heads were hidden; bodies were not
    events = listed(ReviewApi(settings_in(recorded, people)))
    assert events["gate-new"]["snapshot_url"] is None, "nothing before the new setting is vouched for"

    kept = {"blur": ["people"], "blur_recordings": False}
    stale = RecordingsApi(settings_in(recorded, kept), EventStore(recorded / "rec" / "events.sqlite3"))
    status, refused = get(stale, "/api/recordings/gate/window", at=BLURRED_AT + 250)  # a note not rewritten
    assert status == 403 and "is not blurred" in refused["error"], "the config's word wins over an old note"
    note_blurring(settings_in(recorded, kept), BLURRED_AT + 300)
    assert json.loads(privacy_note(recorded / "rec").read_text())["recordings"] == {}, "gate records unblurred now"
    recordings = RecordingsApi(settings_in(recorded, kept), EventStore(recorded / "rec" / "events.sqlite3"))
    status, refused = get(recordings, "/api/recordings/gate/window", at=T0 + 30)
    assert status == 403 and "is not blurred (privacy.blur_recordings)" in refused["error"]


def test_without_a_note_nothing_is_vouched_for_and_a_reviewer_still_sees_it(recorded: Path) -> None:
    password = {"http_password_hash": hash_secret("a long enough secret", iterations=1000)}
    reviewers = settings_in(recorded, HEADS | {"reviewers_see_faces": True}, **password)
    review = ReviewApi(reviewers)  # no daemon has started with this setting: nothing noted
    old, new = listed(review)["gate-old"], listed(review)["gate-new"]
    assert old["snapshot_url"] is None and new["snapshot_url"] is None and "not noted" in new["snapshot_withheld"]
    assert old["snapshot_faces_url"] == "/api/events/gate-old/snapshot.jpg?faces=1", "the unblurred one itself"
    assert get(review, "/api/events/gate-old/snapshot.jpg", faces=1) == (200, Path(old["snapshot"]).resolve())
    faces = with_faces(Path(new["snapshot"])).resolve()
    assert get(review, "/api/events/gate-new/snapshot.jpg", faces=1) == (200, faces), "its unblurred copy"
    status, refused = get(review, "/api/events/gate-old/snapshot.jpg")
    assert status == 403 and refused["error"].endswith("a reviewer may ask for it with ?faces=1")


@pytest.mark.parametrize(("clip_pre_s", "served"), [(15.0, True), (25.0, False)])
def test_a_clip_whose_lead_reaches_back_before_blurring_began_is_served_only_across_a_gap(
    recorded: Path, clip_pre_s: float, served: bool
) -> None:
    """The violation starts 13 s after blurring began; the camera recorded up to 10 s before it began."""
    settings = settings_in(recorded, HEADS, clip_pre_s)
    note_blurring(settings, BLURRED_AT)
    review = ReviewApi(settings)
    event = listed(review)["gate-new"]
    status, body = get(review, "/api/events/gate-new/clip.mp4")
    if served:
        assert event["clip_url"] == "/api/events/gate-new/clip.mp4" and "withheld" not in event
        assert (status, body) == (200, Path(event["clip"]).resolve()), "its lead reaches back into nothing recorded"
    else:
        assert event["clip_url"] is None and "recorded before gate's recording was blurred" in event["withheld"]
        assert status == 403, "its lead holds the last seconds recorded unblurred"
