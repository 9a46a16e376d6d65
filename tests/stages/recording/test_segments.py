import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.messages import EncodedPacket
from stages.capture.stage import packet_message
from stages.media.video import VideoFrame, VideoReader
from stages.recording.segments import DiskFullError, SegmentRecorder
from tests.harness import probe_video


def test_segments_roll_over_and_decode(tmp_path: Path) -> None:
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=1.0, crf=30, fps_hint=10)
    for i in range(25):  # 2.5 s at 10 fps
        image = np.full((120, 161, 3), i * 10, np.uint8)
        recorder.write(image, 1000.0 + i / 10, 1000.0 + i / 10, {"seq": i})
    recorder.close()
    segments = sorted((tmp_path / "cam").rglob("*.ts"))
    assert len(segments) == 3
    counts = []
    for segment in segments:
        stream, problems = probe_video(segment)
        assert problems == ""
        width, frames = stream["width"], int(stream["nb_read_frames"])
        counts.append(int(frames))
        assert width == 160  # odd sides trimmed for yuv420p
        assert len(segment.with_suffix(".jsonl").read_text().splitlines()) == int(frames)
    assert counts == [10, 10, 5]


@pytest.mark.parametrize(("preset", "subme"), [("ultrafast", b"subme=0"), (None, b"subme=2")])
def test_recording_preset_reaches_x264(tmp_path: Path, preset: str | None, subme: bytes) -> None:
    """x264 writes its options into the stream; the default is veryfast (subme=2)."""
    chosen = {"preset": preset} if preset else {}
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=60.0, crf=30, fps_hint=10, **chosen)
    for i in range(3):
        recorder.write(np.full((64, 64, 3), i * 50, np.uint8), 1000.0 + i / 10, 1000.0 + i / 10, {"seq": i})
    recorder.close()
    (segment,) = (tmp_path / "cam").rglob("*.ts")
    assert subme in segment.read_bytes()


@pytest.mark.parametrize(("code", "error"), [(errno.ENOSPC, DiskFullError), (errno.EIO, OSError)])
def test_a_failed_write_leaves_whole_frames_and_lines(tmp_path: Path, monkeypatch, code: int, error: type) -> None:
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=60.0, crf=30, fps_hint=10)
    for i in range(10):
        recorder.write(np.full((120, 160, 3), i * 20, np.uint8), 1000.0 + i / 10, 1000.0, {"seq": i})
    ours = {recorder.segment.sink.fd, recorder.segment.sidecar.fd}
    real_write, calls = os.write, []

    def short_then_failing(fd: int, data: bytes) -> int:
        if fd not in ours:
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # a short write: half a frame reaches the disk
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "write", short_then_failing)
    with pytest.raises(error) as raised:
        recorder.write(np.full((120, 160, 3), 255, np.uint8), 1001.0, 1001.0, {"seq": 10})
    assert isinstance(raised.value, DiskFullError) == (code == errno.ENOSPC)
    monkeypatch.undo()
    assert len(calls) >= 2, "the short write was retried"
    recorder.write(np.full((120, 160, 3), 90, np.uint8), 1001.1, 1001.1, {"seq": 11})  # goes on in a new segment
    recorder.close()
    segments = sorted((tmp_path / "cam").rglob("*.ts"))
    assert len(segments) == 2
    first, problems = probe_video(segments[0])
    assert problems == "" and int(first["nb_read_frames"]) == 10, "cut back to the last whole frame"
    assert [json.loads(line)["seq"] for line in segments[0].with_suffix(".jsonl").read_text().splitlines()] == list(
        range(10)
    )


def copy_into(recorder: SegmentRecorder, video: Path, clock0: float = 1000.0) -> list[VideoFrame]:
    """Record ``video`` by copying its packets, as capture and the stream stage do; its decoded frames."""
    frames = []
    with VideoReader(video, copy_packets=True) as reader:
        assert reader.copier is not None
        for frame in reader.frames():
            for packet in frame.packets:
                message = EncodedPacket.decode(packet_message("cam", packet, reader.copier.codec, clock0).encode())
                recorder.write_packet(message, clock0 + (message.pts_s or 0.0))
            frames.append(frame)
            recorder.note(frame.pts_s, {"seq": frame.index})
    return frames


def test_copied_segments_hold_the_cameras_own_frames_cut_at_keyframes(make_video, tmp_path: Path) -> None:
    """x264's defaults (B-frames, a keyframe every 10 frames here) copied: every frame decodes to the
    same pixels, segments start at keyframes once segment_s is over, and each frame's sidecar line
    sits in the segment that holds it, at its time there."""
    video = make_video("gop.mp4", seconds=4, fps=10, size="160x120", gop=10)
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=1.5, crf=30)
    source = copy_into(recorder, video)
    recorder.close()

    segments = sorted((tmp_path / "cam").rglob("*.ts"))
    assert len(segments) == 2, "a keyframe every second: 2 s, then the rest"
    copied = []
    for segment in segments:
        assert probe_video(segment)[1] == ""
        with VideoReader(segment) as reader:
            copied += [frame.image for frame in reader.frames()]
    assert len(copied) == len(source) == 40
    assert all(np.array_equal(a, b.image) for a, b in zip(copied, source, strict=True)), "not re-encoded"

    firsts = [json.loads(s.with_suffix(".jsonl").read_text().splitlines()[0]) for s in segments]
    assert [f["clock"] for f in firsts] == [1000.0, 1002.0] and all(f["pts_s"] == 0.0 for f in firsts)
    lines = [json.loads(line) for s in segments for line in s.with_suffix(".jsonl").read_text().splitlines()[1:]]
    assert [line["seq"] for line in lines] == list(range(40))
    assert [line["pts_s"] for line in lines[18:22]] == [1.8, 1.9, 0.0, 0.1]


def test_copying_starts_at_a_keyframe_and_a_picture_size_change_starts_a_segment(make_video, tmp_path) -> None:
    small, large = make_video("a.mp4", seconds=1, size="160x120"), make_video("b.mp4", seconds=1, size="320x240")
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=60.0, crf=30)
    with VideoReader(small, copy_packets=True) as reader:
        packets = [p for frame in reader.frames() for p in frame.packets]
        codec = reader.copier.codec
    assert not recorder.write_packet(EncodedPacket.decode(packet_message("cam", packets[1], codec, 0.0).encode()), 0.0)
    assert recorder.awaiting_keyframe == 1
    copy_into(recorder, small)
    copy_into(recorder, large, clock0=1001.0)
    recorder.close()
    sizes = [probe_video(s)[0]["width"] for s in sorted((tmp_path / "cam").rglob("*.ts"))]
    assert sizes == [160, 320]


def test_a_packet_the_muxer_refuses_is_left_out_and_recording_goes_on(make_video, tmp_path: Path) -> None:
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=60.0, crf=30)
    junk = EncodedPacket("cam", 1000.0, 0, 0, [1, 90000], True, b"not h264 at all", "h264", 160, 120)
    with pytest.raises(ValueError, match="refused"):
        recorder.write_packet(junk, 1000.0)
    assert recorder.segment is None and not list(tmp_path.rglob("*.ts")), "no empty segment left behind"
    frames = copy_into(recorder, make_video("a.mp4", seconds=1, size="160x120"))
    recorder.close()
    (segment,) = tmp_path.rglob("*.ts")
    stream, problems = probe_video(segment)
    assert problems == "" and int(stream["nb_read_frames"]) == len(frames)


def test_a_late_result_after_a_jump_back_goes_to_the_segment_that_holds_its_frame(make_video, tmp_path) -> None:
    """A looped file starts over at pts 0: the results still to come of the first run's last frames are
    placed in the segment that ended there, never at their old times in the new one; a timestamp
    stepping back by a tick (a camera's jitter) does not cut a segment."""
    video = make_video("loop.mp4", seconds=2, fps=10, size="160x120", gop=10)
    recorder = SegmentRecorder(tmp_path, "cam", segment_s=60.0, crf=30)
    copy_into(recorder, video)
    with VideoReader(video, copy_packets=True) as reader:
        first = next(reader.frames())  # the second run's first frame: its keyframe and a few more
        for packet in first.packets:
            recorder.write_packet(
                EncodedPacket.decode(packet_message("cam", packet, reader.copier.codec, 2000.0).encode()), 2000.0
            )
    recorder.note(1.9, {"seq": 19, "late": True})
    assert recorder.position(1.9)[0] == recorder.previous.path
    assert recorder.position(0.0)[0] == recorder.segment.path
    assert recorder.position(30.0) is None, "a time neither segment holds has no place"
    recorder.close()
    first_run, second_run = sorted(tmp_path.rglob("*.jsonl"))  # named by capture time: 1000 s, then 2000 s
    late = json.loads(first_run.read_text().splitlines()[-1])
    assert late["late"] and late["pts_s"] == 1.9
    assert all("late" not in line for line in second_run.read_text().splitlines())
