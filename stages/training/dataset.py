"""The training sample pipeline as a torch ``Dataset``: geometry per image in the loader's workers.

Images can be decoded once into RAM (``cache``, as the official ``--cache-images``): JPEG
decoding was half of a sample's time, and a dataset of 2605 images at 640 takes 3.2 GB.
Samples leave as BGR ``[S, S, 3]`` uint8, the pixels' own layout; ``model_input`` turns a
batch into the model's float RGB on the training device, after ``hsv_jitter`` there.
"""

from __future__ import annotations

import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.detector.letterbox import letterbox
from stages.training.augment import hsv_gains, hsv_jitter, load_resized, mosaic, random_affine, to_pixels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Augmentation:
    """The official hyp.scratch.tiny values for what we implement."""

    mosaic: float = 1.0
    translate: float = 0.1
    scale: float = 0.5
    degrees: float = 0.0
    fliplr: float = 0.5
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4


class TrainingImages(torch.utils.data.Dataset):
    def __init__(
        self,
        images: list[Path],
        labels: list[np.ndarray],
        img_size: int,
        augment: bool,
        hyp: Augmentation = Augmentation(),
        cache: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        self.size, self.augment, self.hyp = img_size, augment, hyp
        self.cached: list[np.ndarray] | None = None
        if cache:
            with ThreadPoolExecutor(os.cpu_count()) as pool:  # OpenCV decodes without the GIL
                self.cached = list(pool.map(lambda p: load_resized(str(p), img_size), images))
            log.info("%d images cached in RAM: %.1f GB", len(images), sum(i.nbytes for i in self.cached) / 1e9)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> np.ndarray:
        """The image with its long side at the training size, from the cache when there is one."""
        return self.cached[index] if self.cached is not None else load_resized(str(self.images[index]), self.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A BGR uint8 ``[S, S, 3]`` image and ``[n, 6]`` targets (0, class, cx, cy, w, h normalised)."""
        size, hyp = self.size, self.hyp
        flip = self.augment and random.random() < hyp.fliplr
        if self.augment and random.random() < hyp.mosaic:
            picks = [index, *random.choices(range(len(self)), k=3)]
            canvas, boxes = mosaic([self.load(i) for i in picks], [self.labels[i] for i in picks], size)
            image, boxes = random_affine(canvas, boxes, size, hyp.translate, hyp.scale, hyp.degrees, flip)
        else:
            resized = self.load(index)
            h, w = resized.shape[:2]
            image, ratio, pad = letterbox(resized, size, auto=False)
            boxes = to_pixels(self.labels[index], w * ratio, h * ratio, pad[0], pad[1])
            if self.augment:
                image, boxes = random_affine(image, boxes, size, hyp.translate, hyp.scale, hyp.degrees, flip)
        targets = torch.zeros((len(boxes), 6))
        if len(boxes):
            b = torch.from_numpy(boxes).float()
            targets[:, 1] = b[:, 0]
            targets[:, 2] = (b[:, 1] + b[:, 3]) / 2 / size
            targets[:, 3] = (b[:, 2] + b[:, 4]) / 2 / size
            targets[:, 4] = (b[:, 3] - b[:, 1]) / size
            targets[:, 5] = (b[:, 4] - b[:, 2]) / size
        return torch.from_numpy(image), targets

    @staticmethod
    def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = zip(*batch)
        for i, t in enumerate(targets):
            t[:, 0] = i
        return torch.stack(images), torch.cat(targets)


def model_input(images: torch.Tensor, device: torch.device, hsv: Augmentation | None) -> torch.Tensor:
    """A loader batch (BGR uint8 ``[B, S, S, 3]``) as the model's float RGB ``[B, 3, S, S]`` in [0, 1]
    on ``device``, HSV-jittered there first when ``hsv`` gives the recipe's gains."""
    images = images.to(device, non_blocking=True)
    if hsv is not None:
        images = hsv_jitter(images, hsv_gains(len(images), hsv.hsv_h, hsv.hsv_s, hsv.hsv_v))
    return images.permute(0, 3, 1, 2).flip(1).float() / 255
