"""The training and validation sample pipeline as a torch ``Dataset``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from stages.detector.letterbox import letterbox
from stages.training.augment import augment_hsv, load_resized, mosaic, random_affine, to_pixels


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
    ) -> None:
        self.images, self.labels = images, labels
        self.size, self.augment, self.hyp = img_size, augment, hyp

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A BGR->RGB uint8 ``[3, S, S]`` image and ``[n, 6]`` targets (0, class, cx, cy, w, h normalised)."""
        size, hyp = self.size, self.hyp
        if self.augment and random.random() < hyp.mosaic:
            picks = [index, *random.choices(range(len(self)), k=3)]
            canvas, boxes = mosaic(
                [load_resized(str(self.images[i]), size) for i in picks], [self.labels[i] for i in picks], size
            )
            image, boxes = random_affine(canvas, boxes, size, hyp.translate, hyp.scale, hyp.degrees)
        else:
            raw = cv2.imread(str(self.images[index]), cv2.IMREAD_COLOR)
            h, w = raw.shape[:2]
            image, ratio, pad = letterbox(raw, size, auto=False, scaleup=self.augment)
            boxes = to_pixels(self.labels[index], w * ratio, h * ratio, pad[0], pad[1])
            if self.augment:
                image, boxes = random_affine(image, boxes, size, hyp.translate, hyp.scale, hyp.degrees)
        if self.augment:
            augment_hsv(image, hyp.hsv_h, hyp.hsv_s, hyp.hsv_v)
            if random.random() < hyp.fliplr:
                image = np.ascontiguousarray(image[:, ::-1])
                boxes[:, [1, 3]] = size - boxes[:, [3, 1]]
        targets = torch.zeros((len(boxes), 6))
        if len(boxes):
            b = torch.from_numpy(boxes).float()
            targets[:, 1] = b[:, 0]
            targets[:, 2] = (b[:, 1] + b[:, 3]) / 2 / size
            targets[:, 3] = (b[:, 2] + b[:, 4]) / 2 / size
            targets[:, 4] = (b[:, 3] - b[:, 1]) / size
            targets[:, 5] = (b[:, 4] - b[:, 2]) / size
        rgb = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))
        return torch.from_numpy(rgb), targets

    @staticmethod
    def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = zip(*batch)
        for i, t in enumerate(targets):
            t[:, 0] = i
        return torch.stack(images), torch.cat(targets)
