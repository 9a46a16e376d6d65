"""A stream's budget as each segment closes, event clips and snapshots counted with its segments (in its
budget and for a full disk), and no ``.partial`` clip left behind: real recordings on real files."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.detections import Detections
from stages.config import Settings, StreamSettings
from stages.recording.clips import cut_clip
from stages.recording.paths import clip_path, partial, snapshot_path
from stages.recording.retention import apply_retention, make_room
from stages.recording.segments import SegmentRecorder
from stages.stream.analysis import FrameAnalysis
from stages.stream.outputs.recorder import RecorderSink
from tests.harness import small_tmpfs

T0 = 1_800_000_000.0


def noise(index: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A frame x264 cannot shrink much: segments of a predictable size."""
    return np.random.default_rng(index).integers(0, 255, (size[1], size[0], 3), np.uint8)


def analysis(seq: int, captured: float) -> FrameAnalysis:
    return FrameAnalysis("cam", seq, captured, None, 160, 120, Detections([], [], []), [])


def put(path: Path, size: int, age_s: float, now: float = T0) -> Path:
    """A file of ``size`` bytes last written ``age_s`` before ``now``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age_s, now - age_s))
    return path


def stream_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB filesystem (tmpfs) to fill."""
    with small_tmpfs(tmp_path / "disk", 4) as disk:
        yield disk


def test_the_budget_holds_as_each_segment_closes_not_a_minute_later(tmp_path: Path) -> None:
    """No tick comes (a minute is long at this bitrate): each closed segment brings the stream back within
    ``max_bytes``, the oldest going first, never the segment being written."""
    budget = 150_000
    recording = {"segment_s": 1.0, "crf": 30, "max_bytes": budget}
    settings = Settings(recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run", recording=recording)
    sink = RecorderSink(settings, StreamSettings(id="cam", url="demo"))
    root = settings.recordings_dir / "cam"
    for seq in range(1, 81):  # 8 s at 10 fps: 8 segments of some 50 kB
        sink.handle(noise(seq), analysis(seq, T0 + seq / 10))
        writing = sink.recorder.segment
        assert writing is not None and writing.path.is_file(), "the segment being written stays"
        open_bytes = writing.path.stat().st_size + writing.path.with_suffix(".jsonl").stat().st_size
        assert stream_bytes(root) - open_bytes <= budget, f"frame {seq}: over budget"
    sink.close()
    segments = sorted(root.rglob("*.ts"))
    assert sink.stats.segments == 7 and 2 <= len(segments) <= 4, "the oldest went, the newest stayed"


def test_the_budget_counts_snapshots_and_clip_overlays_and_spares_the_segment_being_written(tmp_path: Path) -> None:
    day = tmp_path / "cam" / "2027-01-15"
    snapshot = put(day / "events" / "cam-1-start.jpg", 1000, 9 * 3600)
    oldest = put(day / "cam-0.ts", 1000, 8 * 3600)
    put(day / "cam-0.jsonl", 100, 8 * 3600)
    clip = put(day / "clips" / "cam-1.mp4", 1000, 7 * 3600)
    overlay = put(day / "clips" / "cam-1.jsonl", 500, 7 * 3600)  # the people to draw: part of the clip
    # one closed and the next opened within a tick of the clock: one mtime
    older, newer = put(day / "cam-2.ts", 1000, 3600), put(day / "cam-3.ts", 1000, 3600)
    deleted = apply_retention(tmp_path / "cam", max_age_s=10**9, max_bytes=2100, now=T0)
    assert deleted == [snapshot, oldest, clip], "5600 bytes in all, oldest first down to 2000"
    assert not overlay.exists() and older.exists() and newer.exists()
    # a segment being written keeps its place whatever its mtime or name says (a clock stepped back)
    assert apply_retention(tmp_path / "cam", max_age_s=0, max_bytes=0, now=T0, writing=older) == []
    assert older.exists() and newer.exists(), "the one being written and the newest stay"


def test_make_room_takes_clips_and_snapshots_of_any_stream_oldest_first(tmp_path: Path) -> None:
    oldest_first = ["a/d/events/e-start.jpg", "b/d/1.ts", "a/d/clips/e.mp4", "a/d/1.ts", "b/d/clips/f.mp4",
                    "b/d/events/f-end.jpg", "a/d/2.ts", "b/d/2.ts"]  # fmt: skip
    for age_h, name in enumerate(reversed(oldest_first), 1):
        put(tmp_path / name, 1000, age_h * 3600)
    put(tmp_path / "a/d/clips/e.jsonl", 100, 6 * 3600)  # the clip's people, with it
    _, deleted = make_room(tmp_path, shutil.disk_usage(tmp_path).free + 10**15)  # more than any disk
    assert [p.relative_to(tmp_path).as_posix() for p in deleted] == oldest_first[:-2], "all but each stream's newest"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*")) == ["a/d/2.ts", "b/d/2.ts"]


def test_a_full_disk_of_clips_and_snapshots_makes_room_for_the_recording(small_disk: Path, tmp_path: Path) -> None:
    """Last week's clips and snapshots fill the disk but for less than a segment: they go, oldest first,
    as the recorder needs the room, instead of its saying "full, nothing left to delete"."""
    recording = {"segment_s": 3.0, "crf": 0, "min_free_mb": 0}  # room is made only when a write fails
    settings = Settings(recordings_dir=small_disk / "rec", runtime_dir=tmp_path / "run", recording=recording)
    root = settings.recordings_dir / "cam"
    now = time.time()  # what the segments' mtimes will say
    old = []
    for i in range(10):  # 3.5 MB of a 4 MB disk, last week's
        age_s = 7 * 86400 - i * 60
        old.append(put(snapshot_path(root, f"cam-{i}", "start", now - age_s), 100_000, age_s, now))
        old.append(put(clip_path(root, f"cam-{i}", now - age_s), 250_000, age_s - 30, now))
    sink = RecorderSink(settings, StreamSettings(id="cam", url="demo"))
    frames = 40  # lossless noise, some 30 kB a frame: 1.2 MB, more than is free
    for seq in range(1, frames + 1):
        sink.handle(noise(seq), analysis(seq, T0 + seq / 10))
    sink.close()
    gone = [p for p in old if not p.exists()]
    assert gone == old[: len(gone)], "the oldest went first"
    assert not sink.stats.disk_low and sink.stats.write_errors == 0
    assert 0 < sink.stats.disk_dropped <= len(gone), "a frame lost each time the disk was full, then room made"
    assert sink.stats.frames + sink.stats.disk_dropped == frames


def test_stale_partial_clips_go_after_a_minute_and_all_at_start(tmp_path: Path) -> None:
    clips = tmp_path / "rec" / "cam" / "2027-01-15" / "clips"
    stale = put(partial(clips / "cam-1.mp4"), 1000, 120)  # a cut a stop or a full disk cut short
    stale_overlay = put(partial(clips / "cam-1.jsonl"), 100, 120)
    fresh = put(partial(clips / "cam-2.mp4"), 1000, 10)  # perhaps being cut now
    assert set(apply_retention(tmp_path / "rec" / "cam", max_age_s=10**9, max_bytes=10**9, now=T0)) == {
        stale,
        stale_overlay,
    }
    assert fresh.exists()
    settings = Settings(recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run")
    RecorderSink(settings, StreamSettings(id="cam", url="demo")).close()  # a start: nothing is being cut
    assert not fresh.exists()


def record(root: Path, seconds: float = 4.0) -> None:
    recorder = SegmentRecorder(root, "cam", segment_s=2.0, crf=30, fps_hint=10)
    for i in range(round(seconds * 10)):
        recorder.write(noise(i), T0 + i / 10, T0 + i / 10, {"seq": i, "clock": T0 + i / 10})
    recorder.close()


def test_a_cut_the_full_disk_fails_removes_its_partial(small_disk: Path) -> None:
    """The MP4 muxer reports a write that failed when the clip is finished: its partial goes all the same."""
    record(small_disk)
    (small_disk / "rest").write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 16384))  # 16 kB left
    with pytest.raises(OSError, match="No space left"):
        cut_clip(small_disk / "cam", T0 + 0.5, T0 + 3.0, small_disk / "cam" / "clips" / "e.mp4")
    assert list((small_disk / "cam").rglob("*.partial")) == []


def test_a_cut_that_cannot_be_put_in_place_removes_its_partial(tmp_path: Path) -> None:
    record(tmp_path)
    out = tmp_path / "cam" / "clips" / "e.mp4"
    out.mkdir(parents=True)  # something else in the way: the rename fails
    with pytest.raises(OSError):
        cut_clip(tmp_path / "cam", T0 + 0.5, T0 + 3.0, out)
    assert list((tmp_path / "cam").rglob("*.partial")) == []
