"""Letterbox resize exactly as the official YOLOv7 ``utils/datasets.py``, and its inverse for boxes.

>>> img, ratio, pad = letterbox(np.zeros((360, 640, 3), np.uint8), 640)
>>> img.shape, ratio, pad
((384, 640, 3), 1.0, (0.0, 12.0))
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

PAD_VALUE = 114


def letterbox_shape(shape: tuple[int, int], size: int, stride: int = 32, scaleup: bool = True) -> tuple[int, int]:
    """The smallest stride-multiple (h, w) that holds ``shape`` scaled to fit ``size`` (official ``auto=True``)."""
    h, w = shape
    r = min(size / h, size / w)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = round(w * r), round(h * r)
    return new_h + (size - new_h) % stride, new_w + (size - new_w) % stride


def letterbox_geometry(
    shape: tuple[int, int],
    new_shape: int | tuple[int, int] = 640,
    auto: bool = True,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[float, tuple[float, float]]:
    """The ratio and (left, top) padding ``letterbox`` gives an image of ``shape`` (h, w), without the pixels."""
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    dw, dh = new_shape[1] - int(round(shape[1] * r)), new_shape[0] - int(round(shape[0] * r))
    if auto:
        dw, dh = dw % stride, dh % stride
    return r, (dw / 2, dh / 2)


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    auto: bool = True,
    scaleup: bool = True,
    stride: int = 32,
    color: int = PAD_VALUE,
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio, pad to ``new_shape`` (or to the stride with ``auto``).

    Returns the image, the scale ratio and the (left, top) padding, both needed to map
    boxes back with ``scale_boxes``.
    """
    shape = img.shape[:2]
    r, (dw, dh) = letterbox_geometry(shape, new_shape, auto, scaleup, stride)
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    if shape[::-1] != new_unpad:
        img = cv2.resize(img, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(color, color, color))
    return img, r, (dw, dh)


def scale_boxes(boxes: np.ndarray, ratio: float, pad: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """Map xyxy boxes from the letterboxed image back to the source ``shape`` (h, w), clipped."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - pad[0]) / ratio
    out[:, [1, 3]] = (out[:, [1, 3]] - pad[1]) / ratio
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, shape[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, shape[0])
    return out


def stack_centred(
    images: list[np.ndarray] | list[torch.Tensor], shape: tuple[int, int]
) -> tuple[np.ndarray | torch.Tensor, list[tuple[int, int]]]:
    """One ``[B, H, W, 3]`` batch of letterboxed images of different sizes, each centred on 114 padding.

    Returns the batch and each image's (left, top) offset, which adds to its letterbox pad.
    Images of the batch's own shape are copied unchanged, so a batch of one stream is the
    official rectangular letterbox; a mixed batch is padded as the official code pads a
    batch of mixed aspect ratios.
    """
    if isinstance(images[0], torch.Tensor):  # letterboxed on the model's device: the batch stays there
        batch = torch.full((len(images), *shape, 3), PAD_VALUE, dtype=torch.uint8, device=images[0].device)
    else:
        batch = np.full((len(images), *shape, 3), PAD_VALUE, np.uint8)
    offsets = []
    for out, image in zip(batch, images):
        top, left = (shape[0] - image.shape[0]) // 2, (shape[1] - image.shape[1]) // 2
        out[top : top + image.shape[0], left : left + image.shape[1]] = image
        offsets.append((left, top))
    return batch, offsets


def letterbox_tensor(
    image: torch.Tensor, new_shape: tuple[int, int], color: int = PAD_VALUE
) -> tuple[torch.Tensor, float, tuple[float, float]]:
    """``letterbox(..., auto=False)`` on the device the image is on: an ``[H, W, 3]`` uint8 tensor in,
    the same within one grey level out (bilinear without antialiasing, as ``cv2.INTER_LINEAR``).

    On CUDA a raw frame is uploaded once and resized there, instead of the CPU resizing it and
    the letterboxed copy crossing to the GPU; ``tests/stages/detector/test_letterbox.py`` checks
    it against the CPU path on the CPU.
    """
    height, width = image.shape[:2]
    r, (dw, dh) = letterbox_geometry((height, width), new_shape, auto=False)
    new_w, new_h = int(round(width * r)), int(round(height * r))
    if (new_w, new_h) != (width, height):
        planes = image.permute(2, 0, 1)[None].float()
        planes = torch.nn.functional.interpolate(planes, size=(new_h, new_w), mode="bilinear", align_corners=False)
        image = planes[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    out = torch.full((*new_shape, 3), color, dtype=torch.uint8, device=image.device)
    out[top : top + new_h, left : left + new_w] = image
    return out, r, (dw, dh)
