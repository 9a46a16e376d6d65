"""Steering the running daemon through its control channel, as an operator would."""

from __future__ import annotations

import json
import time

import zmq

from tests.harness import collect, free_port, vestwatch, wait_status


def ctl(daemon_process, *words: str) -> tuple[int, dict | None, str]:
    result = vestwatch("ctl", *words, "-c", daemon_process.config, timeout=30)
    return result.returncode, json.loads(result.stdout) if result.returncode == 0 else None, result.stderr


def test_live_thresholds_pause_resume_and_status(daemon, scene_video) -> None:
    clip = scene_video
    streams = [{"id": name, "url": str(clip), "loop": True, "realtime": True, "record": False} for name in ("a", "b")]
    vestwatch_daemon = daemon(streams, detector={"conf": 0.1})
    vestwatch_daemon.wait_ready()
    before = collect(vestwatch_daemon.endpoint, lambda m: len(m.get("a", [])) >= 5 and len(m.get("b", [])) >= 5, 90)
    assert any(s < 0.5 for m in before["a"] for s in m["scores"]), "the test needs boxes below 0.5 to start with"

    code, reply, _ = ctl(vestwatch_daemon, "set", "conf", "0.5", "--stream", "a")
    assert code == 0 and reply == {"set": {"a": {"conf": 0.5}}}
    changed = wait_status(
        vestwatch_daemon, lambda st: st["stages"]["inference"]["stats"]["streams"]["a"]["conf"] == 0.5
    )
    after = collect(
        vestwatch_daemon.endpoint,
        lambda m: (
            sum(x["captured"] > changed for x in m.get("a", [])) >= 5
            and sum(x["captured"] > changed for x in m.get("b", [])) >= 5
        ),
        90,
    )
    assert all(
        s >= 0.5 for m in after["a"] if m["captured"] > changed for s in m["scores"]
    )  # scores are sent rounded to 4 places
    assert any(s < 0.5 for m in after["b"] if m["captured"] > changed for s in m["scores"]), "b keeps 0.1"

    assert ctl(vestwatch_daemon, "pause", "a")[0] == 0
    paused = wait_status(vestwatch_daemon, lambda st: st["stages"]["capture.a"]["stats"]["paused"] is True)
    during = collect(vestwatch_daemon.endpoint, lambda m: sum(x["captured"] > paused for x in m.get("b", [])) >= 20, 90)
    assert not [m for m in during.get("a", []) if m["captured"] > paused], "a paused: nothing processed"
    code, status, _ = ctl(vestwatch_daemon, "status")
    assert code == 0 and status["paused"] == ["a"]

    assert ctl(vestwatch_daemon, "resume", "a")[0] == 0
    resumed = time.time()
    collect(vestwatch_daemon.endpoint, lambda m: any(x["captured"] > resumed + 0.5 for x in m.get("a", [])), 90)

    code, status, _ = ctl(vestwatch_daemon, "status")
    inference = status["stages"]["inference"]["stats"]
    assert inference["model"] == "tiny.safetensors" and inference["device"] == "cpu"
    stream_b = inference["streams"]["b"]
    assert (
        stream_b["published"] > 0
        and stream_b["fps_out"] > 0
        and 0 < stream_b["latency_p50_ms"] <= stream_b["latency_p99_ms"]
    )
    assert stream_b["conf"] == 0.1 and inference["streams"]["a"]["conf"] == 0.5
    assert status["stages"]["capture.b"]["state"] == "connected" and status["uptime_s"] > 0
    assert vestwatch_daemon.stop()[0] == 0


def test_bad_requests_get_error_replies_and_are_counted(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=1, fps=10)
    vestwatch_daemon = daemon([{"id": "cam", "url": str(clip), "loop": True, "record": False}])
    vestwatch_daemon.wait_ready()
    assert ctl(vestwatch_daemon, "set", "conf", "2")[2].count("outside [0, 1]") == 1
    assert "cannot set 'fps'" in ctl(vestwatch_daemon, "set", "fps", "3")[2]
    assert "unknown stream 'nope'" in ctl(vestwatch_daemon, "pause", "nope")[2]
    context = zmq.Context()
    try:
        for junk in (b"\x00garbage", b"\x81\xa1v\x01"):
            socket = context.socket(zmq.REQ)
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(f"ipc://{vestwatch_daemon.config.parent / 'run' / 'control.ipc'}")
            socket.send(junk)
            assert socket.poll(5000), "no reply to garbage"
            reply = socket.recv()
            assert b"error" in reply and b"MessageError" in reply
            socket.close()
    finally:
        context.term()
    code, status, _ = ctl(vestwatch_daemon, "status")
    assert code == 0 and status["bad_requests"] == 5
    assert "exited with code" not in vestwatch_daemon.output.text()


def test_tcp_control_requires_curve_keys(daemon, make_video, tmp_path) -> None:
    keys = tmp_path / "keys"
    assert vestwatch("keys", keys).returncode == 0
    assert (keys / "server.key_secret").stat().st_mode & 0o077 == 0  # secrets readable by the owner only
    port = free_port()
    clip = make_video("clip.mp4", seconds=1, fps=10)
    running = daemon(
        [{"id": "cam", "url": str(clip), "loop": True, "record": False}],
        control=f"rep+bind:tcp://127.0.0.1:{port}",
        control_keys=str(keys),
    )
    running.wait_ready()
    endpoint = f"rep+bind:tcp://127.0.0.1:{port}"
    allowed = vestwatch("ctl", "status", "--endpoint", endpoint, "--keys", keys, timeout=60)
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["stages"]["capture.cam"]

    strangers = tmp_path / "strangers"
    vestwatch("keys", strangers)  # valid keys, but not authorised by this daemon
    refused = vestwatch("ctl", "status", "--endpoint", endpoint, "--keys", strangers, timeout=60)
    plain = vestwatch("ctl", "status", "--endpoint", endpoint, timeout=60)
    assert refused.returncode == 2 and "no answer" in refused.stderr
    assert plain.returncode == 2 and "no answer" in plain.stderr


def test_tcp_control_without_keys_is_a_config_error(tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('control = "rep+bind:tcp://0.0.0.0:5561"\n')
    result = vestwatch("run", "-c", config, timeout=60)
    assert result.returncode == 2 and "needs control_keys" in result.stderr
