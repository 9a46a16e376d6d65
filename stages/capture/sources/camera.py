"""Local cameras (index or /dev/videoN) through OpenCV's V4L2 backend.

The device is opened by ``open_device``, a seam: tests pass a factory that opens a
video file with ``cv2.VideoCapture`` (the same interface), since no camera can be
attached where the tests run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import cv2

from stages.capture.sources.base import FeedError, FeedFrame


def open_v4l2(url: str) -> Any:
    return cv2.VideoCapture(int(url) if url.isdigit() else url, cv2.CAP_V4L2)


class CameraFeed:
    live = True
    from_file = False
    codec = None  # raw frames: recorded annotated, whatever ``recording.video`` says

    def __init__(self, url: str, open_device: Callable[[str], Any] = open_v4l2) -> None:
        self.url = url
        self.corrupt = 0
        self.device = open_device(url)
        if not self.device.isOpened():
            raise FeedError(f"camera {url}: cannot open")
        reported = self.device.get(cv2.CAP_PROP_FPS)
        self.fps = Fraction(reported).limit_denominator(1001) if reported and reported > 0 else Fraction(30)
        self.started = time.monotonic()

    def frames(self) -> Iterator[FeedFrame]:
        while True:
            ok, image = self.device.read()
            if not ok or image is None:
                raise FeedError(f"camera {self.url}: no frame (unplugged or busy)")
            yield FeedFrame(image, time.monotonic() - self.started)

    def close(self) -> None:
        self.device.release()
