"""The built-in demo source: a short generated clip, so that a fresh install runs with no camera."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from stages.video import VideoWriter

DEMO_SIZE = (640, 360)
DEMO_FPS = 15
DEMO_SECONDS = 10


def demo_frame(index: int) -> np.ndarray:
    """A site-like picture: ground, sky and a few figures walking across."""
    width, height = DEMO_SIZE
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 3] = (200, 170, 120)  # sky
    image[height // 3 :] = (70, 110, 140)  # dirt
    for k, colour in enumerate([(0, 200, 255), (40, 40, 220), (0, 230, 120)]):  # vest-like colours
        x = (index * (3 + k) + k * 200) % (width + 80) - 40
        y = height // 2 + k * 30
        cv2.rectangle(image, (x, y), (x + 36, y + 90), (60, 60, 60), cv2.FILLED)  # body
        cv2.rectangle(image, (x + 4, y + 20), (x + 32, y + 55), colour, cv2.FILLED)  # vest
        cv2.circle(image, (x + 18, y - 10), 12, (150, 180, 220), cv2.FILLED)  # head
    cv2.putText(image, f"vestwatch demo {index:04d}", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
    return image


def demo_clip(directory: Path) -> Path:
    """The demo clip under ``directory``, generated on first use."""
    path = directory / "demo.mp4"
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.mp4")
        with VideoWriter(partial, Fraction(DEMO_FPS)) as writer:
            for index in range(DEMO_FPS * DEMO_SECONDS):
                writer.write(demo_frame(index))
        partial.rename(path)
    return path
