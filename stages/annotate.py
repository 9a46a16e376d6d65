"""Draw detections on a frame: boxes, labels with scores, and a per-class count banner.

Drawing is kept apart from inference so that ``vestwatch detect`` and the render
stage annotate the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pipeline.detections import Detections, class_name

# BGR; colours chosen so that vest (green) and no-vest (red) read at a glance
NAMED_COLOURS = {
    "vest": (60, 200, 60),
    "safety vest": (60, 200, 60),
    "no_vest": (40, 40, 230),
    "no-safety vest": (40, 40, 230),
    "person": (230, 160, 40),
    "hardhat": (0, 215, 255),
    "no_hardhat": (200, 60, 200),
}
PALETTE = [
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
    (52, 147, 26),
    (187, 212, 0),
    (168, 153, 44),
    (255, 194, 0),
]
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_PIXELS = 22  # cap height of FONT at scale 1
TEXT_SHARE = 0.025  # label text height as a share of the frame's shorter side
MIN_TEXT_PX = 11  # below this a label cannot be read on a 640x360 frame
MAX_TRIES = 8  # places inside a tall box tried for its label


def colour_for(name: str, class_id: int) -> tuple[int, int, int]:
    return NAMED_COLOURS.get(name.lower(), PALETTE[class_id % len(PALETTE)])


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on a light background, white on a dark one."""
    blue, green, red = background
    return (0, 0, 0) if 0.114 * blue + 0.587 * green + 0.299 * red > 140 else (255, 255, 255)


def _label_spot(
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    taken: list[tuple[int, int, int, int]],
    frame: tuple[int, int],
) -> tuple[int, int, int, int]:
    """Where a label of ``size`` goes: above the box, else inside it from the top down, else just
    below it; the first place that covers no label already drawn, or the one covering least.
    Vectorised over the labels drawn: a random test model draws hundreds a frame."""
    x1, y1, _, y2 = box
    width, height = size
    frame_h, frame_w = frame
    x = min(max(x1, 0), max(frame_w - width, 0))
    tops = [y1 - height, *list(range(y1, y2, height))[:MAX_TRIES], y2, y2 + height, y1 - 2 * height]
    others = np.asarray(taken, np.int64).reshape(-1, 4)
    best, best_cover = (x, 0, x + width, height), None
    for top in tops:
        top = min(max(top, 0), max(frame_h - height, 0))
        spot = (x, top, x + width, top + height)
        overlap_w = (np.minimum(spot[2], others[:, 2]) - np.maximum(spot[0], others[:, 0])).clip(0)
        overlap_h = (np.minimum(spot[3], others[:, 3]) - np.maximum(spot[1], others[:, 1])).clip(0)
        cover = int((overlap_w * overlap_h).sum())
        if best_cover is None or cover < best_cover:
            best, best_cover = spot, cover
        if cover == 0:
            break
    return best


def annotate(image: np.ndarray, detections: Detections, names: Sequence[str]) -> np.ndarray:
    """A copy of ``image`` with the detections and their per-class counts drawn on it.

    Text scales with the frame (2.5 % of its shorter side, 11 px at least), each class has
    its colour with black or white text for contrast, and labels are placed so that they do not
    cover one another (strongest boxes first).
    """
    out = image.copy()
    frame = out.shape[:2]
    text_px = max(MIN_TEXT_PX, round(min(frame) * TEXT_SHARE))
    font_scale = text_px / FONT_PIXELS
    text_thickness = max(1, round(font_scale * 2))
    line = max(1, round(text_px / 8))
    pad = max(2, text_px // 4)
    taken: list[tuple[int, int, int, int]] = []
    for i in np.argsort(-detections.confidence, kind="stable"):
        name = class_name(names, int(detections.class_id[i]))
        colour = colour_for(name, int(detections.class_id[i]))
        x1, y1, x2, y2 = (int(round(v)) for v in detections.xyxy[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, line, cv2.LINE_AA)
        label = f"{name} {detections.confidence[i]:.2f}"
        (tw, th), baseline = cv2.getTextSize(label, FONT, font_scale, text_thickness)
        spot = _label_spot((x1, y1, x2, y2), (tw + 2 * pad, th + baseline + pad), taken, frame)
        taken.append(spot)
        cv2.rectangle(out, spot[:2], (spot[2] - 1, spot[3] - 1), colour, cv2.FILLED)
        origin = (spot[0] + pad, spot[1] + th + pad // 2)
        cv2.putText(out, label, origin, FONT, font_scale, text_colour(colour), text_thickness, cv2.LINE_AA)
    banner = "  ".join(f"{n}: {c}" for n, c in sorted(detections.counts(names).items())) or "no detections"
    (tw, _), _ = cv2.getTextSize(banner, FONT, font_scale, text_thickness)
    scale = font_scale * min(1.0, (frame[1] - 2 * pad) / tw)  # the whole count line fits the width
    (tw, th), baseline = cv2.getTextSize(banner, FONT, scale, text_thickness)
    cv2.rectangle(out, (0, 0), (tw + 2 * pad, th + baseline + 2 * pad), (0, 0, 0), cv2.FILLED)
    cv2.putText(out, banner, (pad, th + pad), FONT, scale, (255, 255, 255), text_thickness, cv2.LINE_AA)
    return out
