"""Training augmentation in the YOLOv5/v7 manner: mosaic, random affine with flips, HSV jitter.

Boxes travel as pixel ``[n, 5]`` rows (class, x1, y1, x2, y2). Mixup, copy-paste and
perspective warps of the official recipe are left out: the vest model does not need them.
Geometry runs on the CPU in the loader's workers; the HSV jitter runs on the whole batch on
the training device (``hsv_jitter``), where it costs next to nothing and the loader nothing.
"""

from __future__ import annotations

import random

import cv2
import numpy as np
import torch

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
    flip: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale, rotate, translate and optionally mirror to a ``size`` square in one warp; boxes follow.

    The mirror is part of the matrix rather than a copy of the warped image.
    """
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
    if flip:
        matrix = np.array([[-1.0, 0.0, size], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ matrix
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


def hsv_gains(batch: int, hue: float = 0.015, saturation: float = 0.7, value: float = 0.4) -> torch.Tensor:
    """Random ``[batch, 3]`` hue, saturation and value gains around 1, as the official recipe draws them."""
    return torch.from_numpy(np.random.uniform(-1, 1, (batch, 3)) * [hue, saturation, value] + 1).float()


def hsv_jitter(images: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """BGR uint8 ``[B, H, W, 3]`` images with each image's hue, saturation and value scaled by its
    gains, in OpenCV's 8-bit HSV (hue 0-180, wrapping; saturation and value clipped at 255).

    The official recipe does this per image on the CPU (two colour conversions and three lookup
    tables); here it is arithmetic on the batch, on whatever device the batch is.
    """
    x = images.float()
    blue, green, red = x.unbind(-1)
    value, _ = x.max(-1)
    spread = value - x.min(-1).values
    saturation = torch.where(value > 0, spread / value.clamp_min(1e-6), 0.0)
    safe = spread.clamp_min(1e-6)
    hue = torch.where(
        value == red,
        (green - blue) / safe,
        torch.where(value == green, 2 + (blue - red) / safe, 4 + (red - green) / safe),
    )
    hue = torch.where(spread > 0, (hue * 30) % 180, 0.0)  # OpenCV's 8-bit hue: degrees / 2
    g = gains.to(x.device)[:, :, None, None]
    hue = (hue.round() * g[:, 0]) % 180
    saturation = (saturation * g[:, 1]).clamp(0, 1)
    value = (value * g[:, 2]).clamp(0, 255)
    sector = hue / 30  # 0-6, one per 60 degrees
    channels = []
    for n in (1, 3, 5):  # blue, green, red
        k = (n + sector) % 6
        channels.append(value - value * saturation * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(channels, -1).round().to(torch.uint8)
