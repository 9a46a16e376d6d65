"""A folder of images (sorted, recursive) or a single image, as an offline stream."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2

from stages.capture.sources.base import FeedError, FeedFrame
from stages.capture.sources.kinds import IMAGE_SUFFIXES


class ImageFeed:
    live = False
    from_file = True
    fps = Fraction(1)  # written as video, an image a second
    codec = None  # pictures, not video: recorded annotated

    def __init__(self, path: Path) -> None:
        self.corrupt = 0
        if path.is_dir():
            self.paths = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            self.paths = [path]
        if not self.paths:
            raise FeedError(f"{path}: no images")

    def frames(self) -> Iterator[FeedFrame]:
        for index, path in enumerate(self.paths):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.corrupt += 1
                continue
            yield FeedFrame(image, float(index))

    def close(self) -> None:
        """Nothing held open between images."""
