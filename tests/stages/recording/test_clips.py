"""Event clips cut from real segments (x264 via the recorder), and the event store they are listed in."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.messages import EncodedPacket
from pipeline.web import Request
from stages.capture.stage import packet_message
from stages.config import Settings, StreamSettings
from stages.media.video import GRID_RATE, VideoReader
from stages.recording.clips import cut_clip
from stages.recording.eventstore import EventFilter, EventStore
from stages.recording.paths import clip_path, segment_start
from stages.recording.segments import SegmentRecorder
from stages.stream.analysis import FrameAnalysis, Violation
from stages.stream.messages import EventMessage
from stages.stream.outputs.clips import ClipSink
from stages.stream.outputs.eventlog import EventLogSink
from stages.web.review import ReviewApi
from tests.harness import probe_video

FPS = 10
T0 = 1_800_000_000.0


BITS = 8
BLOCK = 20  # pixels per bit, along the top


def numbered(index: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A grey frame with its index as white blocks along the top: small changes, so x264 finds
    no scene cut and keyframes come only where the recorder puts them."""
    image = np.full((size[1], size[0], 3), 60, np.uint8)
    for bit in range(BITS):
        if index >> bit & 1:
            image[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 230
    return image


def record(root: Path, seconds: float, segment_s: float = 3.0) -> None:
    """Numbered frames at 10 fps from T0, in segments of ``segment_s`` (the recorder puts a keyframe
    every 2 s and at each segment's start)."""
    recorder = SegmentRecorder(root, "cam", segment_s=segment_s, crf=18, fps_hint=FPS)
    for i in range(round(seconds * FPS)):
        clock = T0 + i / FPS
        recorder.write(numbered(i), clock, clock, {"seq": i, "clock": clock})
    recorder.close()


def frames(path: Path) -> list[int]:
    """The index each decoded frame shows."""
    with av.open(str(path)) as container:
        images = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    blocks = [[image[:BLOCK, b * BLOCK : (b + 1) * BLOCK].mean() > 145 for b in range(BITS)] for image in images]
    return [sum(1 << b for b, on in enumerate(bits) if on) for bits in blocks]


def test_a_clip_spans_segments_from_the_keyframe_before_its_start(tmp_path: Path) -> None:
    record(tmp_path, seconds=10)  # segments at 0, 3, 6, 9 s; keyframes at 0, 2, 3, 5, 6, 8, 9 s
    clip = cut_clip(tmp_path / "cam", T0 + 2.5, T0 + 7.2, tmp_path / "clips" / "e.mp4")

    assert clip is not None and clip.path.is_file() and not list(tmp_path.glob("clips/*.partial"))
    stream, problems = probe_video(clip.path)
    assert problems == "" and stream["codec_name"] == "h264"
    assert frames(clip.path) == list(range(20, 73)), "from the keyframe at 2.0 s to the last frame before 7.2 s"
    assert clip.start == T0 + 2.0 and clip.duration_s == 5.2 and clip.frames == 53
    head = clip.path.read_bytes()[:4096]
    assert head.index(b"moov") < head.index(b"mdat") if b"mdat" in head else b"moov" in head, "faststart"


def test_a_clip_of_a_copied_camera_keeps_its_b_frames_in_order(tmp_path: Path) -> None:
    """A camera's H.264 with B-frames and a keyframe every 2 s, recorded by copying its packets: the
    clip holds the same frames as one cut from annotated segments, in order, decoding cleanly."""
    camera = tmp_path / "camera.mp4"
    with av.open(str(camera), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"crf": "18", "g": "20", "keyint_min": "20", "sc_threshold": "0", "bf": "2"}
        for i in range(100):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(numbered(i), format="bgr24")))
        container.mux(stream.encode(None))
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=3.0, crf=18)
    with VideoReader(camera, copy_packets=True) as reader:
        for frame in reader.frames():
            for packet in frame.packets:
                message = EncodedPacket.decode(packet_message("cam", packet, reader.copier.codec, T0).encode())
                recorder.write_packet(message, T0 + message.pts_s)
    recorder.close()

    clip = cut_clip(tmp_path / "cam", T0 + 2.5, T0 + 7.2, tmp_path / "clips" / "e.mp4")

    assert clip is not None and probe_video(clip.path)[1] == ""
    assert frames(clip.path) == list(range(20, 73)), "from the keyframe at 2.0 s to the last frame before 7.2 s"
    assert clip.start == T0 + 2.0
    with av.open(str(clip.path)) as container:
        shown = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    # each frame at its own time, but for a step (1/120 s) or so that a few are moved, for FFmpeg's guess
    # of the frame rate (FrameTimes)
    assert shown == pytest.approx([i / FPS for i in range(53)], abs=2.5 / GRID_RATE)
    assert shown == sorted(set(shown)), "in order"


def annexb_units(data: bytes) -> list[bytes]:
    """NAL units of an MPEG-TS packet (start-code separated)."""
    return [unit.strip(b"\0") for unit in re.split(b"\0\0\1", data) if unit.strip(b"\0")]


def avcc_units(data: bytes) -> list[bytes]:
    """NAL units of an MP4 sample (each after its 4-byte length)."""
    units, at = [], 0
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        units.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return units


def test_a_clip_is_copied_not_encoded_again(tmp_path: Path) -> None:
    record(tmp_path, seconds=4, segment_s=10)
    clip = cut_clip(tmp_path / "cam", T0, T0 + 10, tmp_path / "e.mp4")
    assert clip is not None
    segment = next((tmp_path / "cam").rglob("*.ts"))
    with av.open(str(segment)) as recorded, av.open(str(clip.path)) as cut:
        recorded_units = [annexb_units(bytes(p)) for p in recorded.demux(video=0) if p.size]
        cut_units = [avcc_units(bytes(p)) for p in cut.demux(video=0) if p.size]
    assert len(cut_units) == len(recorded_units) == 40
    for recorded_frame, cut_frame in zip(recorded_units, cut_units, strict=True):
        slices = [u for u in recorded_frame if u[0] & 0x1F in (1, 5)]  # coded picture data
        assert slices and slices == [u for u in cut_frame if u[0] & 0x1F in (1, 5)], "the same coded pictures"


def test_a_clip_reaches_into_a_segment_written_in_the_same_tick_as_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel stamps a file's mtime from a coarse clock: a segment opened as the one before closed
    can carry the same mtime, which must not hide it from a clip starting in the one before."""
    record(tmp_path, seconds=5)  # segments at 0 and 3 s
    segments = sorted((tmp_path / "cam").rglob("*.ts"))
    assert len(segments) == 2
    for segment in segments:
        os.utime(segment, ns=(1_800_000_000_000_000_000, 1_800_000_000_000_000_000))
    listed = Path.glob  # a folder listed oldest first, as some file systems do
    monkeypatch.setattr(Path, "glob", lambda folder, pattern: iter(sorted(listed(folder, pattern))))
    clip = cut_clip(tmp_path / "cam", T0 + 2.5, T0 + 60, tmp_path / "e.mp4")
    assert clip is not None and frames(clip.path) == list(range(20, 50)), "to the newest segment's last frame"
    assert clip.last == pytest.approx(T0 + 4.9, abs=0.01), "the last frame's clock"


def test_segments_order_by_their_start_across_a_clock_put_back_an_hour() -> None:
    """Names carry local time and its offset: the first segment after the autumn change is named an hour
    before the last one of summer time, and began after it; one begun in the same second gets a ``b``."""
    summer, winter = Path("cam-20261025-025959+0200.ts"), Path("cam-20261025-020000+0100.ts")
    assert segment_start(winter) > segment_start(summer)
    assert segment_start(Path("cam-20261025-020000+0100b.ts")) > segment_start(winter)


def test_no_clip_when_nothing_was_recorded_then(tmp_path: Path) -> None:
    record(tmp_path, seconds=2)
    assert cut_clip(tmp_path / "cam", T0 + 100, T0 + 110, tmp_path / "e.mp4") is None
    assert not list(tmp_path.glob("e.mp4*"))


def test_a_clip_stops_where_the_picture_size_changes(tmp_path: Path) -> None:
    record(tmp_path, seconds=3, segment_s=3)
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=3, crf=18, fps_hint=FPS)
    for i in range(30, 40):  # the camera now sends 640x480
        clock = T0 + i / FPS
        recorder.write(numbered(i, (640, 480)), clock, clock, {"seq": i, "clock": clock})
    recorder.close()
    clip = cut_clip(tmp_path / "cam", T0, T0 + 4, tmp_path / "e.mp4")
    assert clip is not None and clip.frames == 30
    assert probe_video(clip.path)[0]["width"] == 320


def event(phase: str, **fields: object) -> dict:
    base = {"stream": "cam", "event_id": "cam-1-7-site", "zones": ["site"], "track_id": 7, "missing": ["vest"]}
    return {**base, "phase": phase, "started": T0, "ended": None, "duration_s": 2.0, "reason": None, **fields}


def test_the_store_keeps_one_row_per_event_and_acknowledgements_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    store = EventStore(path)
    store.record(event("start", snapshot="/r/start.jpg", segment="/r/a.ts", offset_s=1.5))
    store.record(event("update", duration_s=7.0))
    store.record(event("end", ended=T0 + 9, duration_s=9.0, reason="left", snapshot="/r/end.jpg", clip="/r/e.mp4"))
    store.record({**event("start"), "event_id": "other", "stream": "gate", "started": T0 + 86400})

    assert store.acknowledge("cam-1-7-site", when=T0 + 20) and not store.acknowledge("nope")
    assert store.acknowledge("cam-1-7-site", when=T0 + 99)  # again: the first time stays
    store.close()

    reopened = EventStore(path)
    (only,) = reopened.events(EventFilter(stream="cam"))
    assert only["phase"] == "end" and only["duration_s"] == 9.0 and only["reason"] == "left"
    assert only["snapshot"] == "/r/start.jpg", "the start's picture shows the person without the vest"
    assert only["clip"] == "/r/e.mp4" and only["missing"] == ["vest"] and only["acknowledged"] == T0 + 20
    assert [e["event_id"] for e in reopened.events()] == ["other", "cam-1-7-site"], "newest first"
    day = json.loads(json.dumps(only))["day"]
    assert [e["event_id"] for e in reopened.events(EventFilter(day=day))] == ["cam-1-7-site"]
    assert [e["event_id"] for e in reopened.events(EventFilter(since=T0, until=T0 + 86400))] == ["cam-1-7-site"]
    assert [e["event_id"] for e in reopened.events(EventFilter(since=T0 + 1))] == ["other"]
    assert reopened.forget("cam", before=T0 + 1) == 1 and reopened.event("cam-1-7-site") is None


def test_events_left_open_by_a_crash_are_ended_interrupted(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite3")
    store.record(event("update"))
    store.record({**event("start"), "event_id": "gate-1", "stream": "gate"})
    assert [e["event_id"] for e in store.interrupt("cam")] == ["cam-1-7-site"] and store.interrupt("cam") == []
    assert store.event("cam-1-7-site")["reason"] == "interrupted"
    assert store.event("gate-1")["phase"] == "start", "another stream's stage still owns its events"


def test_an_event_a_crash_left_open_ends_for_every_output_when_its_person_was_last_seen(tmp_path: Path) -> None:
    """Its last update said 2 s, but the stage saw it open until 9 s: the end says 9 s, and goes out."""
    settings = Settings(recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run", http_url="https://site:8080")
    store = EventStore(settings.events_db)
    store.record(event("start", snapshot="/r/start.jpg"))
    store.seen("cam", T0 + 9)
    store.close()
    log = EventLogSink(settings, StreamSettings(id="cam", url="demo"))  # the stage started again
    (ended,) = log.left_open()
    assert (ended.event_id, ended.phase, ended.reason) == ("cam-1-7-site", "end", "interrupted")
    assert ended.ended == T0 + 9 and ended.duration_s == 9.0, "when it was last seen open, not its last update"
    assert ended.snapshot == "/r/start.jpg" and ended.snapshot_url.startswith("https://site:8080/api/events/")
    assert ended.clip is None and log.left_open() == (), "once"
    assert log.store.event("cam-1-7-site")["duration_s"] == 9.0
    log.close()


def test_a_database_removed_while_open_is_written_anew_with_every_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleted under the daemon (its -wal and -shm left behind), the history would live on only in the
    processes that hold it open, and go with them: the next use writes it anew, said in one line; the
    HTTP server's connection and the stream stage's end up on the one new file."""
    settings = Settings(recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run")
    log = EventLogSink(settings, StreamSettings(id="cam", url="demo"))
    page = EventStore(settings.events_db)  # the review page's
    log.store.record(event("start"))
    log.store.record({**event("start"), "event_id": "cam-2-8-site"})
    settings.events_db.unlink()
    assert {e["event_id"] for e in page.events()} == {"cam-1-7-site", "cam-2-8-site"}, "read from the new file"
    assert settings.events_db.is_file(), "written anew by the first use that found it gone"
    log.store.record({**event("start"), "event_id": "cam-3-9-site", "started": T0 + 1})
    fresh = EventStore(settings.events_db)
    assert {e["event_id"] for e in fresh.events()} == {"cam-1-7-site", "cam-2-8-site", "cam-3-9-site"}
    assert {e["event_id"] for e in page.events()} == {"cam-1-7-site", "cam-2-8-site", "cam-3-9-site"}
    assert [r.getMessage() for r in caplog.records if "removed while open" in r.getMessage()] == [
        f"events database {settings.events_db} was removed while open; writing it anew with the 2 events this "
        "process still reads"
    ]
    assert log.store.renewed == 1 and page.renewed == 1, "one wrote it anew, the other took the new one"
    log.events(())  # the sink's figures follow its store at its next phase
    vest = ["vest"]
    start = EventMessage("cam", "cam-4-1-site", "start", 1, ["site"], vest, vest, T0, None, 1.0, None, 1, T0, [],
                         *[None] * 6)  # fmt: skip
    log.events((start,))
    assert log.stats.database_renewed == 1 and "removed or replaced while open" in log.stats.problem()
    for store in (fresh, page):
        store.close()
    log.close()


def test_the_api_lists_a_viewers_day_and_refuses_bad_numbers(tmp_path: Path) -> None:
    """The page sends its own local midnight-to-midnight as since/until: a viewer in another time
    zone than the server's sees their day."""
    settings = Settings(recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run")
    api = ReviewApi(settings)
    api.store.record(event("start"))
    api.store.record({**event("start"), "event_id": "later", "started": T0 + 3600})

    def listed(**query: str) -> tuple[int, object]:
        status, _, body = api.list(Request("GET", "/api/events", query))
        return status, json.loads(body)

    status, listing = listed(since=str(T0 - 1800), until=str(T0 + 1800))
    assert status == 200 and [e["event_id"] for e in listing["events"]] == ["cam-1-7-site"]
    for bad in ({"since": "yesterday"}, {"until": "nan"}, {"limit": "inf"}):
        status, body = listed(**bad)
        key = next(iter(bad))
        assert status == 400 and body["error"].startswith(f"{key} "), body


def test_clips_a_stop_or_crash_left_uncut_are_cut_when_the_stage_starts_again(tmp_path: Path) -> None:
    """The end message promised a clip and the stage stopped before cutting it; or a crash left an event
    open. The segments are there."""
    settings = Settings(
        recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run", events={"clip_pre_s": 1, "clip_post_s": 1}
    )
    record(settings.recordings_dir, seconds=8)
    store = EventStore(settings.events_db)
    promised = clip_path(settings.recordings_dir / "cam", "cam-1-7-site", T0 + 2)
    store.record(event("end", started=T0 + 2, ended=T0 + 5, clip=str(promised)))
    made = tmp_path / "made.mp4"
    made.write_bytes(b"a clip already cut")
    store.record(event("end", event_id="done", ended=T0 + 3, clip=str(made)))
    store.record(event("end", event_id="gate-1", stream="gate", ended=T0 + 3, clip=str(tmp_path / "gate.mp4")))
    gone = clip_path(settings.recordings_dir / "cam", "gone", T0 + 100)  # retention took its recording
    store.record(event("end", event_id="gone", started=T0 + 100, ended=T0 + 105, clip=str(gone)))
    store.record(event("update", event_id="crashed", started=T0 + 4, duration_s=1.5))  # open when it crashed
    store.close()

    stream = StreamSettings(id="cam", url="demo")
    sink, log = ClipSink(settings, stream), EventLogSink(settings, stream)  # in the stage's order of sinks
    sink.tick()  # the first: by then the event log has ended what the crash left open
    sink.close()  # waits for the cutting thread
    log.close()
    shown = frames(promised)
    assert shown[0] <= 10 and shown[-1] == 60, "from the keyframe before T0+1 to T0+6"
    assert made.read_bytes() == b"a clip already cut" and not (tmp_path / "gate.mp4").exists()
    assert sink.stats.clips == 2 and not gone.exists()
    reopened = EventStore(settings.events_db)
    assert reopened.event("gone")["clip"] == "", "no longer promised, nor tried at every start"
    assert reopened.event("cam-1-7-site")["clip"] == str(promised)
    crashed = reopened.event("crashed")
    assert crashed["reason"] == "interrupted" and crashed["ended"] == T0 + 5.5, "as far as it was known"
    assert frames(Path(crashed["clip"]))[-1] == 65, "to its last known moment, and clip_post_s after"


def test_a_clip_is_promised_only_where_its_recording_is_and_said_partial_where_it_lacks_some(tmp_path: Path) -> None:
    """The recording holds T0..T0+8. An event whose recording retention took already gets no clip (a
    promised one would never come); one that began before the recording gets the part there is,
    marked with the span it covers, for the API and the page."""
    settings = Settings(
        recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run", events={"clip_pre_s": 1, "clip_post_s": 1}
    )
    record(settings.recordings_dir, seconds=8)
    stream = StreamSettings(id="cam", url="demo")
    log, sink = EventLogSink(settings, stream), ClipSink(settings, stream)
    frame = FrameAnalysis("cam", 1, T0, None, 320, 240, Detections(np.zeros((0, 4)), [], []), [])
    gone = Violation(
        "gone", "end", 2, ["site"], ["vest"], ["vest"], T0 - 100, T0 - 95, 5.0, "left"
    )  # before what is kept
    early = Violation("early", "end", 1, ["site"], ["vest"], ["vest"], T0 - 4, T0 + 3, 7.0, "left")
    assert sink.evidence(None, frame, gone) == {} and sink.stats.clips_failed == 1
    evidence = sink.evidence(None, frame, early)
    log.events(tuple(EventMessage.from_violation(frame, v, [], e) for v, e in ((gone, {}), (early, evidence))))
    sink.close()  # cuts what is due
    assert sink.stats.clips == 1 and sink.stats.clips_partial == 1
    covered = log.store.event("early")["clip_partial"]
    assert covered[0] == pytest.approx(T0) and covered[1] == pytest.approx(T0 + 4, abs=0.2), "T0 to T0+3+1"
    assert log.store.event("gone")["clip"] is None and log.store.event("early")["clip"] == evidence["clip"]
    listed = ReviewApi(settings).store.events()
    assert {e["event_id"]: e["clip_partial"] for e in listed} == {"early": covered, "gone": None}
    log.close()
