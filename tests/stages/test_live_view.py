"""The live view in a real headless Chromium: every stream listed, every stream's picture updating."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import websocket

from tests.harness import LineWatcher, collect, free_port

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Browser:
    """Headless Chromium driven over the DevTools protocol: open a page, evaluate JavaScript in it."""

    def __init__(self, chromium: str, profile: Path) -> None:
        port = free_port()
        self.process = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        LineWatcher(self.process.stderr).wait_for(lambda line: "DevTools listening on" in line, 60)
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: object) -> dict:
        request = next(self.ids)
        self.socket.send(json.dumps({"id": request, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == request:
                return reply.get("result", {})

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> object:
        """Poll a JavaScript expression until it is truthy (the page updates on its own timers)."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} stayed falsy")
            time.sleep(0.25)
        return value

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(10)


def test_live_page_lists_streams_and_frames_update(daemon, make_video, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (deploy/setup.sh --dev installs it)")
    clip = make_video("clip.mp4", seconds=2, fps=10)
    streams = [
        {"id": "north", "url": str(clip), "loop": True, "realtime": True},
        {"id": "south", "url": str(clip), "loop": True, "realtime": True, "record": False},
    ]
    vestwatch = daemon(streams)
    vestwatch.wait_ready()
    collect(vestwatch.endpoint, lambda m: len(m.get("north", [])) >= 3 and len(m.get("south", [])) >= 3, timeout=60)
    http = next(line for line in vestwatch.config.read_text().splitlines() if line.startswith("http"))

    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.call("Page.navigate", url=f"http://{http.split(chr(34))[1]}/")
        rows = browser.wait_for("[...document.querySelectorAll('#table tbody tr')].map(r => r.innerText)")
        assert sorted(row.split("\t")[0] for row in rows) == ["north", "south"]
        assert all(row.split("\t")[1] == "connected" for row in rows), rows
        for stream in ("north", "south"):
            distinct = browser.wait_for(
                f"(n => n >= 3 && n)(+document.getElementById('live-{stream}').dataset.distinct)"
            )
            assert distinct >= 3, f"{stream}: the picture did not change"
        assert "model tiny.safetensors on cpu" in browser.evaluate("document.getElementById('summary').innerText")
    finally:
        browser.close()
