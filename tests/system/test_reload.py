"""Reloading the config of the running daemon: streams come and go, the others are untouched; every
changed setting restarts the stages that read it, and only those."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stages.recording.paths import SEGMENT
from tests.conftest import SHIPPED, toml_value
from tests.harness import MOSQUITTO, Daemon, Mosquitto, collect, vestwatch, wait_status
from tests.stages.stream.outputs.test_mqtt import Watcher


def test_reload_adds_and_removes_streams_without_touching_the_others(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=10)
    stream = {"url": str(clip), "loop": True, "realtime": True, "record": False}
    running = daemon([{"id": "a", **stream}])
    running.wait_ready()
    collect(running.endpoint, lambda m: len(m.get("a", [])) >= 3, timeout=60)
    capture_a, inference = running.stage_pid("capture.a"), running.stage_pid("inference")

    config = running.config.read_text()
    running.config.write_text(config + f'[[streams]]\nid = "b"\nurl = "{clip}"\nloop = true\nrecord = false\n')
    reply = vestwatch("ctl", "reload", "-c", running.config, timeout=60)
    assert reply.returncode == 0, reply.stderr
    assert '"added": [\n  "capture.b",\n  "stream.b"\n ]' in reply.stdout
    added = time.time()
    collect(
        running.endpoint,
        lambda m: (
            any(x["captured"] > added for x in m.get("b", [])) and any(x["captured"] > added for x in m.get("a", []))
        ),
        timeout=60,
    )
    assert running.stage_pid("capture.a") == capture_a and running.stage_pid("inference") == inference

    without_a = re.sub(r'\[\[streams\]\]\nid = "a"\n(?:[a-z]+ = .*\n)+', "", running.config.read_text())
    running.config.write_text(without_a.replace("conf = 0.3", "conf = 0.6"))
    mark = len(running.output.lines)
    os.kill(running.process.pid, signal.SIGHUP)  # the same as ctl reload
    running.output.wait_for(lambda line: "reloaded:" in line and "capture.a" in line, 30, start=mark)
    removed = wait_status(running, lambda st: st["stages"]["inference"]["stats"]["streams"]["b"]["conf"] == 0.6)
    after = collect(running.endpoint, lambda m: sum(x["captured"] > removed for x in m.get("b", [])) >= 10, timeout=60)
    assert not [m for m in after.get("a", []) if m["captured"] > removed]
    assert all(s >= 0.6 for m in after["b"] if m["captured"] > removed for s in m["scores"])  # sent rounded
    assert "inference exited" not in running.output.text()  # thresholds applied live, no restart

    running.config.write_text("[[streams]\nbroken")
    control = f"rep+bind:ipc://{running.config.parent / 'run' / 'control.ipc'}"  # the config cannot tell it now
    refused = vestwatch("ctl", "reload", "--endpoint", control, timeout=60)
    assert refused.returncode == 1 and "not valid TOML" in refused.stderr  # the daemon's own refusal
    assert vestwatch("ctl", "status", "--endpoint", control, timeout=60).returncode == 0  # still running
    assert running.stop()[0] == 0


class Hooks(ThreadingHTTPServer):
    """A webhook receiver: the JSON it was POSTed, awaited with ``wait_for``."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.changed = threading.Condition()
        super().__init__(("127.0.0.1", 0), HookHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hook"

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float) -> dict:
        """The first body that ``predicate`` accepts."""
        with self.changed:
            assert self.changed.wait_for(lambda: any(map(predicate, self.bodies)), timeout), self.bodies
            return next(body for body in self.bodies if predicate(body))


class HookHandler(BaseHTTPRequestHandler):
    server: Hooks

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()
        with self.server.changed:
            self.server.bodies.append(body)
            self.server.changed.notify_all()

    def log_message(self, *args: object) -> None:
        """Quiet."""


def reload(running: Daemon, edit: Callable[[str], str]) -> dict:
    """``ctl reload`` after ``edit`` of the config's text; what it says it did."""
    running.config.write_text(edit(running.config.read_text()))
    reply = vestwatch("ctl", "reload", "-c", running.config, timeout=60)
    assert reply.returncode == 0, reply.stderr
    return json.loads(reply.stdout)


@pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed (deploy/setup.sh --dev)")
def test_a_reload_applies_what_each_stage_reads(daemon, site_clip, tmp_path) -> None:
    """One daemon, three reloads, each seen in what the daemon does next: the outputs ([[webhooks]],
    [mqtt], http_url); a recorder, recording.video and a zone; [detector]. A move of its sockets is refused."""
    sinks = ["snapshots", "webhooks", "mqtt"]
    stream = {"id": "yard", "url": str(site_clip), "realtime": True, "loop": True, "sinks": sinks}
    nowhere = {"host": "127.0.0.1", "port": 1}  # no broker there
    running = daemon([stream], detector=SHIPPED, events={"dwell_s": 0.5}, mqtt=nowhere)
    running.wait_ready()
    first = collect(running.endpoint, lambda m: len(m.get("yard", [])) >= 5, timeout=60)["yard"]
    assert max(len(m["boxes"]) for m in first) > 1, "the site pictures show several workers"
    broker, hooks = Mosquitto(tmp_path / "broker").start(), Hooks()
    watcher = Watcher(broker.port)
    try:
        done = reload(running, lambda c: f'http_url = "https://vw.example:8443"\n{c}[[webhooks]]\nurl = "{hooks.url}"\n'
                      .replace("port = 1\n", f"port = {broker.port}\n"))  # fmt: skip
        assert done["restarted"] == ["stream.yard"] and done["after_restart"] == ["http_url"]  # the server's names
        event = hooks.wait_for(lambda body: body.get("type") == "event", timeout=60)
        assert event["snapshot_url"].startswith("https://vw.example:8443/")
        watcher.wait_for(lambda messages: any("/yard/" in m.topic for m in messages), timeout=30)

        recorded = toml_value(["recorder", *sinks]) + '\nzones = [{ name = "pit" }]'
        done = reload(running, lambda c: c.replace(toml_value(sinks), recorded)
                      .replace("[recording]\n", '[recording]\nvideo = "camera"\n'))  # fmt: skip
        assert sorted(done["restarted"]) == ["capture.yard", "stream.yard"], "both ends of the recording link"
        wait_status(running, lambda st: st["stages"]["stream.yard"]["stats"]["frames"] > 0)
        assert list((running.recordings / "yard").rglob(SEGMENT + "*")), "no segment"
        hooks.wait_for(lambda body: body.get("type") == "event" and body["zones"] == ["pit"], timeout=60)
    finally:
        watcher.close()
        broker.stop()
        hooks.shutdown()

    done = reload(running, lambda c: c.replace("[detector]\n", "[detector]\nmax_det = 1\n"))
    assert done["restarted"] == ["inference"]
    reloaded = time.time()
    later = collect(running.endpoint, lambda m: sum(x["captured"] > reloaded for x in m.get("yard", [])) >= 5, 60)
    assert all(len(m["boxes"]) <= 1 for m in later["yard"] if m["captured"] > reloaded)

    control = f"rep+bind:ipc://{running.runtime_dir / 'control.ipc'}"
    running.config.write_text(running.config.read_text().replace(str(running.runtime_dir), str(tmp_path / "moved")))
    refused = vestwatch("ctl", "reload", "--endpoint", control, timeout=60)
    assert refused.returncode == 1 and "runtime_dir changed" in refused.stderr, refused.stderr
    assert running.stop()[0] == 0
