"""Heads, or whole people, made unrecognisable in a frame before it leaves the server (``[privacy]``).

A head is the model's ``hardhat`` / ``no_hardhat`` box with a margin, reaching down over the face (a
hardhat box is the helmet only, the face is under it); a person (tracked, or a box of the model's not
tracked yet) with no such box on the top of theirs gets the top of their box, and a torso (a ``vest`` /
``no_vest`` box) the space above it. Regions are pixelated in coarse blocks, which unlike a light blur
cannot be sharpened back, and nothing else of the frame changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pipeline.detections import Detections, class_name
from stages.stream.analysis import Person

HEAD_CLASSES = {"hardhat": 1.3, "no_hardhat": 0.5}  # class -> how far below its box the face reaches, in its heights
PERSON_CLASSES = ("person", "vest", "no_vest")  # a torso box stands for a person the model saw no box of
MARGIN = 0.2  # of a head box's size, each side
HEAD_SHARE = 0.25  # of a person box's height: where the head is when no head box lies there
ABOVE_TORSO = 0.6  # of a torso box's height: where the head of a person seen only as a torso is
BLOCKS_ACROSS = 5  # a region's shorter side is pixelated into this many blocks
Box = tuple[float, float, float, float]


def grown(box: Sequence[float], share: float) -> Box:
    """``box`` grown by ``share`` of its size each side."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * share, (y2 - y1) * share
    return x1 - dx, y1 - dy, x2 + dx, y2 + dy


def _head(box: Sequence[float], below: float) -> Box:
    """A head box grown by ``MARGIN`` each side and ``below`` of its height downwards."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * MARGIN, (y2 - y1) * MARGIN
    return x1 - dx, y1 - dy, x2 + dx, y2 + (y2 - y1) * below


def _holds_head(person: Sequence[float], heads: list[Box]) -> bool:
    """Whether one of ``heads`` is centred in the top part of the ``person`` box."""
    x1, y1, x2, y2 = person
    top = y1 + (y2 - y1) * 0.4
    return any(x1 <= (h[0] + h[2]) / 2 <= x2 and y1 - (h[3] - h[1]) <= (h[1] + h[3]) / 2 <= top for h in heads)


def regions(detections: Detections, names: Sequence[str], people: Sequence[Person], what: Sequence[str]) -> list[Box]:
    """The boxes to hide for ``what`` (``heads`` and/or ``people``), in the frame's pixels."""
    by_class: dict[str, list[Box]] = {}
    for box, class_id in zip(detections.xyxy, detections.class_id):
        by_class.setdefault(class_name(names, int(class_id)), []).append(tuple(float(v) for v in box))  # type: ignore[arg-type]
    heads = [_head(box, below) for name, below in HEAD_CLASSES.items() for box in by_class.get(name, [])]
    found = list(heads)
    if "people" in what:
        found += [box for name in PERSON_CLASSES for box in by_class.get(name, [])]
        found += [tuple(person.box) for person in people]  # type: ignore[misc]
    # the tracked people and the model's own boxes (a person not tracked yet has a head too)
    torsos = [tuple(p.box) for p in people if p.torso_only] + by_class.get("vest", []) + by_class.get("no_vest", [])
    bodies = [tuple(p.box) for p in people if not p.torso_only] + by_class.get("person", [])
    for x1, y1, x2, y2 in torsos:
        found.append((x1, y1 - (y2 - y1) * ABOVE_TORSO, x2, y1 + (y2 - y1) * 0.1))
    for body in bodies:
        x1, y1, x2, y2 = body
        if not _holds_head(body, heads):
            found.append((x1, y1, x2, y1 + (y2 - y1) * HEAD_SHARE))
    return found


def pixelate(image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """A copy of ``image`` with each box (clipped to the frame) pixelated; the rest unchanged."""
    out = image.copy()
    height, width = out.shape[:2]
    for box in boxes:
        x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
        x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        region = out[y1:y2, x1:x2]
        block = max(2, min(x2 - x1, y2 - y1) // BLOCKS_ACROSS)
        small = cv2.resize(
            region, (max(1, (x2 - x1) // block), max(1, (y2 - y1) // block)), interpolation=cv2.INTER_AREA
        )
        out[y1:y2, x1:x2] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
    return out
