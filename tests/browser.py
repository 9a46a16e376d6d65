"""Headless Chromium (Debian's, installed by ``deploy/setup.sh --dev``) for the page tests."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import websocket

from tests.harness import LineWatcher, free_port

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

    def wait_for(self, expression: str, timeout: float = 30, explain: str = "") -> object:
        """Poll a JavaScript expression until it is truthy (the page updates on its own timers); on a
        timeout the error carries what ``explain`` evaluates to (the page's state, for a failure in CI)."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} stayed falsy" + (f": {self.evaluate(explain)}" if explain else ""))
            time.sleep(0.25)
        return value

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(10)
