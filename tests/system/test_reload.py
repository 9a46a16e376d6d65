"""Reloading the config of the running daemon: streams come and go, the others are untouched."""

from __future__ import annotations

import os
import re
import signal
import time

from tests.harness import collect, vestwatch, wait_status


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
