"""Labelled images in YOLO layout, mapped onto our classes by a data config.

A data config (``stages/training/data/*.yaml``) names the dataset folder, its splits,
our class names and a ``map`` from the dataset's class names to ours. A plain YOLO
dataset folder (or its ``data.yaml``) works too, keeping the dataset's own classes.
Labels live beside the images: ``.../images/x.jpg`` -> ``.../labels/x.txt`` with rows
``class cx cy w h`` normalised to the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from stages.capture.sources.kinds import IMAGE_SUFFIXES


@dataclass(frozen=True)
class DataConfig:
    root: Path
    splits: dict[str, Path]
    names: list[str]  # ours
    mapping: dict[int, int]  # dataset class id -> our class id

    @classmethod
    def load(cls, source: str | Path, root: str | Path | None = None) -> DataConfig:
        """From our data config YAML, a dataset's ``data.yaml``, or a dataset folder holding one."""
        path = Path(source)
        if path.is_dir():
            path = path / "data.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{source}: no data config or dataset data.yaml")
        spec = yaml.safe_load(path.read_text())
        if "map" in spec:
            dataset_root = Path(root or spec["root"])
            dataset_names = yaml.safe_load((dataset_root / spec.get("dataset_names", "data.yaml")).read_text())["names"]
            names = list(spec["names"])
            unknown = sorted(set(spec["map"].values()) - set(names))
            if unknown:
                raise ValueError(f"{path}: map targets {unknown} are not among names {names}")
            missing = sorted(set(spec["map"]) - set(dataset_names))
            if missing:
                raise ValueError(f"{path}: map sources {missing} are not classes of the dataset")
            mapping = {dataset_names.index(k): names.index(v) for k, v in spec["map"].items()}
            splits = {k: dataset_root / v for k, v in spec["splits"].items()}
        else:  # a plain YOLO dataset: its own classes
            dataset_root = Path(root) if root else path.parent
            names = list(spec["names"].values()) if isinstance(spec["names"], dict) else list(spec["names"])
            mapping = {i: i for i in range(len(names))}
            splits = {
                k: (dataset_root / spec[key]).resolve()
                for k, key in (("train", "train"), ("val", "val"))
                if key in spec
            }
            if "test" in spec:
                splits["test"] = (dataset_root / spec["test"]).resolve()
        return cls(dataset_root, splits, names, mapping)

    def split(self, name: str) -> tuple[list[Path], list[np.ndarray]]:
        """Image paths and, per image, labels ``[n, 5]`` (our class, cx, cy, w, h normalised)."""
        if name not in self.splits:
            raise ValueError(f"no split {name!r} (have {sorted(self.splits)})")
        folder = self.splits[name]
        if not folder.is_dir():
            raise FileNotFoundError(f"split {name!r}: {folder} is not a folder")
        images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return images, [self._labels(p) for p in images]

    def _labels(self, image: Path) -> np.ndarray:
        label_file = Path(str(image.parent).replace("/images", "/labels")) / f"{image.stem}.txt"
        if not label_file.is_file():
            return np.zeros((0, 5), np.float32)
        rows = np.array(
            [line.split() for line in label_file.read_text().splitlines() if line.strip()], np.float32
        ).reshape(-1, 5)
        keep = np.isin(rows[:, 0].astype(int), list(self.mapping))
        rows = rows[keep]
        rows[:, 0] = [self.mapping[int(c)] for c in rows[:, 0]]
        return rows
