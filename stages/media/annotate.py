"""Draw detections on a frame: boxes, labels with scores, and a per-class count banner;
for a stream, also its zones, each tracked person's id and compliance badge, a highlighted
person (event snapshots) and a caption with the camera and the time.

Drawing is kept apart from inference so that ``vestwatch detect`` and the stream stage
annotate the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.detections import Detections, class_name
from stages.stream.analysis import Person

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
BADGE_COLOURS = {"ok": (60, 200, 60), "missing": (40, 40, 230), "unknown": (150, 150, 150)}
ZONE_COLOUR = (255, 120, 0)
HIGHLIGHT_COLOUR = (255, 255, 0)  # cyan: no class uses it


@dataclass
class Overlay:
    """What a stream stage draws beyond the boxes."""

    people: list[Person] = field(default_factory=list)
    required: dict[int, list[str]] = field(default_factory=dict)  # track id -> PPE its zones require
    zones: list[tuple[str, np.ndarray]] = field(default_factory=list)  # name, polygon in pixels
    caption: str = ""  # bottom line: camera and time


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


@dataclass
class _Pen:
    """Sizes that scale with the frame: text 2.5 % of its shorter side, 11 px at least."""

    frame: tuple[int, int]
    taken: list[tuple[int, int, int, int]] = field(default_factory=list)  # labels drawn so far

    def __post_init__(self) -> None:
        self.text_px = max(MIN_TEXT_PX, round(min(self.frame) * TEXT_SHARE))
        self.font_scale = self.text_px / FONT_PIXELS
        self.thickness = max(1, round(self.font_scale * 2))
        self.line = max(1, round(self.text_px / 8))
        self.pad = max(2, self.text_px // 4)

    def label(self, out: np.ndarray, box: tuple[int, int, int, int], text: str, colour: tuple[int, int, int]) -> None:
        """A filled label near ``box`` that covers no label drawn before it, if there is room."""
        (tw, th), baseline = cv2.getTextSize(text, FONT, self.font_scale, self.thickness)
        spot = _label_spot(box, (tw + 2 * self.pad, th + baseline + self.pad), self.taken, self.frame)
        self.taken.append(spot)
        cv2.rectangle(out, spot[:2], (spot[2] - 1, spot[3] - 1), colour, cv2.FILLED)
        origin = (spot[0] + self.pad, spot[1] + th + self.pad // 2)
        cv2.putText(out, text, origin, FONT, self.font_scale, text_colour(colour), self.thickness, cv2.LINE_AA)

    def line_of_text(self, out: np.ndarray, text: str, top: bool) -> None:
        """White on black across the top or bottom edge, shrunk to fit the width."""
        (tw, _), _ = cv2.getTextSize(text, FONT, self.font_scale, self.thickness)
        scale = self.font_scale * min(1.0, (self.frame[1] - 2 * self.pad) / tw)
        (tw, th), baseline = cv2.getTextSize(text, FONT, scale, self.thickness)
        height = th + baseline + 2 * self.pad
        y0 = 0 if top else self.frame[0] - height
        cv2.rectangle(out, (0, y0), (tw + 2 * self.pad, y0 + height), (0, 0, 0), cv2.FILLED)
        origin = (self.pad, y0 + th + self.pad)
        cv2.putText(out, text, origin, FONT, scale, (255, 255, 255), self.thickness, cv2.LINE_AA)


def annotate(
    image: np.ndarray, detections: Detections, names: Sequence[str], overlay: Overlay | None = None
) -> np.ndarray:
    """A copy of ``image`` with the detections and their per-class counts drawn on it.

    Each class has its colour with black or white text for contrast, and labels are placed so
    that they do not cover one another (people first, then boxes by score).
    """
    out = image.copy()
    pen = _Pen(out.shape[:2])
    if overlay:
        _draw_overlay(out, pen, overlay)
    for i in np.argsort(-detections.confidence, kind="stable"):
        name = class_name(names, int(detections.class_id[i]))
        if overlay and overlay.people and name == "person":
            continue  # drawn as a tracked person, with id and badge
        colour = colour_for(name, int(detections.class_id[i]))
        x1, y1, x2, y2 = (int(round(v)) for v in detections.xyxy[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, pen.line, cv2.LINE_AA)
        pen.label(out, (x1, y1, x2, y2), f"{name} {detections.confidence[i]:.2f}", colour)
    banner = "  ".join(f"{n}: {c}" for n, c in sorted(detections.counts(names).items())) or "no detections"
    pen.line_of_text(out, banner, top=True)
    if overlay and overlay.caption:
        pen.line_of_text(out, overlay.caption, top=False)
    return out


def badge(person: Person, required: Sequence[str]) -> tuple[str, tuple[int, int, int]]:
    """``#7 no vest`` in red, ``#7 ok`` in green, ``#7 vest?`` in grey: the person against what
    their zones require (a vest where nothing says otherwise)."""
    worn = {item: getattr(person, item) for item in required or ["vest"]}
    missing = [item for item, value in worn.items() if value == "no"]
    unknown = [item for item, value in worn.items() if value == "unknown"]
    if missing:
        return f"#{person.track_id} no {'+'.join(missing)}", BADGE_COLOURS["missing"]
    if unknown:
        return f"#{person.track_id} {'+'.join(unknown)}?", BADGE_COLOURS["unknown"]
    return f"#{person.track_id} ok", BADGE_COLOURS["ok"]


def highlight(annotated: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """A copy of an annotated frame with one person's box drawn thick, in a colour no class has: an
    event's snapshot, without drawing a crowded frame again for each event that starts on it."""
    out = annotated.copy()
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(out, (x1, y1), (x2, y2), HIGHLIGHT_COLOUR, _Pen(out.shape[:2]).line * 4, cv2.LINE_AA)
    return out


def _draw_overlay(out: np.ndarray, pen: _Pen, overlay: Overlay) -> None:
    for name, polygon in overlay.zones:
        points = polygon.astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [points], True, ZONE_COLOUR, pen.line, cv2.LINE_AA)
        x, y = (int(v) for v in polygon.min(axis=0))
        pen.label(out, (x, y + pen.text_px * 2, x, y + pen.text_px * 2), f"zone {name}", ZONE_COLOUR)
    for person in overlay.people:
        text, colour = badge(person, overlay.required.get(person.track_id, []))
        x1, y1, x2, y2 = (int(round(v)) for v in person.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, pen.line, cv2.LINE_AA)
        pen.label(out, (x1, y1, x2, y2), text, colour)
