"""The bench's cameras: the site clip re-encoded as a camera would send it, served live.

The clip is scaled to the asked resolution and frame rate, looped to the length of a run and
encoded H.264 without B-frames and with a keyframe a second (as site cameras stream), with
PyAV so that no ffmpeg binary is needed (GPU servers often lack one). It is cached: a 1080p
clip takes a while to encode once.

Live streams: over RTSP where GStreamer's RTSP server is installed (Debian's ``python3-gi`` and
``gir1.2-gst-rtsp-server-1.0``, run by Debian's own python3: a venv cannot import ``gi``), one
mount per camera, each client its own real-time playback; else the daemon reads the file as a
real-time source (``realtime = true``, paced at the file's rate), which skips only the network.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av

from stages.capture.sources.demo import demo_clip

SYSTEM_PYTHON = Path("/usr/bin/python3")
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")


def camera_clip(source: Path, size: tuple[int, int], fps: float, seconds: float, cache: Path) -> Path:
    """``source`` as a camera stream of ``size`` at ``fps`` lasting ``seconds`` (looped), cached in ``cache``."""
    key = hashlib.sha256(f"{source.resolve()}:{source.stat().st_mtime}:{size}:{fps}:{seconds}".encode()).hexdigest()
    out = cache / f"camera-{size[0]}x{size[1]}-{fps:g}fps-{seconds:g}s-{key[:10]}.mp4"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    with av.open(str(partial), "w", format="mp4") as container:
        rate = Fraction(fps).limit_denominator(1000)
        stream = container.add_stream("libx264", rate=rate)
        stream.codec_context.time_base = 1 / rate
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "veryfast", "bf": "0", "g": str(max(1, round(fps))), "crf": "23"}
        for index, frame in zip(range(round(seconds * fps)), _looped(source), strict=False):
            picture = frame.reformat(width=size[0], height=size[1], format="yuv420p")
            picture.pts, picture.time_base = index, stream.codec_context.time_base  # re-timed at fps
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    partial.rename(out)
    return out


def _looped(source: Path) -> Iterator[av.VideoFrame]:
    """The source's frames, over and over."""
    while True:
        with av.open(str(source)) as container:
            yield from container.decode(video=0)


def default_source(work: Path) -> Path:
    """The real site footage beside the checkout (``../shared/media``) when there, else the demo clip."""
    site = Path(__file__).resolve().parents[4] / "shared" / "media" / "construction-site.mp4"
    return site if site.is_file() else demo_clip(work)


def rtsp_available() -> bool:
    """Whether Debian's python3 can run GStreamer's RTSP server."""
    if not SYSTEM_PYTHON.is_file():
        return False
    probe = [str(SYSTEM_PYTHON), "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"]
    return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0


class RtspCameras:
    """``count`` cameras at ``rtsp://127.0.0.1:PORT/camK``, each a real-time playback of ``clip``."""

    def __init__(self, clip: Path, count: int, port: int) -> None:
        self.urls = [f"rtsp://127.0.0.1:{port}/cam{k}" for k in range(count)]
        self.process = subprocess.Popen(
            [str(SYSTEM_PYTHON), str(RTSP_SERVER), str(port), str(clip), *(f"/cam{k}" for k in range(count))],
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if line.strip() != "READY":
            self.close()
            raise RuntimeError(f"the RTSP server did not start (it said {line.strip()!r})")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
