"""A camera that is down is loud everywhere an operator or an integrator looks, never "Safe": its Home
Assistant entities unavailable (a real Mosquitto, read as HA reads discovery), its problem sensor on,
``camera_down`` to webhooks and on ``event.<stream>``, ``/healthz`` 503 and ``/metrics`` naming it;
the other camera stays watched; all of it back once the camera is."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness import MOSQUITTO, Mosquitto, collect
from tests.stages.stream.outputs.test_mqtt import Watcher
from tests.stages.web.test_observe import healthz_until
from tests.system.test_reload import Hooks

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed (deploy/setup.sh --dev)")

SITE = "north-yard"
WITHIN_S = 15.0  # the bound, down and back


def metric(http: str, line_start: str) -> str:
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as response:
        return next(line for line in response.read().decode().splitlines() if line.startswith(line_start))


def test_a_camera_whose_rtsp_server_stops_is_unavailable_then_back(daemon, rtsp_server, make_video, tmp_path) -> None:
    broker, hooks = Mosquitto(tmp_path / "broker").start(), Hooks()
    watcher = Watcher(broker.port)
    camera = rtsp_server(fps=10)
    clip = make_video("yard.mp4", seconds=2, fps=10)
    sinks = ["mqtt", "webhooks"]
    streams = [
        {"id": "gate", "url": camera.url, "sinks": sinks, "record": False},
        {"id": "yard", "url": str(clip), "loop": True, "realtime": True, "sinks": sinks, "record": False},
    ]
    mqtt = {"host": "127.0.0.1", "port": broker.port}
    vestwatch = daemon(streams, site=SITE, mqtt=mqtt, webhooks=[{"url": hooks.url}])
    base = f"vestwatch/{SITE}"
    try:
        vestwatch.wait_ready()
        for stream in ("gate", "yard"):
            watcher.wait_for(lambda ms, s=stream: watcher.last(f"{base}/{s}/problem") == b"OFF", timeout=90)
        healthz_until(f"http://{vestwatch.http}", lambda code: code == 200)

        camera.stop()
        stopped = time.monotonic()
        watcher.wait_for(lambda ms: watcher.last(f"{base}/gate/watched") == b"offline", timeout=WITHIN_S)
        assert time.monotonic() - stopped < WITHIN_S
        watcher.wait_for(lambda ms: watcher.last(f"{base}/gate/problem") == b"ON", timeout=5)
        config = json.loads(watcher.last(f"homeassistant/binary_sensor/vestwatch_{SITE}_gate/violation/config"))
        assert {"topic": f"{base}/gate/watched"} in config["availability"], "the violation sensor goes unavailable"
        down = hooks.wait_for(lambda body: body.get("event") == "camera_down" and body["stream"] == "gate", timeout=10)
        assert down["site"] == SITE and down["reason"].startswith("source lost"), down
        healthz_until(f"http://{vestwatch.http}", lambda code: code == 503, saying="camera gate down: ")
        assert metric(vestwatch.http, 'vestwatch_camera_state{state="down",stream="gate"}').split()[-1] in ("1", "1.0")
        assert watcher.last(f"{base}/yard/watched") == b"online" and watcher.last(f"{base}/yard/problem") == b"OFF"

        published: list[dict] = []  # what a subscriber of event.gate reads as the camera comes back
        subscriber = threading.Thread(target=lambda: published.extend(collect(
            vestwatch.endpoint, lambda m: bool(m.get("gate")), 60, topics=("event.gate",), types=("camera",)
        )["gate"]))  # fmt: skip
        subscriber.start()
        camera.start()  # the same port: back after capture's next retry, seconds from now
        back = time.monotonic()
        watcher.wait_for(lambda ms: watcher.last(f"{base}/gate/watched") == b"online", timeout=WITHIN_S)
        assert time.monotonic() - back < WITHIN_S
        up = ("camera_up", "gate")
        hooks.wait_for(lambda body: (body.get("event"), body["stream"]) == up and body["since"] > down["since"], 10)
        subscriber.join(60)
        assert [(m["event"], m["state"]) for m in published] == [("camera_up", "watching")], published
        healthz_until(f"http://{vestwatch.http}", lambda code: code == 200)
        yard = [m.payload for m in watcher.messages if m.topic == f"{base}/yard/watched"]
        assert b"offline" not in yard[yard.index(b"online") :], "the other camera stayed available once watched"
        stopping = len(vestwatch.output.lines)
        assert vestwatch.stop()[0] == 0
        assert not [line for line in vestwatch.output.lines[stopping:] if "gone" in line], "a clean stop"
    finally:
        watcher.close()
        broker.stop()
        hooks.shutdown()
