"""Every segment and clip reads back in order (#23 item 5): ``ffmpeg -v error -i FILE -f null -``
prints nothing, whatever times the frames came with (equal, jittering, in bursts, stepping back, a
looping file), whether drawn on and encoded here or the camera's own packets, on a full disk too;
and every frame offered is recorded (or counted as dropped for want of space)."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.messages import EncodedPacket
from stages.capture.stage import packet_message
from stages.config import Settings, StreamSettings
from stages.media.video import GRID_RATE, VideoReader
from stages.recording.clips import cut_clip
from stages.recording.eventstore import EventStore
from stages.recording.retention import make_room
from stages.recording.segments import LATE_S, SegmentRecorder
from stages.stream.analysis import FrameAnalysis
from stages.stream.outputs.recorder import RecorderSink
from tests.harness import probe_video, small_tmpfs

T0 = 1_800_000_000.0
KINDS = ["duplicates", "jitter", "bursts", "steps back", "loop"]


def read_back_errors(ffmpeg: str, path: Path) -> str:
    """What FFmpeg says reading ``path`` through a transcode, which retimes every frame to the rate
    it guesses: two frames closer than that are "non monotonically increasing dts"."""
    command = [ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120).stderr


def frames_in(path: Path) -> int:
    stream, problems = probe_video(path)
    assert problems == "", f"{path.name}: {problems}"
    return int(stream["nb_read_frames"])


def capture_times(kind: str, count: int = 60) -> list[float]:
    """Seconds, as capture hands 10 fps frames to the recorder."""
    rng = random.Random(kind)
    regular = [i / 10 for i in range(count)]
    if kind == "duplicates":  # two frames within one tick of any time base
        return [(i // 2) / 10 for i in range(count)]
    if kind == "jitter":
        return [t + rng.uniform(-0.06, 0.06) for t in regular]
    if kind == "bursts":  # a loaded capture: five frames at once, every half second
        return [i // 5 * 0.5 + i % 5 * 0.002 for i in range(count)]
    if kind == "stall":  # on time (FFmpeg finds 10 fps), then eight at once 0.8 s later, then on time
        on_time = regular[: count - 28]
        return (
            on_time + [on_time[-1] + 0.8 + i / 1000 for i in range(8)] + [on_time[-1] + 1 + i / 10 for i in range(20)]
        )
    if kind == "steps back":  # every seventh frame 30 ms before the one it follows
        return [t - 0.13 * (i % 7 == 6) for i, t in enumerate(regular)]
    assert kind == "loop"  # a file's own timeline, 2.5 s long, played three times
    return [(i % 25) / 10 for i in range(count)]


def picture(index: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """Texture enough that each frame is a few kB (a file of a few hundred bytes is not read as TS)."""
    return np.random.default_rng(index).integers(0, 255, (size[1], size[0], 3), np.uint8)


@pytest.mark.parametrize(("kind", "count", "segment_s"), [(kind, 60, 2.0) for kind in KINDS] + [("stall", 1000, 120.0)])
def test_annotated_frames_at_any_times_read_back_in_order_all_of_them(
    ffmpeg: str, tmp_path: Path, kind: str, count: int, segment_s: float
) -> None:
    """A stall long into a segment: FFmpeg guessed its rate from the first 840 frames (7 s at the 120 fps
    it declares), all 0.1 s apart; the eight frames captured at once after it must be as far apart."""
    times = capture_times(kind, count)
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=segment_s, crf=30, fps_hint=10)
    for seq, t in enumerate(times):
        recorder.write(picture(seq), T0 + t, T0 + seq / 10, {"seq": seq})
    recorder.close()

    segments = sorted((tmp_path / "cam").rglob("*.ts"))
    recorded = 0
    for segment in segments:
        assert read_back_errors(ffmpeg, segment) == "", segment.name
        lines = [json.loads(line) for line in segment.with_suffix(".jsonl").read_text().splitlines()]
        assert len(lines) == frames_in(segment)
        recorded += len(lines)
        start = times[lines[0]["seq"]]
        for line in lines:  # at its own time in the segment but for a few steps, or a little later: no drift
            assert -3.5 / GRID_RATE <= line["pts_s"] - (times[line["seq"]] - start) <= LATE_S, line
    assert recorded == len(times), "every frame recorded"


def camera(ffmpeg: str, path: Path, bframes: int) -> Path:
    """A 3 s, 10 fps H.264 file, a keyframe every second, with up to ``bframes`` B-frames in a row."""
    source = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=10", "-t", "3", "-pix_fmt", "yuv420p"]
    codec = ["-c:v", "libx264", "-bf", str(bframes), "-g", "10", "-keyint_min", "10", "-sc_threshold", "0"]
    subprocess.run([ffmpeg, "-v", "error", "-y", *source, *codec, str(path)], check=True)
    return path


def copy_looped(recorder: SegmentRecorder, video: Path, loops: int, jitter_s: float) -> int:
    """Copy ``video``'s packets ``loops`` times over (its timestamps start again at 0 each time, as a
    looping file's do), each packet's times moved by up to ``jitter_s``; the packets recorded."""
    rng, recorded = random.Random(1), 0
    for loop in range(loops):
        with VideoReader(video, copy_packets=True) as reader:
            for frame in reader.frames():
                for copied in frame.packets:
                    packet = EncodedPacket.decode(packet_message("cam", copied, reader.copier.codec, T0).encode())
                    shift = round(Fraction(rng.uniform(-jitter_s, jitter_s)) / Fraction(*packet.time_base))
                    packet.pts += shift
                    packet.dts = None if packet.dts is None else packet.dts + shift
                    recorded += recorder.write_packet(packet, T0 + 3 * loop + packet.pts_s)
    return recorded


@pytest.mark.parametrize(("bframes", "jitter_s"), [(0, 0.04), (3, 0.01)], ids=["jittery", "b-frames"])
def test_a_looping_cameras_own_packets_and_clips_cut_from_them_read_back_in_order(
    ffmpeg: str, tmp_path: Path, bframes: int, jitter_s: float
) -> None:
    """A camera's stream is copied: its own timestamps, which step back at each loop and jitter (a
    camera's declared frame rate is one FFmpeg may take over the one it finds: 10 fps here, and
    jittered frames closer than 0.1 s)."""
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=2.0, crf=30)
    recorded = copy_looped(recorder, camera(ffmpeg, tmp_path / "camera.mp4", bframes), loops=3, jitter_s=jitter_s)
    recorder.close()

    segments = sorted((tmp_path / "cam").rglob("*.ts"))
    assert len(segments) >= 3 and recorded == 90 and recorder.awaiting_keyframe == 0, "a segment a loop, or more"
    for segment in segments:
        assert read_back_errors(ffmpeg, segment) == "", segment.name
    assert sum(frames_in(segment) for segment in segments) == recorded, "every packet recorded"
    for start, end in [(0.4, 4.6), (2.5, 8.9)]:  # across the loops' segments
        clip = cut_clip(tmp_path / "cam", T0 + start, T0 + end, tmp_path / "clips" / f"{start}.mp4")
        assert clip is not None and read_back_errors(ffmpeg, clip.path) == "", clip
        assert frames_in(clip.path) == clip.frames


def test_a_clip_across_segments_whose_clocks_overlap_reads_back_in_order(ffmpeg: str, tmp_path: Path) -> None:
    """The second segment's clock (its first line's, by which clips are cut) starts 0.25 s before the
    first segment's last frame: the clip's frames there are not put within a tick of each other."""
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=2.0, crf=30, fps_hint=10)
    for i in range(60):
        clock = T0 + i / 10 - 0.25 * (i >= 20)
        recorder.write(picture(i), T0 + i / 10, T0 + i / 10, {"seq": i, "clock": clock})
    recorder.close()
    clip = cut_clip(tmp_path / "cam", T0 + 0.55, T0 + 4.42, tmp_path / "clip.mp4")
    assert clip is not None and read_back_errors(ffmpeg, clip.path) == ""
    # noise: every frame a keyframe, so from 0.6 s to 1.9 s, then the second segment's 1.75 s to 4.35 s
    assert frames_in(clip.path) == clip.frames == 14 + 27


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 15 MB filesystem (tmpfs), as in the issue."""
    with small_tmpfs(tmp_path / "disk", 15) as disk:
        yield disk


def event(seq: int) -> dict:
    return {
        "event_id": f"cam-{seq}",
        "stream": "cam",
        "zones": ["site"],
        "track_id": seq,
        "missing": ["vest"],
        "phase": "end",
        "started": T0 + seq / 10,
        "ended": T0 + seq / 10 + 1,
        "duration_s": 1.0,
        "snapshot": "x" * 2000,  # rows big enough that the database grows as the disk fills
    }


def test_a_full_disk_leaves_whole_clean_segments_clips_and_event_store(
    ffmpeg: str, small_disk: Path, tmp_path: Path
) -> None:
    """The recorder fills the disk (lossless: some 200 kB a frame), deletes the oldest segments and goes
    on, with frames at jittering, bursting times; the event store shares the disk."""
    recording = {"segment_s": 1.0, "crf": 0, "min_free_mb": 0}  # room is made only when a write fails
    settings = Settings(recordings_dir=small_disk / "rec", runtime_dir=tmp_path / "run", recording=recording)
    sink, store = RecorderSink(settings, StreamSettings(id="cam", url="demo")), EventStore(settings.events_db)
    times = sorted(capture_times("jitter", 150) + capture_times("bursts", 150))
    for seq, t in enumerate(times, 1):
        sink.handle(
            picture(seq, (320, 240)), FrameAnalysis("cam", seq, T0 + t, None, 320, 240, Detections([], [], []), [])
        )
        with contextlib.suppress(sqlite3.Error):
            store.record(event(seq))
    sink.close()
    store.close()
    root = settings.recordings_dir / "cam"
    with contextlib.suppress(OSError, av.error.FFmpegError):  # no room for it, most likely: nothing left of it
        cut_clip(root, T0 + 14.0, T0 + 15.0, root / "clips" / "full.mp4")
    assert not list(root.glob("clips/*.partial"))
    make_room(settings.recordings_dir, 3 * 2**20)  # as the recorder makes room for its next frame
    clips = [cut_clip(root, T0 + start, T0 + start + 1, root / "clips" / f"{start}.mp4") for start in (14.0, 14.5)]

    assert sink.stats.disk_dropped > 0 and sink.stats.write_errors == 0, "the disk was full, and only full"
    assert sink.stats.frames + sink.stats.disk_dropped == len(times)
    segments = sorted((settings.recordings_dir / "cam").rglob("*.ts"))
    assert len(segments) >= 3
    for segment in segments:
        assert read_back_errors(ffmpeg, segment) == "", segment.name
        assert len(segment.with_suffix(".jsonl").read_text().splitlines()) == frames_in(segment), segment.name
    for clip in clips:
        assert clip is not None and read_back_errors(ffmpeg, clip.path) == "", clip
    with contextlib.closing(sqlite3.connect(settings.events_db)) as database:
        assert database.execute("pragma integrity_check").fetchall() == [("ok",)]
