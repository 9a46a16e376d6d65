"""The ``live`` sink: the newest annotated frame for the live view, at most 5 a second, replaced atomically."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np

from stages.config import Settings, StreamSettings
from stages.stream.analysis import FrameAnalysis
from stages.stream.outputs.base import Sink
from stages.stream.outputs.overlay import draw
from stages.topology import live_frame

LIVE_EVERY_S = 0.2  # the live view's frame, at most 5 per second


class LiveSink(Sink):
    """Writes ``live_frame`` in the runtime dir; the HTTP server's ``/live/<stream>.jpg`` reads it.
    The frame stays when the stage stops, until the daemon removes the runtime dir's frames."""

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        super().__init__()
        self.stream = stream
        self.blur = settings.privacy.blur  # the live view leaves the server
        self.path = live_frame(settings.runtime_dir, stream.id)
        self.last = 0.0

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        if frame is None or time.monotonic() - self.last < LIVE_EVERY_S:
            return
        self.last = time.monotonic()
        ok, jpeg = cv2.imencode(".jpg", draw(frame, analysis, self.stream, self.blur), [cv2.IMWRITE_JPEG_QUALITY, 75])
        if ok:
            partial = self.path.with_suffix(".partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)  # the owner's eyes only
            with os.fdopen(fd, "wb") as out:
                out.write(jpeg.tobytes())
            os.replace(partial, self.path)
