"""The built-in demo source: a looping slideshow of real site pictures, so that a fresh install
shows workers with and without vests, and raises events, with no camera attached.

The pictures are five held-out test images of the dataset the shipped model was trained on
(CC BY 4.0, see ``demo_images/ATTRIBUTION.md``). Each is shown for ``HOLD_S`` seconds with a
slow zoom, so that consecutive frames differ as a camera's do.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from stages.capture.sources.kinds import IMAGE_SUFFIXES
from stages.media.video import VideoWriter

DEMO_IMAGES = Path(__file__).with_name("demo_images")
DEMO_SIZE = (640, 640)  # the dataset's pictures are 640x640
DEMO_FPS = 10
HOLD_S = 4
ZOOM = 0.06  # how far each picture zooms in while it is shown
CLIP_NAME = "demo-slideshow-v1.mp4"  # a new name when the pictures or the motion change


def demo_pictures() -> list[np.ndarray]:
    paths = sorted(p for p in DEMO_IMAGES.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [cv2.resize(cv2.imread(str(p), cv2.IMREAD_COLOR), DEMO_SIZE, interpolation=cv2.INTER_AREA) for p in paths]


def zoomed(picture: np.ndarray, progress: float) -> np.ndarray:
    """``picture`` enlarged about its centre by ``ZOOM * progress`` (0 to 1), same size."""
    height, width = picture.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0, 1 + ZOOM * progress)
    return cv2.warpAffine(picture, matrix, (width, height), flags=cv2.INTER_LINEAR)


def demo_clip(directory: Path) -> Path:
    """The demo clip under ``directory``, made on first use (a few seconds of encoding)."""
    path = directory / CLIP_NAME
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.mp4")
        frames_per_picture = DEMO_FPS * HOLD_S
        with VideoWriter(partial, Fraction(DEMO_FPS)) as writer:
            for picture in demo_pictures():
                for index in range(frames_per_picture):
                    writer.write(zoomed(picture, index / frames_per_picture))
        partial.rename(path)
    return path
