"""Real processes for the integration tests: an RTSP server and the daemon, with event-based waits."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.subscriber import subscribe
from stages.commands.bench.media import RTSP_SERVER  # the bench's
from tests.matching import assert_same_boxes

SYSTEM_PYTHON = "/usr/bin/python3"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"  # Debian puts it in sbin

T = TypeVar("T")


def vestwatch(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, from this interpreter's environment (no PATH needed)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def rss_mib(pid: int) -> float:
    """A process's resident memory, MiB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmRSS:"))) / 1024


LISTEN_PORTS = range(20_000, 32_768)  # below Linux's range for connections' own ends (32768-60999)


def free_port() -> int:
    """A free port for a server a test starts, from ``LISTEN_PORTS``: one the kernel handed out (bind to 0)
    is from the range it also gives outgoing connections their own ports from, and one of those took
    it before the daemon could bind it (seen once in CI: "Address already in use")."""
    for port in random.sample(LISTEN_PORTS, 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {LISTEN_PORTS}")


class LineWatcher:
    """Collects a process's output lines in a thread; ``wait_for`` blocks until a line matches."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in iter(stream.readline, ""):
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[start:]:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching line in {timeout} s; last lines:\n" + "\n".join(self.lines[-30:]))
                self.changed.wait(remaining)

    def text(self) -> str:
        with self.changed:
            return "\n".join(self.lines)


class Mosquitto:
    """A real MQTT broker (Debian's mosquitto) on a free port, its sessions kept in ``folder`` across
    restarts, as a site's broker keeps them."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nlog_dest stderr\nlog_type information\n"
            f"user {getpass.getuser()}\n"  # as root it would switch to 'mosquitto', who cannot write here
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            LineWatcher(self.process.stderr).wait_for(lambda line: "running" in line, timeout=30)  # unbuffered
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # saves its sessions and queued messages first
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class RtspServer:
    def __init__(self, port: int, mount: str = "/cam", size: str = "320x240", fps: int = 15) -> None:
        self.port, self.mount, self.size, self.fps = port, mount, size, fps
        self.url = f"rtsp://127.0.0.1:{port}{mount}"
        self.process: subprocess.Popen | None = None

    def start(self) -> RtspServer:
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, str(RTSP_SERVER), str(self.port), f"pattern:{self.size}@{self.fps}", self.mount],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        LineWatcher(self.process.stdout).wait_for(lambda line: line == "READY", timeout=30)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class Daemon:
    """``vestwatch run -c CONFIG`` as a subprocess in its own session (so the whole tree can be killed)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.output = LineWatcher(self.process.stdout)

    def wait_ready(self, timeout: float = 90) -> None:
        self.output.wait_for(lambda line: line.startswith("vestwatch running"), timeout)

    def stage_pid(self, stage: str, after: int = 0) -> int:
        line = self.output.wait_for(lambda text: f"started {stage} (pid" in text, 30, start=after)
        return int(line.rsplit("pid ", 1)[1].rstrip(")"))

    def stop(self, timeout: float = 15) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds it took."""
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        return code, time.monotonic() - start

    def kill_all(self) -> None:
        """SIGKILL to the daemon and every stage at once, as a power cut would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def collect(
    endpoint: str,
    until: Callable[[dict[str, list[dict]]], bool],
    timeout: float,
    topics: tuple[str, ...] = ("det.",),
    types: tuple[str, ...] = ("det", "event"),
) -> dict[str, list[dict]]:
    """Messages per stream until ``until(messages)`` holds; TimeoutError with a summary if it never does.
    Only messages of ``types``: ``event.<stream>`` also carries ``camera`` ones (ask for them)."""
    messages: dict[str, list[dict]] = {}
    deadline = time.monotonic() + timeout
    for _, message in subscribe(endpoint, topics, timeout_s=timeout):
        if message["type"] in types:
            messages.setdefault(message["stream"], []).append(message)
        if until(messages):
            return messages
        if time.monotonic() > deadline:
            break
    counts = {k: len(v) for k, v in messages.items()}
    raise TimeoutError(f"condition not met in {timeout} s; messages per stream: {counts}")


def within(messages: Iterator[T], timeout: float) -> Iterator[T]:
    """``messages`` until ``timeout`` s have passed, then TimeoutError: a looping file never stops
    publishing, and a test must not wait for ever for what never comes."""
    deadline = time.monotonic() + timeout
    for message in messages:
        if time.monotonic() > deadline:
            raise TimeoutError(f"what the test waits for did not come in {timeout} s")
        yield message


def probe_video(path: Path) -> tuple[dict, str]:
    """Decode every frame of the first video stream with ffprobe.

    Returns the stream's fields (codec_name, width, height, nb_read_frames) and what ffprobe
    reported while decoding (empty when clean). Decoding, not remuxing: live frames are
    variable-rate, which a transcode to a fixed rate would flag although every frame decodes.
    """
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    streams = json.loads(result.stdout or "{}").get("streams") or [{}]
    problems = result.stderr.strip() + ("" if result.returncode == 0 else f" (exit {result.returncode})")
    return streams[0], problems


def recorded_seqs(folder: Path) -> list[int]:
    """The captured frames a stream's recordings hold, by seq, in order; checks that each segment
    decodes to as many frames as its sidecar has lines."""
    seqs: list[int] = []
    for segment in sorted(folder.rglob("*.ts")):
        lines = [json.loads(line) for line in segment.with_suffix(".jsonl").read_text().splitlines()]
        assert len(lines) == int(probe_video(segment)[0]["nb_read_frames"]), f"{segment}: sidecar and video differ"
        seqs += [line["seq"] for line in lines]
    return seqs


def wait_status(daemon: Daemon, predicate: Callable[[dict], bool], timeout: float = 60) -> float:
    """Poll ``vestwatch ctl status`` until the daemon reports what ``predicate`` wants; returns that moment."""
    deadline = time.monotonic() + timeout
    while True:
        result = vestwatch("ctl", "status", "-c", daemon.config, timeout=30)
        status = json.loads(result.stdout) if result.returncode == 0 else {}
        with contextlib.suppress(KeyError, TypeError):  # figures not reported yet
            if predicate(status):
                return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"status never matched: {status}")
        time.sleep(0.3)  # status figures arrive with once-a-second heartbeats


def assert_same_boxes_as_detect(published: list[dict], clip: Path, weights: Path, out: Path, conf: float) -> None:
    """``det`` messages of a whole clip carry the boxes ``vestwatch detect`` finds in it (img 640),
    paired by overlap (see ``tests.matching``)."""
    result = vestwatch("detect", clip, "--weights", weights, "--conf", str(conf), "--out", out)
    assert result.returncode == 0, result.stderr
    expected = [json.loads(line) for line in (out / clip.name).with_suffix(".jsonl").read_text().splitlines()]
    assert len(expected) == len(published)
    assert sum(len(frame["detections"]) for frame in expected) >= len(expected), "the model must find people"
    for message, frame in zip(published, expected):
        theirs = Detections(
            np.array([d["box"] for d in frame["detections"]]),
            np.array([d["score"] for d in frame["detections"]]),
            np.array([d["class_id"] for d in frame["detections"]]),
        )
        mine = Detections(np.array(message["boxes"]), np.array(message["scores"]), np.array(message["classes"]))
        assert_same_boxes(theirs, mine, conf)


@contextlib.contextmanager
def small_tmpfs(folder: Path, size_mb: int) -> Iterator[Path]:
    """A ``size_mb`` MB filesystem (tmpfs) at ``folder``, to fill; skips where mounting one is not allowed
    (it needs root, as CI and the development machine have)."""
    folder.mkdir(exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
                                 capture_output=True)  # fmt: skip
    except OSError:  # no mount command
        pytest.skip("cannot mount a small tmpfs here")
    if mounted.returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def self_signed(folder: Path, subject: str) -> tuple[Path, Path]:
    """A certificate for ``subject`` (EC P-256, valid a day) and its key, made by openssl; skips without it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the test certificate")
    cert, key = folder / f"{subject}.pem", folder / f"{subject}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", f"/CN={subject}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
