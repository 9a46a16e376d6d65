"""The daemon as a site server runs it: real processes, a real RTSP server, real subscribers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from stages.config import BUNDLED_WEIGHTS
from stages.media.video import VideoReader
from tests.conftest import SHIPPED
from tests.harness import assert_same_boxes_as_detect, collect, probe_video, wait_status
from tests.harness import vestwatch as run_cli


def decode_errors(path: Path) -> str:
    return probe_video(path)[1]


def frame_count(path: Path) -> int:
    return int(probe_video(path)[0]["nb_read_frames"])


def test_rtsp_and_file_streams_publish_record_and_stop(daemon, rtsp_server, make_video) -> None:
    server = rtsp_server(size="320x240", fps=10)
    clip = make_video("yard.mp4", seconds=3, fps=10, size="320x240")
    vestwatch = daemon([{"id": "gate", "url": server.url}, {"id": "yard", "url": str(clip), "realtime": False}])
    vestwatch.wait_ready()

    messages = collect(
        vestwatch.endpoint, lambda m: len(m.get("gate", [])) >= 15 and len(m.get("yard", [])) >= 30, timeout=120
    )

    for stream, (width, height) in {"gate": (320, 240), "yard": (320, 240)}.items():
        for message in messages[stream]:
            assert message["v"] == 3 and message["type"] == "det" and message["stream"] == stream
            assert (message["width"], message["height"]) == (width, height)
            assert len(message["boxes"]) == len(message["scores"]) == len(message["classes"]) == len(message["names"])
            assert all(0 <= b[0] <= b[2] <= width and 0 <= b[1] <= b[3] <= height for b in message["boxes"])
            assert sum(message["counts"].values()) == len(message["boxes"])
            assert all(set(p) >= {"track_id", "box", "vest", "hardhat", "zones"} for p in message["people"])
            assert "source_slot" not in message, "no internal pointer goes out"
            assert 0 < message["latency_ms"] < 30_000 and message["inference_ms"] > 0
            assert 1 <= message["batch_size"] <= 4
    yard = messages["yard"]
    assert [m["seq"] - yard[0]["seq"] for m in yard] == list(range(30)), "an offline stream loses no frame"
    assert [m["pts"] for m in yard[:3]] == [0.0, 0.1, 0.2]
    assert not any(m["drops"] for m in yard)

    code, seconds = vestwatch.stop()
    assert code == 0 and seconds < 10

    for stream in ("gate", "yard"):
        segments = sorted((vestwatch.recordings / stream).rglob("*.ts"))
        assert segments, f"no recording for {stream}"
        for segment in segments:
            assert decode_errors(segment) == "", segment
            lines = segment.with_suffix(".jsonl").read_text().splitlines()
            assert len(lines) == frame_count(segment)
    yard_frames = sum(frame_count(s) for s in (vestwatch.recordings / "yard").rglob("*.ts"))
    assert yard_frames == 30
    first = json.loads(next((vestwatch.recordings / "yard").rglob("*.jsonl")).read_text().splitlines()[0])
    assert first["seq"] == yard[0]["seq"] and first["counts"] == yard[0]["counts"]


def test_subscribe_command_prints_json_lines(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=10)
    vestwatch = daemon([{"id": "cam", "url": str(clip), "realtime": False, "loop": True}])
    vestwatch.wait_ready()
    result = run_cli("subscribe", "-c", vestwatch.config, "--topic", "det.cam", "--count", "5", "--timeout", "60")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0 and len(lines) == 5
    assert all(line["topic"] == "det.cam" and line["stream"] == "cam" for line in lines)


def test_bad_config_stops_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[streams]]\nid = "cam"\nurl = "rtsp://admin:hunter2@10.0.0.9/live"\nfps = -1\n')
    result = run_cli("run", "-c", config, timeout=60)
    assert result.returncode == 2
    assert "streams.0.fps: Input should be greater than 0" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_missing_weights_stop_start_up(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'runtime_dir = "{tmp_path}"\n[detector]\nweights = "{tmp_path / "none.pt"}"\n')
    started = time.monotonic()
    result = run_cli("run", "-c", config, timeout=60)
    assert result.returncode == 2 and "detector.weights:" in result.stderr and "not found" in result.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("letterbox", ["preprocess", "inference"])
def test_the_daemon_finds_what_the_detect_command_finds(daemon, site_clip, tmp_path, letterbox) -> None:
    """Capture, shared memory, rectangular letterbox, batching and box mapping change nothing.
    ``inference``: raw frames from the capture rings letterboxed by torch where the model runs, the
    GPU path (auto on CUDA) run here on the CPU as its twin."""
    streams = [{"id": "yard", "url": str(site_clip), "realtime": False}]
    vestwatch = daemon(streams, detector=SHIPPED, pipeline={"letterbox": letterbox})
    vestwatch.wait_ready()
    published = collect(vestwatch.endpoint, lambda m: len(m.get("yard", [])) >= 20, timeout=120)["yard"]
    assert {"vest", "no_vest", "person"} <= {name for m in published for name in m["names"]}
    assert_same_boxes_as_detect(published, site_clip, BUNDLED_WEIGHTS, tmp_path / "detect", SHIPPED["conf"])


def test_detect_fps_detects_some_frames_and_records_every_one(daemon, make_video) -> None:
    """A 10 fps file detected twice a second: every frame recorded, each drawn with the latest
    detections; offline, so nothing may be lost and nothing may wait for a detection that never comes."""
    clip = make_video("clip.mp4", seconds=3, fps=10)
    vestwatch = daemon([{"id": "yard", "url": str(clip), "realtime": False, "detect_fps": 2.0}])
    vestwatch.wait_ready()
    dets = collect(vestwatch.endpoint, lambda m: len(m.get("yard", [])) >= 6, timeout=120)["yard"]
    assert [round(m["pts"], 1) for m in dets] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    wait_status(vestwatch, lambda status: status["stages"]["stream.yard"]["stats"].get("frames") == 30)
    code, _ = vestwatch.stop()
    assert code == 0

    lines = [json.loads(line) for sidecar in sorted((vestwatch.recordings / "yard").rglob("*.jsonl"))
             for line in sidecar.read_text().splitlines()]  # fmt: skip
    assert len(lines) == 30, "every frame recorded"
    detected = {m["seq"] for m in dets}
    for line in lines:
        assert line["detections_of"] == max(seq for seq in detected if seq <= line["seq"]), line["seq"]


def test_camera_recording_copies_the_sources_own_video(daemon, rtsp_server, make_video) -> None:
    """``recording.video = "camera"``: an RTSP camera's and a file's H.264 recorded as it came (a
    file's every frame, pixel for pixel), each detected frame's line in the sidecar beside it."""
    server = rtsp_server(size="320x240", fps=10)
    clip = make_video("yard.mp4", seconds=3, fps=10, size="320x240", gop=10)
    vestwatch = daemon(
        [{"id": "gate", "url": server.url}, {"id": "yard", "url": str(clip), "realtime": False}],
        recording={"video": "camera"},
    )
    vestwatch.wait_ready()
    messages = collect(
        vestwatch.endpoint, lambda m: len(m.get("gate", [])) >= 15 and len(m.get("yard", [])) >= 30, timeout=120
    )
    wait_status(vestwatch, lambda status: status["stages"]["stream.yard"]["stats"].get("frames") >= 30)
    code, _ = vestwatch.stop()
    assert code == 0

    with VideoReader(clip) as source:
        original = [frame.image for frame in source.frames()]
    for stream in ("gate", "yard"):
        segments = sorted((vestwatch.recordings / stream).rglob("*.ts"))
        assert segments and all(decode_errors(segment) == "" for segment in segments), stream
        recorded = []
        for segment in segments:
            with VideoReader(segment) as reader:
                recorded += [frame.image for frame in reader.frames()]
        lines = [json.loads(line) for s in segments for line in s.with_suffix(".jsonl").read_text().splitlines()]
        assert "clock" in lines[0] and "seq" not in lines[0], "a copied segment's sidecar starts with its clock"
        detected = [line for line in lines if "seq" in line]
        # an RTSP camera joined mid-GOP: frames decoded before its first keyframe are not in the recording
        everything = {m["seq"]: m for m in messages[stream]}
        keyframe_pts = everything[detected[0]["seq"]]["pts"] - detected[0]["pts_s"]
        # (a frame the decoder gave out with no timestamp, before that keyframe, has no place in it either)
        published = {
            seq: m for seq, m in everything.items() if m["pts"] is not None and m["pts"] >= keyframe_pts - 0.001
        }
        assert {line["seq"] for line in detected} >= set(list(published)[:10]), "lines of detected frames only"
        for line in detected:
            if line["seq"] in published:
                assert line["counts"] == published[line["seq"]]["counts"]
        if stream == "yard":
            assert len(recorded) == 30 and all(np.array_equal(a, b) for a, b in zip(recorded, original, strict=True))
            assert [line["pts_s"] for line in detected[:3]] == [0.0, 0.1, 0.2]
        else:
            assert len(recorded) >= 15


def test_a_copied_recording_keeps_every_frame_while_only_some_are_detected(daemon, make_video) -> None:
    """detect_fps 2 on a 10 fps file recorded as it is: the frames not detected go into no ring
    (nothing looks at their pixels), yet every one is in the recording."""
    clip = make_video("clip.mp4", seconds=3, fps=10, gop=10)
    vestwatch = daemon(
        [{"id": "yard", "url": str(clip), "realtime": False, "detect_fps": 2.0}], recording={"video": "camera"}
    )
    vestwatch.wait_ready()
    dets = collect(vestwatch.endpoint, lambda m: len(m.get("yard", [])) >= 6, timeout=120)["yard"]
    assert [round(m["pts"], 1) for m in dets] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert [m["seq"] - dets[0]["seq"] for m in dets] == list(range(6)), "only detected frames were written"
    wait_status(vestwatch, lambda status: status["stages"]["capture.yard"]["stats"]["recorded_only"] == 24)
    code, _ = vestwatch.stop()
    assert code == 0
    assert sum(frame_count(s) for s in (vestwatch.recordings / "yard").rglob("*.ts")) == 30
