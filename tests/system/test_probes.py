"""Bad input never stops the daemon: malformed messages on every internal socket, a broken control
request, bad weights, an unwritable recordings folder, credentials in URLs, idle HTTP clients.
Each probe runs against the real daemon and failed before its fix."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from pipeline.detections import Detections
from pipeline.messages import Batchable, FrameRef, InferredMessage, topic
from stages.config import Settings, StreamSettings
from stages.stream.analysis import FrameAnalysis, Violation
from stages.stream.messages import EventMessage
from stages.stream.outputs.eventlog import EventLogSink
from tests.harness import (
    collect,
    free_port,
    probe_video,
    recorded_seqs,
    rss_mib,
    small_tmpfs,
    vestwatch,
    wait_status,
)


def stage_pids(daemon) -> dict[str, int]:
    status = json.loads(vestwatch("ctl", "status", "-c", daemon.config, timeout=30).stdout)
    return {name: stage["pid"] for name, stage in status["stages"].items()}


def send(address: str, kind: int, *frames: bytes) -> None:
    context = zmq.Context()
    try:
        out = context.socket(kind)
        out.setsockopt(zmq.LINGER, 2000)
        out.connect(address)
        if kind == zmq.PUB:
            time.sleep(0.5)  # a PUB drops what it sends before the subscription arrives
        out.send_multipart(list(frames))
        out.close()
    finally:
        context.term()


def test_a_two_part_control_request_is_answered_and_nothing_stops(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=1, fps=10)
    running = daemon([{"id": "cam", "url": str(clip), "loop": True, "record": False}])
    running.wait_ready()
    before = stage_pids(running)
    context = zmq.Context()
    try:
        request = context.socket(zmq.REQ)
        request.setsockopt(zmq.LINGER, 0)
        request.connect(f"ipc://{running.runtime_dir / 'control.ipc'}")
        request.send_multipart([b"\x81\xa1v\x01", b"second part"])
        assert request.poll(5000), "no reply to a two-part request"
        assert b"2 frames, expected one" in request.recv()
    finally:
        context.destroy(0)
    assert stage_pids(running) == before and running.process.poll() is None
    assert running.stop()[0] == 0


def test_out_of_range_slots_are_dropped_and_counted(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=10)
    running = daemon([{"id": "cam", "url": str(clip), "loop": True}])
    running.wait_ready()
    collect(running.endpoint, lambda m: len(m.get("cam", [])) >= 3, timeout=60)
    before = stage_pids(running)
    run = running.runtime_dir
    now = time.time()
    send(f"ipc://{run / 'preprocess-0.ipc'}", zmq.PUSH, FrameRef("cam", 10**12, 10**9, now, None, True).encode())
    ring_ref = Batchable("cam", 10**12, "ring-preprocess-0", 10**9, 1, 0, 320, 240, 1.0, [0, 0], now, None, True)
    send(f"ipc://{run / 'inference.ipc'}", zmq.PUSH, ring_ref.encode())
    inferred = InferredMessage("cam", 10**12, now, None, 320, 240, [], [], [], ["person"], 1.0, 1, source_slot=10**9)
    send(f"ipc://{run / 'publish.ipc'}", zmq.PUB, topic("inferred", "cam"), inferred.encode())

    def all_counted(status: dict) -> bool:
        stages = status["stages"]
        return all(stages[s]["stats"]["bad_messages"] >= 1 for s in ("preprocess.0", "inference", "stream.cam"))

    wait_status(running, all_counted)
    assert stage_pids(running) == before, "no stage restarted"
    after = time.time()
    collect(running.endpoint, lambda m: any(x["captured"] > after for x in m.get("cam", [])), timeout=60)
    assert running.stop()[0] == 0


@pytest.fixture
def broken_weights(tmp_path: Path) -> dict[str, Path]:
    from stages.config import BUNDLED_WEIGHTS

    files = {"zero": tmp_path / "zero.pt", "text": tmp_path / "text.pt", "truncated": tmp_path / "cut.safetensors"}
    files["zero"].write_bytes(b"")
    files["text"].write_text("this is not a model\n")
    files["truncated"].write_bytes(BUNDLED_WEIGHTS.read_bytes()[:500_000])
    return files


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("zero", "detector.weights: {zero} is empty"),
        ("text", "detector.weights: {text}: not a loadable model"),
        ("truncated", "detector.weights: {truncated}: not a readable safetensors file"),
        ("banana", "detector.device: device 'banana': expected cpu, cuda, cuda:N or auto"),
        ("hardhat", "streams.zones.require: the model sees neither 'hardhat' nor 'no_hardhat'"),
    ],
)
def test_a_model_that_cannot_serve_stops_start_up_with_one_line(
    tmp_path, broken_weights, tiny_weights, case, message
) -> None:
    lines = [f'runtime_dir = "{tmp_path / "run"}"', f'recordings_dir = "{tmp_path / "rec"}"']
    if case == "hardhat":  # the test model knows vests only
        lines += ["[[streams]]", 'id = "demo"', 'url = "demo"', 'zones = [{name = "site", require = ["hardhat"]}]']
    lines.append("[detector]")
    if case in broken_weights:
        lines.append(f'weights = "{broken_weights[case]}"')
    if case == "banana":
        lines.append('device = "banana"')
    if case == "hardhat":
        lines.append(f'weights = "{tiny_weights}"')
    config = tmp_path / "c.toml"
    config.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    result = vestwatch("run", "-c", config, timeout=60)
    assert result.returncode == 2
    assert message.format(**broken_weights) in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_a_reload_to_weights_that_cannot_load_is_refused(daemon, make_video, tmp_path) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=10)
    running = daemon([{"id": "cam", "url": str(clip), "loop": True, "record": False}])
    running.wait_ready()
    good = running.config.read_text()
    running.config.write_text(re.sub(r'weights = ".*"', f'weights = "{tmp_path / "gone.pt"}"', good))
    result = vestwatch("ctl", "reload", "-c", running.config, timeout=60)
    assert result.returncode == 1 and "detector.weights:" in result.stderr and "not found" in result.stderr
    after = time.time()
    collect(running.endpoint, lambda m: any(x["captured"] > after for x in m.get("cam", [])), timeout=60)
    assert running.stop()[0] == 0


def test_an_unusable_recordings_dir_stops_start_up_with_one_line(tmp_path) -> None:
    (tmp_path / "a-file").write_text("")
    config = tmp_path / "c.toml"
    config.write_text(f'runtime_dir = "{tmp_path / "run"}"\nrecordings_dir = "{tmp_path / "a-file" / "rec"}"\n')
    result = vestwatch("run", "-c", config, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"recordings_dir: {tmp_path / 'a-file' / 'rec'}: cannot write there (Not a directory)" in result.stderr


def test_credentials_in_a_source_url_never_reach_the_log(daemon) -> None:
    url = f"rtsp://viewer:Pa@ss/W0rd@127.0.0.1:{free_port()}/live?channel=1&token=s3cr3t"
    running = daemon([{"id": "gate", "url": url}])
    running.wait_ready()
    running.output.wait_for(lambda line: "gate:" in line and "retrying in" in line, timeout=60)
    assert running.stop()[0] == 0
    text = running.output.text()
    assert "rtsp://viewer:***@127.0.0.1" in text and "token=***" in text
    for secret in ("Pa@ss", "W0rd", "s3cr3t"):
        assert secret not in text


def test_idle_http_connections_neither_pile_up_threads_nor_block_health(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=1, fps=10)
    running = daemon([{"id": "cam", "url": str(clip), "loop": True, "record": False}])
    running.wait_ready()
    host, port = running.http.rsplit(":", 1)
    idle = [socket.create_connection((host, int(port))) for _ in range(200)]
    try:
        threads = int(
            next(
                line.split()[1]
                for line in Path(f"/proc/{running.process.pid}/status").read_text().splitlines()
                if line.startswith("Threads:")
            )
        )
        assert threads < 60, f"{threads} threads in the supervisor"
        for connection in idle[:5]:
            connection.close()
        deadline = time.monotonic() + 30
        while True:  # free slots come back as the idle clients time out or leave
            probe = socket.create_connection((host, int(port)), timeout=5)
            probe.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            try:
                answer = probe.recv(64)
            except OSError:
                answer = b""
            probe.close()
            if answer.startswith(b"HTTP/1.0 200") or time.monotonic() > deadline:
                break
        assert answer.startswith(b"HTTP/1.0 200"), answer
    finally:
        for connection in idle:
            connection.close()
    assert running.stop()[0] == 0
    assert "BrokenPipe" not in running.output.text() and "Traceback" not in running.output.text()


def test_an_http_port_out_of_range_is_one_line(tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'runtime_dir = "{tmp_path}"\nhttp = "127.0.0.1:99999"\n')
    result = vestwatch("run", "-c", config, timeout=60)
    assert result.returncode == 2 and "http: Value error, '127.0.0.1:99999' must be HOST:PORT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_second_daemon_on_the_same_runtime_dir_is_refused(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=1, fps=10)
    first = daemon([{"id": "cam", "url": str(clip), "loop": True, "record": False}])
    first.wait_ready()
    second = vestwatch("run", "-c", first.config, timeout=60)
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1
    assert f"runtime_dir: {first.runtime_dir} is in use by another vestwatch (pid {first.process.pid})" in second.stderr
    assert vestwatch("ctl", "status", "-c", first.config, timeout=30).returncode == 0, "the first still answers"
    assert first.stop()[0] == 0
    assert not list(first.runtime_dir.glob("ring-*")), "a clean stop removes the frame rings"


def test_a_runtime_dir_others_can_write_is_refused(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o777)
    run.chmod(0o777)
    config = tmp_path / "c.toml"
    config.write_text(f'runtime_dir = "{run}"\nrecordings_dir = "{tmp_path / "rec"}"\n')
    result = vestwatch("run", "-c", config, timeout=60)
    assert result.returncode == 2 and f"runtime_dir: {run} is writable by others (mode 777)" in result.stderr


def test_a_planted_symlink_never_becomes_a_frame_ring(tmp_path) -> None:
    from pipeline.frames import FrameRing, RingReaders

    victim = tmp_path / "victim.txt"
    victim.write_text("fourteen bytes")
    ring_path = tmp_path / "ring-capture-cam"
    ring_path.symlink_to(victim)
    assert RingReaders().read(ring_path, 0, 1) is None  # a reader does not follow it
    ring = FrameRing.create(ring_path, 4, (8, 8, 3))  # the writer replaces it
    ring.close()
    assert victim.read_text() == "fourteen bytes" and not ring_path.is_symlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB filesystem (tmpfs) with 3 MB left free; needs root, as CI and this machine have."""
    with small_tmpfs(tmp_path / "disk", 16) as disk:
        (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - 3 * 2**20))
        yield disk


@pytest.mark.parametrize("min_free_mb", [1, 0], ids=["floor", "write-fails"])
def test_a_full_disk_deletes_the_oldest_and_keeps_recording(small_disk, daemon, make_video, min_free_mb) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=10, size="320x240")
    recording = {"segment_s": 1, "crf": 0, "min_free_mb": min_free_mb}  # lossless: the disk fills in seconds
    running = daemon(
        [{"id": "cam", "url": str(clip), "loop": True}], recordings_dir=str(small_disk / "rec"), recording=recording
    )
    running.wait_ready()
    running.output.wait_for(lambda line: "for free space" in line, timeout=120)
    recorded = wait_status(running, lambda s: s["stages"]["stream.cam"]["stats"]["frames"] > 0)
    frames_then = json.loads(vestwatch("ctl", "status", "-c", running.config).stdout)["stages"]["stream.cam"]["stats"][
        "frames"
    ]
    wait_status(running, lambda s: s["stages"]["stream.cam"]["stats"]["frames"] > frames_then + 30)
    assert recorded and running.stop()[0] == 0
    text = running.output.text()
    assert "stream.cam exited" not in text and "Traceback" not in text
    segments = sorted((small_disk / "rec" / "cam").rglob("*.ts"))
    assert segments
    for segment in segments:
        stream, problems = probe_video(segment)
        assert problems == "", f"{segment.name}: {problems}"
        lines = segment.with_suffix(".jsonl").read_text().splitlines()
        assert [json.loads(line)["seq"] for line in lines], f"{segment.name}: empty sidecar"
        assert len(lines) == int(stream["nb_read_frames"]), segment.name


def test_made_up_subscriptions_cost_no_memory(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=10)
    running = daemon([{"id": "cam", "url": str(clip), "loop": True, "record": False}])
    running.wait_ready()
    collect(running.endpoint, lambda m: len(m.get("cam", [])) >= 3, timeout=60)
    inference = running.stage_pid("inference")
    before = {"supervisor": rss_mib(running.process.pid), "inference": rss_mib(inference)}
    context = zmq.Context()
    try:
        floods = []
        # Large ones disconnect their sender; short made-up ones are refused, and a connection
        # sending too many is hung up on (libzmq would keep ~3 KB for each distinct 70-byte one).
        for size, count in ((2048, 20_000), (12, 20_000), (70, 100_000)):
            flood = context.socket(zmq.SUB)
            flood.setsockopt(zmq.LINGER, 0)
            flood.setsockopt(zmq.SNDHWM, 0)
            flood.connect(running.endpoint)
            for i in range(count):
                flood.setsockopt(zmq.SUBSCRIBE, (f"det.{i:06d}" * 205)[:size].encode())
            floods.append(flood)
        wait_status(running, lambda s: s["subscribers_hung_up"] >= 2 and s["bad_subscriptions"] >= 2 * 256, timeout=120)
        after = {process: 0.0 for process in before}
        for _ in range(10):  # the floods go on (their sockets reconnect and resend): the peak over 5 s
            after = {"supervisor": max(after["supervisor"], rss_mib(running.process.pid)),
                     "inference": max(after["inference"], rss_mib(inference))}  # fmt: skip
            time.sleep(0.5)
        print(f"RSS before {before}, peak while flooded {after}")
        for process, mib in after.items():  # without the bounds: 350 MiB more in the supervisor
            assert mib - before[process] < 60, f"{process}: {before[process]:.0f} -> {mib:.0f} MiB"
        later = time.time()
        collect(running.endpoint, lambda m: any(x["captured"] > later for x in m.get("cam", [])), timeout=60)
    finally:
        context.destroy(0)
    assert running.stop()[0] == 0


def test_recording_goes_on_at_the_cameras_rate_when_inference_stalls(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=3, fps=10, size="320x240")
    running = daemon([{"id": "cam", "url": str(clip), "loop": True, "realtime": True}])
    running.wait_ready()
    collect(running.endpoint, lambda m: len(m.get("cam", [])) >= 5, timeout=60)
    inference = running.stage_pid("inference")

    def recorded(status: dict) -> int:
        return status["stages"]["stream.cam"]["stats"]["frames"]

    os.kill(inference, signal.SIGSTOP)  # no detections at all for a while
    try:
        stalled_at = json.loads(vestwatch("ctl", "status", "-c", running.config).stdout)
        wait_status(running, lambda s: recorded(s) >= recorded(stalled_at) + 40, timeout=30)  # 4 s at 10 fps
    finally:
        with contextlib.suppress(ProcessLookupError):  # restarted meanwhile on a very slow machine
            os.kill(inference, signal.SIGCONT)
    assert running.stop()[0] == 0
    status_lines = running.output.text()
    assert "stream.cam exited" not in status_lines
    seqs = recorded_seqs(running.recordings / "cam")
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "every captured frame is recorded"
    segments = sorted((running.recordings / "cam").rglob("*.jsonl"))
    lines = [json.loads(line) for s in segments for line in s.read_text().splitlines()]
    inferred = sum(line["detections_of"] == line["seq"] for line in lines)
    assert inferred < len(lines), "frames without detections of their own were recorded too"


def test_publish_keys_let_only_listed_subscribers_in(daemon, make_video, tmp_path) -> None:
    keys, strangers = tmp_path / "keys", tmp_path / "strangers"
    assert vestwatch("keys", keys).returncode == 0 and vestwatch("keys", strangers).returncode == 0
    shutil.copy(keys / "server.key", strangers / "server.key")  # they know the server, it does not know them
    clip = make_video("clip.mp4", seconds=2, fps=10)
    running = daemon([{"id": "cam", "url": str(clip), "loop": True}], publish_keys=str(keys))
    running.wait_ready()
    listed = vestwatch("subscribe", "-c", running.config, "--count", "3", "--timeout", "60")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 3, listed.stderr
    for intruder in (["--endpoint", running.endpoint], ["--endpoint", running.endpoint, "--keys", strangers]):
        result = vestwatch("subscribe", *intruder, "--count", "1", "--timeout", "5")
        assert result.returncode == 0 and result.stdout == "", "an unlisted subscriber got a message"
    status = json.loads(vestwatch("ctl", "status", "-c", running.config).stdout)
    assert status["stages"]["stream.cam"]["stats"]["frames"] > 0, "the daemon's own record stage still reads"
    assert running.stop()[0] == 0


def test_a_full_disk_delays_the_event_log_and_loses_no_event(small_disk: Path, tmp_path: Path) -> None:
    """The event database cannot be written while the disk is full: the stage goes on (no exception),
    and the next phase, once there is room, logs the whole event."""
    settings = Settings(recordings_dir=small_disk / "rec", runtime_dir=tmp_path / "run")
    sink = EventLogSink(settings, StreamSettings(id="cam", url="demo"))
    assert sink.store is not None
    (small_disk / "rest").write_bytes(b"\0" * shutil.disk_usage(small_disk).free)  # nothing left
    start = Violation("cam-1-7", "start", 7, ["site"], ["vest"], ["vest"], 1000.0, None, 0.0)
    frame = FrameAnalysis("cam", 1, 1000.0, None, 8, 8, Detections([], [], []), [])
    for _ in range(50):  # SQLite keeps some pages in memory: enough phases to need the disk
        sink.events((EventMessage.from_violation(frame, start, [], {}),))
    (small_disk / "rest").unlink()
    update = dataclasses.replace(start, phase="update", duration_s=5.0)
    sink.events((EventMessage.from_violation(frame, update, [], {}),))
    logged = sink.store.event("cam-1-7")
    assert logged["phase"] == "update" and logged["duration_s"] == 5.0 and logged["zones"] == ["site"]
    sink.close()
