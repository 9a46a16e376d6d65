"""A camera's day from its real segments: what was recorded when, a window of it played, a stretch
exported as one MP4, and the violations on it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.web import Request
from stages.config import Settings
from stages.media.video import VideoReader
from stages.recording.eventstore import EventStore
from stages.recording.segments import SegmentRecorder
from stages.recording.timeline import Timeline
from stages.web.recordings import WINDOW_S, RecordingsApi
from tests.harness import probe_video, small_tmpfs

T0 = 1_700_000_000.0
FPS = 10


def record(recordings: Path, start: float, seconds: float) -> None:
    """Frames of the camera ``gate`` from ``start`` (its clock), in 4 s segments, as the recorder writes them."""
    recorder = SegmentRecorder(recordings, "gate", segment_s=4, crf=30, fps_hint=FPS)
    for i in range(int(seconds * FPS)):
        clock = start + i / FPS
        recorder.write(np.full((96, 128, 3), (i * 7) % 255, np.uint8), clock, clock, {"seq": i, "clock": clock})
    recorder.close()


@pytest.fixture
def api(tmp_path: Path) -> RecordingsApi:
    settings = Settings(recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run")
    record(settings.recordings_dir, T0, 10)  # 10 s, a gap of 20 s (the camera was down), then 6 s
    record(settings.recordings_dir, T0 + 30, 6)
    store = EventStore(settings.events_db)
    common = {"stream": "gate", "track_id": 1, "zones": ["site"], "missing": ["vest"], "duration_s": 3.0}
    store.record({**common, "event_id": "gate-1", "phase": "end", "started": T0 + 2, "ended": T0 + 5})
    store.record({**common, "event_id": "yard-1", "stream": "yard", "phase": "end", "started": T0 + 2})
    return RecordingsApi(settings, store)


def get(api: RecordingsApi, path: str, **query: float | str) -> tuple[int, object]:
    status, _, body = api.answer(Request("GET", path, {key: str(value) for key, value in query.items()}))
    return status, json.loads(body) if isinstance(body, bytes) else body


def test_the_day_holds_the_recorded_stretches_and_the_cameras_violations(api: RecordingsApi) -> None:
    status, day = get(api, "/api/recordings/gate", since=T0 - 60, until=T0 + 3600)
    assert status == 200, day
    (first_from, first_to), (second_from, second_to) = day["recorded"]
    assert first_from == pytest.approx(T0) and first_to == pytest.approx(T0 + 9.9), "three segments, one stretch"
    assert second_from == pytest.approx(T0 + 30) and second_to == pytest.approx(T0 + 35.9)
    assert [(e["event_id"], e["missing"]) for e in day["events"]] == [("gate-1", ["vest"])], "this camera's only"
    assert get(api, "/api/recordings/gate", since=T0 + 12, until=T0 + 20)[1]["recorded"] == [], "the gap"


def test_a_window_plays_from_a_moment_and_the_next_one_follows(api: RecordingsApi) -> None:
    status, window = get(api, "/api/recordings/gate/window", at=T0 + 3.5)
    assert status == 200, window
    assert window["start"] <= T0 + 3.5 and window["next"] == T0 + 3.5 + WINDOW_S, "from the keyframe before"
    assert not window["live"], "recorded long ago: the next window is a minute on"
    status, cut = get(api, window["url"])
    assert status == 200 and isinstance(cut, Path)
    with VideoReader(cut) as reader:
        frames = sum(1 for _ in reader.frames())
    # to the end of the second stretch: the gap is skipped, not filled
    assert frames == pytest.approx((T0 + 10 - window["start"]) * FPS + 60, abs=2)
    assert probe_video(cut)[1] == "", "a clean MP4"
    assert get(api, "/api/recordings/gate/window", at=T0 + 40)[0] == 404, "nothing recorded from there on"


def test_a_window_reaching_the_present_follows_the_camera(tmp_path: Path) -> None:
    """Played up to what a camera still recording has recorded, the next window starts just past the
    last frame played, not a minute on where nothing is yet; asked before the camera recorded more, the
    answer is "not yet", and then what it recorded."""
    settings = Settings(recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run")
    now = time.time()
    record(settings.recordings_dir, now - 6, 5)  # its frames up to a second ago
    api = RecordingsApi(settings, EventStore(settings.events_db))
    status, window = get(api, "/api/recordings/gate/window", at=now - 3)
    assert status == 200 and window["live"], window
    last_frame = now - 6 + 4.9
    assert window["start"] + window["duration_s"] == pytest.approx(last_frame, abs=0.01)
    assert window["next"] == pytest.approx(last_frame, abs=0.01), "from the last frame on"
    status, edge = get(api, "/api/recordings/gate/window", at=window["next"])
    assert status == 404 and edge["live"], f"past the last frame, none played twice: {edge}"
    record(settings.recordings_dir, now - 1, 1)  # the camera's next second
    status, following = get(api, "/api/recordings/gate/window", at=window["next"])
    assert status == 200 and following["start"] == pytest.approx(now - 1, abs=0.01), following
    status, ahead = get(api, "/api/recordings/gate/window", at=time.time() + 600)
    assert status == 404 and not ahead["live"], "a moment to come is not waited for"


def test_a_stretch_exports_as_one_mp4_and_bad_requests_say_why(api: RecordingsApi) -> None:
    status, exported = get(api, "/api/recordings/gate/export.mp4", **{"from": T0 + 1, "to": T0 + 34})
    assert status == 200 and isinstance(exported, Path) and exported.suffix == ".mp4"
    with VideoReader(exported) as reader:
        assert sum(1 for _ in reader.frames()) >= (10 - 1 + 4) * FPS - 2
    for path, query, code, error in [
        ("/api/recordings/gate/export.mp4", {"from": T0 + 10, "to": T0}, 400, "from must be before to"),
        ("/api/recordings/gate/export.mp4", {"from": T0, "to": T0 + 7200}, 400, "at most 3600 s"),
        ("/api/recordings/gate/window", {"at": "soon"}, 400, "at 'soon' is not a number"),
        ("/api/recordings/nobody", {}, 404, "no recordings of stream 'nobody'"),
        ("/api/recordings/gate/cut/..%2Fevents.sqlite3", {}, 404, "not found"),
    ]:
        status, body = get(api, path, **query)
        assert status == code and error in body["error"], (path, body)


def test_a_segment_being_written_is_read_again_when_it_grew_whatever_its_lines(tmp_path: Path) -> None:
    timeline = Timeline()
    record(tmp_path, T0, 2)
    (segment,) = (tmp_path / "gate").rglob("*.ts")
    assert timeline.span(segment) == pytest.approx((T0, T0 + 1.9))
    line = json.dumps({"pts_s": 3.0, "clock": T0 + 3})
    segment.with_suffix(".jsonl").write_text(segment.with_suffix(".jsonl").read_text() + line + "\n")
    assert timeline.span(segment) == pytest.approx((T0, T0 + 3.0))
    crowded = json.dumps({"pts_s": 4.0, "clock": T0 + 4, "detections": [[1.0, 2.0, 3.0, 4.0]] * 2000})
    segment.with_suffix(".jsonl").write_text(segment.with_suffix(".jsonl").read_text() + crowded + "\n")
    assert timeline.span(segment) == pytest.approx((T0, T0 + 4.0)), "a line longer than the first piece read"


def test_a_full_disk_is_said_and_the_recording_kept(tmp_path: Path) -> None:
    """The recordings' disk full (retention not yet run): a play window cannot be cut; the page is told
    why in one line, and nothing recorded is touched."""
    with small_tmpfs(tmp_path / "disk", 15) as disk:
        settings = Settings(recordings_dir=disk / "rec", runtime_dir=tmp_path / "run")
        record(settings.recordings_dir, T0, 6)
        recorded = sorted(p.stat().st_size for p in (disk / "rec" / "gate").rglob("*.ts"))
        (disk / "rest").write_bytes(b"\0" * shutil.disk_usage(disk).free)
        api = RecordingsApi(settings, EventStore(tmp_path / "events.sqlite3"))
        status, reply = get(api, "/api/recordings/gate/window", at=T0 + 1)
        assert status == 507 and reply["error"].startswith("cannot cut the recording: No space left"), reply
        assert sorted(p.stat().st_size for p in (disk / "rec" / "gate").rglob("*.ts")) == recorded
        assert not list((disk / "rec" / ".review").glob("*.mp4*")), "no half-cut file left"


def test_a_window_of_frames_recorded_undrawn_brings_their_people_to_draw(tmp_path: Path) -> None:
    """Frames with nothing drawn on them (the camera's own video, or annotation shed) come with the
    people the page draws over them, as event clips do."""
    settings = Settings(recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run")
    recorder = SegmentRecorder(settings.recordings_dir, "gate", segment_s=4, crf=30, fps_hint=FPS)
    person = {"track_id": 7, "box": [10.0, 10.0, 40.0, 90.0], "vest": "no", "hardhat": "unknown", "zones": ["site"]}
    for i in range(20):
        clock = T0 + i / FPS
        line = {"seq": i, "clock": clock, "annotated": False, "width": 128, "height": 96, "people": [person]}
        recorder.write(np.full((96, 128, 3), 80, np.uint8), clock, clock, line)
    recorder.close()
    api = RecordingsApi(settings, EventStore(settings.events_db))
    status, window = get(api, "/api/recordings/gate/window", at=T0 + 0.5)
    assert status == 200 and window["people_url"], window
    status, people = get(api, window["people_url"])
    lines = [json.loads(line) for line in people.read_text().splitlines()]
    assert len(lines) == 20 and all(line["people"][0]["track_id"] == 7 for line in lines)


def test_a_missed_violation_is_noted_for_the_site_dataset_and_bad_notes_say_why(api: RecordingsApi) -> None:
    def post(path: str, body: object) -> tuple[int, dict]:
        status, _, answer = api.missed(Request("POST", path, {}, json.dumps(body).encode(), "application/json"))
        assert isinstance(answer, bytes)
        return status, json.loads(answer)

    assert post("/api/recordings/gate/missed", {"at": T0 + 3}) == (200, {"stream": "gate", "at": T0 + 3})
    assert post("/api/recordings/gate/missed", {"at": T0 + 3})[0] == 200, "said twice, kept once"
    for body in ({"at": "soon"}, {"at": True}, {"at": -1}, {}, ["at"]):
        status, answer = post("/api/recordings/gate/missed", body)
        assert status == 400 and ("at" in answer["error"] or "object" in answer["error"]), (body, answer)
    assert post("/api/recordings/../missed", {"at": T0})[0] == 404
    rows = api.store.query("SELECT stream, at FROM missed")
    assert [(row["stream"], row["at"]) for row in rows] == [("gate", T0 + 3)]
