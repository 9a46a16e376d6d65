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


def colour_for(name: str, class_id: int) -> tuple[int, int, int]:
    return NAMED_COLOURS.get(name.lower(), PALETTE[class_id % len(PALETTE)])


def annotate(image: np.ndarray, detections: Detections, names: Sequence[str]) -> np.ndarray:
    """A copy of ``image`` with the detections and their per-class counts drawn on it."""
    out = image.copy()
    thickness = max(1, round(sum(out.shape[:2]) / 1000))
    font_scale = thickness / 3
    for box, score, cls in zip(detections.xyxy, detections.confidence, detections.class_id):
        name = class_name(names, int(cls))
        colour = colour_for(name, int(cls))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        label = f"{name} {score:.2f}"
        (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = max(y1 - th - baseline, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + baseline), colour, cv2.FILLED)
        cv2.putText(
            out, label, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness, cv2.LINE_AA
        )
    banner = "  ".join(f"{n}: {c}" for n, c in sorted(detections.counts(names).items())) or "no detections"
    (tw, th), baseline = cv2.getTextSize(banner, cv2.FONT_HERSHEY_SIMPLEX, font_scale * 1.2, thickness)
    cv2.rectangle(out, (0, 0), (tw + 10, th + baseline + 10), (0, 0, 0), cv2.FILLED)
    cv2.putText(
        out, banner, (5, th + 5), cv2.FONT_HERSHEY_SIMPLEX, font_scale * 1.2, (255, 255, 255), thickness, cv2.LINE_AA
    )
    return out
