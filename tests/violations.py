"""Test clips (``tests.clips``) played through the real daemon with the shipped model, as offline
files: the stream's clock is the file's own timeline, so what happens is the same on every run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from tests.conftest import SHIPPED, toml_value
from tests.harness import Daemon, collect, free_port

STREAM = "yard"
EVENTS = {"dwell_s": 1.0, "update_s": 2.0, "lost_s": 1.0}  # history 5, min_conf 0.25: the defaults
TIMEOUT_S = 300  # generous: both cores spun by other work took over 180 s; an unloaded 2-core box needs ~20 s


class Listener(threading.Thread):
    """``collect`` in the background from before the daemon is ready: a subscriber that connects
    only then may miss an offline clip's first frames, which go out as soon as the model is up."""

    def __init__(self, endpoint: str, frames: int, until: Callable | None = None) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.frames, self.until = endpoint, frames, until
        self.result: list[dict] = []
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        def done(messages: dict[str, list[dict]]) -> bool:
            mine = messages.get(STREAM, [])
            return sum(m["type"] == "det" for m in mine) >= self.frames and (self.until is None or self.until(mine))

        try:
            self.result = collect(self.endpoint, done, TIMEOUT_S, topics=(f"det.{STREAM}", f"event.{STREAM}"))[STREAM]
        except Exception as error:  # handed to the test's thread
            self.error = error

    def messages(self) -> list[dict]:
        """This stream's messages once every frame's ``det`` came."""
        self.join(TIMEOUT_S + 10)
        if self.error is not None:
            raise self.error
        if self.is_alive():
            raise TimeoutError(f"no answer in {TIMEOUT_S} s")
        return self.result


def start_daemon(
    folder: Path,
    clip: Path,
    zones: list[dict] | None,
    events: dict | None = None,
    recording: dict | None = None,
    top: dict | None = None,
    sections: dict[str, dict] | None = None,
) -> Daemon:
    """``vestwatch run`` on one offline stream (``top``: more top-level keys, ``sections``: more tables).
    Not conftest's ``daemon``: zones need TOML tables."""
    port, http = free_port(), f"127.0.0.1:{free_port()}"
    lines = [
        *(f"{key} = {toml_value(value)}" for key, value in (top or {}).items()),
        f"recordings_dir = {toml_value(str(folder / 'recordings'))}",
        f"runtime_dir = {toml_value(str(folder / 'run'))}",
        f'publish = "pub+bind:tcp://127.0.0.1:{port}"',
        f'http = "{http}"',
        "[[streams]]",
        f'id = "{STREAM}"',
        f"url = {toml_value(str(clip))}",
        "realtime = false",
    ]
    for zone in zones or []:
        lines.append("[[streams.zones]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in zone.items()]
    sections = {
        "detector": {**SHIPPED, "device": "cpu"},
        # inference at the daemon's own priority: these clips test what is found, not who yields the CPU
        # (niced, on a box whose cores other work spins, it got too little to finish a clip in minutes)
        "pipeline": {"preprocess_workers": 1, "max_batch": 4, "stall_s": 20, "inference_nice": 0},
        "recording": {"segment_s": 4, **(recording or {})},
        "events": {**EVENTS, **(events or {})},
        **(sections or {}),
    }
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    config = folder / "site.toml"
    config.write_text("\n".join(lines) + "\n")
    daemon = Daemon(config)
    daemon.endpoint, daemon.http = f"tcp://127.0.0.1:{port}", http
    return daemon
