"""The daemon under faults: killed stages, a lost RTSP server, a killed daemon, garbage, idle subscribers."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path

import msgpack
import zmq

from pipeline.messages import EncodedPacket
from tests.harness import RtspServer, collect, probe_video, wait_status


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(pid)


def test_killed_stage_is_restarted_and_detections_resume(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=10)
    vestwatch = daemon([{"id": "cam", "url": str(clip), "loop": True, "realtime": True}])
    vestwatch.wait_ready()
    collect(vestwatch.endpoint, lambda m: len(m.get("cam", [])) >= 5, timeout=60)
    mark = len(vestwatch.output.lines)
    inference = vestwatch.stage_pid("inference")
    capture = vestwatch.stage_pid("capture.cam")

    os.kill(inference, signal.SIGKILL)
    killed_at = time.time()

    vestwatch.output.wait_for(lambda line: "inference exited with code -9" in line, 30, start=mark)
    assert vestwatch.stage_pid("inference", after=mark) != inference
    resumed = collect(
        vestwatch.endpoint, lambda m: any(x["captured"] > killed_at + 0.5 for x in m.get("cam", [])), timeout=90
    )
    assert resumed["cam"]
    os.kill(capture, 0)  # the capture stage was not touched: still the same process
    assert vestwatch.stop()[0] == 0


def test_cameras_sharing_a_process_run_apart_and_restart_together(daemon, make_video) -> None:
    """pipeline.cameras_per_process = 2: a camera that is down does not hold up the one beside it in
    the same process, each reports under its own name, and a killed process restarts both."""
    clip = make_video("clip.mp4", seconds=2, fps=10)
    vestwatch = daemon(
        [
            {"id": "yard", "url": str(clip), "loop": True, "realtime": True},
            {"id": "gate", "url": "rtsp://127.0.0.1:9/x"},
        ],
        pipeline={"cameras_per_process": 2},
    )
    vestwatch.wait_ready()
    capture = vestwatch.stage_pid("capture.yard+gate")
    stream = vestwatch.stage_pid("stream.yard+gate")
    collect(vestwatch.endpoint, lambda m: len(m.get("yard", [])) >= 5, timeout=60)  # gate has no camera at all

    def shared(status: dict) -> bool:
        stages = status["stages"]
        return (
            stages["capture.yard"]["pid"] == stages["capture.gate"]["pid"] == capture
            and stages["stream.yard"]["pid"] == stages["stream.gate"]["pid"] == stream
            and stages["capture.yard"]["stats"]["frames"] > 0
            and stages["capture.gate"]["stats"]["reconnects"] > 0
        )

    wait_status(vestwatch, shared)
    mark = len(vestwatch.output.lines)
    os.kill(capture, signal.SIGKILL)
    killed_at = time.time()
    vestwatch.output.wait_for(lambda line: "capture.yard+gate exited with code -9" in line, 30, start=mark)
    assert vestwatch.stage_pid("capture.yard+gate", after=mark) != capture
    collect(vestwatch.endpoint, lambda m: any(x["captured"] > killed_at + 0.5 for x in m.get("yard", [])), timeout=90)
    os.kill(stream, 0)  # the stream stages' process was not touched
    assert vestwatch.stop()[0] == 0


def test_rtsp_outage_reconnects_without_restart(daemon, rtsp_server) -> None:
    server = rtsp_server(fps=10)
    vestwatch = daemon([{"id": "gate", "url": server.url}])
    vestwatch.wait_ready()
    collect(vestwatch.endpoint, lambda m: len(m.get("gate", [])) >= 5, timeout=60)
    capture = vestwatch.stage_pid("capture.gate")

    server.stop()
    time.sleep(10)  # the outage itself is what is under test, not a synchronisation
    restarted = RtspServer(server.port, fps=10).start()
    try:
        back_at = time.time()
        resumed = collect(
            vestwatch.endpoint, lambda m: any(x["captured"] > back_at for x in m.get("gate", [])), timeout=90
        )
        assert resumed["gate"]
        first_back = min(x["captured"] for x in resumed["gate"] if x["captured"] > back_at)
        # retried every reconnect_max_s (5 s) at most, each try bounded by rtsp_timeout_s (5 s)
        assert first_back - back_at < 12, f"frames again {first_back - back_at:.1f} s after the camera came back"
        lost = [line for line in vestwatch.output.lines if "WARNING stages.capture.stage: gate:" in line]
        assert lost and all(("read failed" in x or "cannot open" in x) and "retrying in" in x for x in lost)
        os.kill(capture, 0)  # reconnected inside the same capture process
        assert "capture.gate exited" not in vestwatch.output.text()
    finally:
        restarted.stop()
    assert vestwatch.stop()[0] == 0
    for sidecar in (vestwatch.recordings / "gate").rglob("*.jsonl"):
        captured = [json.loads(line)["captured"] for line in sidecar.read_text().splitlines()]
        gaps = [b - a for a, b in itertools.pairwise(captured)]
        assert max(gaps, default=0) < 6, f"{sidecar.name} spans the outage ({max(gaps):.1f} s gap)"


def test_killing_the_whole_daemon_leaves_playable_segments(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=4, fps=15, size="640x360")
    vestwatch = daemon([{"id": "cam", "url": str(clip), "loop": True, "realtime": True}], recording={"segment_s": 2})
    vestwatch.wait_ready()
    collect(vestwatch.endpoint, lambda m: len(m.get("cam", [])) >= 40, timeout=90)

    vestwatch.kill_all()

    segments = sorted((vestwatch.recordings / "cam").rglob("*.ts"))
    assert len(segments) >= 2
    for segment in segments:
        if segment.stat().st_size:
            assert probe_video(segment)[1] == "", segment


def test_garbage_on_bound_sockets_is_dropped_and_counted(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=10)
    vestwatch = daemon([{"id": "cam", "url": str(clip), "loop": True, "realtime": True}])
    vestwatch.wait_ready()
    collect(vestwatch.endpoint, lambda m: len(m.get("cam", [])) >= 3, timeout=60)
    runtime = vestwatch.config.parent / "run"
    context = zmq.Context()
    try:
        for name in ("preprocess-0.ipc", "inference.ipc", "supervisor.ipc"):
            push = context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 1000)
            push.connect(f"ipc://{runtime / name}")
            for junk in (b"\x00\xff garbage", b"\x81\xa1v\x01", b""):
                push.send(junk)
            push.send_multipart([b"two", b"frames"])
            push.close()
    finally:
        context.term()
    after = time.time()
    collect(vestwatch.endpoint, lambda m: any(x["captured"] > after + 1 for x in m.get("cam", [])), timeout=60)
    text = vestwatch.output.text()
    assert "dropped a malformed frame message" in text
    assert "dropped a malformed batchable message" in text
    assert "dropped a malformed heartbeat" in text
    assert "exited with code" not in text


def test_bad_packets_for_a_copied_recording_are_dropped_and_counted(daemon, make_video) -> None:
    """``recording.video = "camera"``: garbage, a packet with an impossible time base and one that is not
    H.264 reach the stream stage's recording socket; each is counted, the recording goes on, whole."""
    clip = make_video("clip.mp4", seconds=2, fps=10, gop=10)
    vestwatch = daemon([{"id": "cam", "url": str(clip), "loop": True, "realtime": True}], recording={"video": "camera"})
    vestwatch.wait_ready()
    wait_status(vestwatch, lambda status: status["stages"]["stream.cam"]["stats"]["frames"] >= 10)
    now = time.time()
    bad_time = EncodedPacket("cam", now, 0, 0, [0, 0], True, b"\0\0\1\x65", "h264", 320, 240)
    not_video = EncodedPacket("cam", now, 0, 0, [1, 10], True, b"not h264", "h264", 64, 64)  # a new size: a new segment
    context = zmq.Context()
    try:
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(f"ipc://{vestwatch.runtime_dir / 'record-cam.ipc'}")
        for junk in (b"\x00\xff garbage", bad_time.encode(), not_video.encode()):
            push.send(junk)
        push.close()
    finally:
        context.term()
    counted = {}

    def all_three_counted(status: dict) -> bool:
        stats = counted["stats"] = status["stages"]["stream.cam"]["stats"]
        return stats["bad_messages"] >= 3

    wait_status(vestwatch, all_three_counted)
    recorded = counted["stats"]["frames"]
    wait_status(vestwatch, lambda status: status["stages"]["stream.cam"]["stats"]["frames"] >= recorded + 20)
    code, _ = vestwatch.stop()
    assert code == 0
    text = vestwatch.output.text()
    assert "dropped a malformed frame/packet/source_status message" in text and "a packet the muxer refused" in text
    assert "exited with code" not in text
    for segment in sorted((vestwatch.recordings / "cam").rglob("*.ts")):
        stream, problems = probe_video(segment)
        assert problems == "" and stream["width"] == 320, segment


def test_subscriber_that_never_reads_does_not_grow_memory(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=30)
    vestwatch = daemon(
        [{"id": "cam", "url": str(clip), "loop": True, "realtime": True}],
        detector={"conf": 0.001, "max_det": 1000},  # many boxes: large messages
        # inference as fast as it goes: the recorder drawing 1000 boxes a frame would otherwise come first
        pipeline={"publish_hwm": 20, "inference_nice": 0},
    )
    vestwatch.wait_ready()
    proxy = vestwatch.process.pid  # the supervisor runs the publish proxy, where a subscriber's queue lives
    context = zmq.Context()
    idle = context.socket(zmq.SUB)
    idle.setsockopt(zmq.RCVHWM, 1)
    idle.setsockopt(zmq.SUBSCRIBE, b"")
    idle.connect(vestwatch.endpoint)
    try:
        # first fill what may legitimately fill: the kernel's loopback buffers and the 20-message queue
        warm = collect(vestwatch.endpoint, lambda m: unread_bytes(m) > 8 * 2**20, timeout=300)
        before = rss_kib(proxy)
        later = collect(vestwatch.endpoint, lambda m: unread_bytes(m) > 16 * 2**20, timeout=300)
        after = rss_kib(proxy)
    finally:
        idle.close(0)
        context.term()
    sent_kib = (unread_bytes(warm) + unread_bytes(later)) // 1024
    print(f"publish proxy (supervisor) RSS {before} -> {after} KiB while {sent_kib} KiB went unread by one subscriber")
    assert after - before < 6 * 1024  # an unbounded queue would grow by the 16 MiB sent meanwhile
    heavy = {"libtorch", "cv2", "libav", "onnxruntime"}  # any of them costs the supervisor 100s of MiB
    assert not {name for name in heavy if name in Path(f"/proc/{proxy}/maps").read_text()}


def unread_bytes(messages: dict[str, list[dict]]) -> int:
    return sum(map(message_bytes, messages.get("cam", [])))


def message_bytes(message: dict) -> int:
    return len(msgpack.packb(message))


def test_hung_stage_is_killed_and_restarted(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=10)
    vestwatch = daemon(
        [{"id": "cam", "url": str(clip), "loop": True, "realtime": True, "record": False}], pipeline={"stall_s": 3}
    )
    vestwatch.wait_ready()
    mark = len(vestwatch.output.lines)
    preprocess = vestwatch.stage_pid("preprocess.0")

    os.kill(preprocess, signal.SIGSTOP)  # alive but silent: only the heartbeat can tell

    vestwatch.output.wait_for(lambda line: "preprocess.0 stalled: no heartbeat for" in line, 30, start=mark)
    assert vestwatch.stage_pid("preprocess.0", after=mark) != preprocess
    after = time.time()
    collect(vestwatch.endpoint, lambda m: any(x["captured"] > after for x in m.get("cam", [])), timeout=60)
    assert vestwatch.stop()[0] == 0
