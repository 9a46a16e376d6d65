"""Training augmentation in the YOLOv5/v7 manner: mosaic, random affine, HSV jitter, flips.

Boxes travel as pixel ``[n, 5]`` rows (class, x1, y1, x2, y2). Mixup, copy-paste and
perspective warps of the official recipe are left out: the vest model does not need them.
"""

from __future__ import annotations

import random

import cv2
import numpy as np

from stages.detector.letterbox import PAD_VALUE


def load_resized(path: str, size: int) -> np.ndarray:
    """The image with its long side scaled to ``size``."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: unreadable image")
    h, w = image.shape[:2]
    r = size / max(h, w)
    if r != 1:
        image = cv2.resize(
            image, (round(w * r), round(h * r)), interpolation=cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA
        )
    return image


def to_pixels(labels: np.ndarray, w: int, h: int, pad_x: float = 0, pad_y: float = 0) -> np.ndarray:
    """Normalised (class, cx, cy, w, h) -> pixel (class, x1, y1, x2, y2)."""
    out = labels.copy()
    out[:, 1] = w * (labels[:, 1] - labels[:, 3] / 2) + pad_x
    out[:, 2] = h * (labels[:, 2] - labels[:, 4] / 2) + pad_y
    out[:, 3] = w * (labels[:, 1] + labels[:, 3] / 2) + pad_x
    out[:, 4] = h * (labels[:, 2] + labels[:, 4] / 2) + pad_y
    return out


def mosaic(images: list[np.ndarray], labels: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Four images around a random centre on a 2*size canvas; returns the canvas and pixel boxes."""
    canvas = np.full((size * 2, size * 2, 3), PAD_VALUE, np.uint8)
    cx, cy = (int(random.uniform(size * 0.5, size * 1.5)) for _ in range(2))
    boxes = []
    for k, (image, rows) in enumerate(zip(images, labels)):
        h, w = image.shape[:2]
        if k == 0:  # top left
            x1a, y1a, x2a, y2a = max(cx - w, 0), max(cy - h, 0), cx, cy
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif k == 1:  # top right
            x1a, y1a, x2a, y2a = cx, max(cy - h, 0), min(cx + w, size * 2), cy
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif k == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(cx - w, 0), cy, cx, min(size * 2, cy + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:  # bottom right
            x1a, y1a, x2a, y2a = cx, cy, min(cx + w, size * 2), min(size * 2, cy + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        canvas[y1a:y2a, x1a:x2a] = image[y1b:y2b, x1b:x2b]
        boxes.append(to_pixels(rows, w, h, x1a - x1b, y1a - y1b))
    all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 5), np.float32)
    np.clip(all_boxes[:, 1:], 0, 2 * size, out=all_boxes[:, 1:])
    return canvas, all_boxes


def random_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    size: int,
    translate: float = 0.1,
    scale: float = 0.5,
    degrees: float = 0.0,
    border: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale, rotate and translate to a ``size`` square (``border`` crops a mosaic canvas); boxes follow."""
    h, w = image.shape[:2]
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -w / 2, -h / 2
    gain = random.uniform(1 - scale, 1 + scale)
    rotate = np.eye(3)
    rotate[:2] = cv2.getRotationMatrix2D((0, 0), random.uniform(-degrees, degrees), gain)
    shift = np.eye(3)
    shift[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * size
    shift[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * size
    matrix = shift @ rotate @ centre
    out = cv2.warpAffine(image, matrix[:2], (size, size), borderValue=(PAD_VALUE,) * 3)
    if not len(boxes):
        return out, boxes
    corners = np.ones((len(boxes) * 4, 3))
    corners[:, :2] = boxes[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(-1, 2)
    moved = (corners @ matrix.T)[:, :2].reshape(-1, 8)
    xs, ys = moved[:, [0, 2, 4, 6]], moved[:, [1, 3, 5, 7]]
    new = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1).clip(0, size)
    keep = box_candidates(boxes[:, 1:] * gain, new)
    result = np.concatenate([boxes[keep, :1], new[keep]], 1).astype(np.float32)
    return out, result


def box_candidates(
    before: np.ndarray, after: np.ndarray, min_side: float = 2, min_area: float = 0.1, max_aspect: float = 20
) -> np.ndarray:
    """Boxes still worth learning after the warp: not tiny, not mostly cut off, not sliver-thin."""
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > min_side) & (h2 > min_side) & (w2 * h2 / (w1 * h1 + 1e-16) > min_area) & (aspect < max_aspect)


def augment_hsv(image: np.ndarray, hue: float = 0.015, saturation: float = 0.7, value: float = 0.4) -> None:
    """Random hue, saturation and value gains, in place."""
    gains = np.random.uniform(-1, 1, 3) * [hue, saturation, value] + 1
    h, s, v = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.int16)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)))
    cv2.cvtColor(merged, cv2.COLOR_HSV2BGR, dst=image)
