"""Annotations a person can read: text that scales with the frame, contrast, labels apart."""

from __future__ import annotations

import numpy as np

from pipeline.detections import Detections
from stages.media.annotate import _label_spot, annotate, text_colour

NAMES = ["vest", "no_vest", "person", "hardhat", "no_hardhat"]


def banner_height(frame: np.ndarray) -> int:
    """Rows from the top that the black count banner fills."""
    column = frame[:, 1]
    return int(np.argmax(column.sum(1) > 0))


def test_text_scales_with_the_frame() -> None:
    boxes = Detections(np.array([[10, 60, 100, 200]]), np.array([0.9]), np.array([1]))
    small = annotate(np.full((360, 640, 3), 255, np.uint8), boxes, NAMES)
    large = annotate(np.full((1080, 1920, 3), 255, np.uint8), boxes, NAMES)
    assert banner_height(small) >= 14, "readable at 640x360"
    assert 2.0 <= banner_height(large) / banner_height(small) <= 3.5, "larger frames, larger text (11 px floor at 360)"


def test_light_colours_get_dark_text() -> None:
    assert text_colour((0, 215, 255)) == (0, 0, 0)  # hardhat yellow
    assert text_colour((40, 40, 230)) == (255, 255, 255)  # no_vest red


def test_labels_of_neighbouring_boxes_do_not_cover_each_other() -> None:
    taken: list[tuple[int, int, int, int]] = []
    for box in [(100, 100, 140, 300), (110, 105, 150, 300), (120, 110, 160, 300)]:  # three people side by side
        spot = _label_spot(box, (120, 20), taken, (360, 640))
        assert not any(
            min(spot[2], o[2]) > max(spot[0], o[0]) and min(spot[3], o[3]) > max(spot[1], o[1]) for o in taken
        )
        assert abs(spot[1] - box[1]) <= 40, "the label stays by its box"
        taken.append(spot)
