"""``Detections``: the one value type for boxes that inference, render, record and the wire share.

>>> d = Detections(np.array([[0, 0, 10, 20]], np.float32), np.array([0.9], np.float32), np.array([1]))
>>> d.counts(["person", "vest"])
{'vest': 1}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Boxes in source-image pixels (x1, y1, x2, y2), their scores and class ids, as arrays."""

    xyxy: np.ndarray  # float32 [N, 4]
    confidence: np.ndarray  # float32 [N]
    class_id: np.ndarray  # int32 [N]

    def __post_init__(self) -> None:
        object.__setattr__(self, "xyxy", np.asarray(self.xyxy, np.float32).reshape(-1, 4))
        object.__setattr__(self, "confidence", np.asarray(self.confidence, np.float32).reshape(-1))
        object.__setattr__(self, "class_id", np.asarray(self.class_id, np.int32).reshape(-1))
        if not len(self.xyxy) == len(self.confidence) == len(self.class_id):
            raise ValueError("xyxy, confidence and class_id must have the same length")

    def __len__(self) -> int:
        return len(self.confidence)

    def with_classes(self, remap: np.ndarray) -> Detections:
        """Class ids translated through ``remap`` (old id -> new id); boxes mapped to -1 are dropped."""
        new = remap[self.class_id]
        keep = new >= 0
        return Detections(self.xyxy[keep], self.confidence[keep], new[keep])

    def counts(self, names: Sequence[str]) -> dict[str, int]:
        """Boxes per class name, classes without boxes left out."""
        ids, numbers = np.unique(self.class_id, return_counts=True)
        return {class_name(names, int(i)): int(n) for i, n in zip(ids, numbers)}

    def records(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """One JSON-ready dict per box."""
        return [
            {
                "box": [round(float(v), 2) for v in box],
                "score": round(float(score), 4),
                "class_id": int(cls),
                "class_name": class_name(names, int(cls)),
            }
            for box, score, cls in zip(self.xyxy, self.confidence, self.class_id)
        ]


def class_name(names: Sequence[str], class_id: int) -> str:
    """The class's name, or its number where the model gave none for it."""
    return names[class_id] if 0 <= class_id < len(names) else str(class_id)
