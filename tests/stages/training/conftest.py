"""A small synthetic YOLO dataset: coloured boxes whose colour is their class."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

COLOURS = {0: (0, 0, 230), 1: (230, 60, 0)}  # BGR: class 0 red, class 1 blue


def write_split(root: Path, split: str, count: int, size: int = 128, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / split / "images").mkdir(parents=True)
    (root / split / "labels").mkdir(parents=True)
    for i in range(count):
        image = np.full((size, size, 3), 120, np.uint8)
        rows = []
        for _ in range(int(rng.integers(1, 3))):
            cls = int(rng.integers(0, 2))
            w, h = int(rng.integers(24, 48)), int(rng.integers(24, 48))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            cv2.rectangle(image, (x, y), (x + w, y + h), COLOURS[cls], cv2.FILLED)
            rows.append(f"{cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
        cv2.imwrite(str(root / split / "images" / f"{i:03d}.png"), image)
        (root / split / "labels" / f"{i:03d}.txt").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="session")
def boxes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("boxes")
    write_split(root, "train", 8, seed=1)
    write_split(root, "valid", 4, seed=2)
    (root / "data.yaml").write_text("names: [red, blue]\ntrain: train/images\nval: valid/images\ntest: valid/images\n")
    return root
