"""Training loader throughput: images/s of ``vestwatch train``'s data loader alone (mosaic, affine
with flip, collate; the HSV jitter runs on the training device), no model, for each worker
count, reading images from disk and from the RAM cache.

    python bench/train_loader.py                          # ../shared's dataset, 640, workers 1 and 2
    python bench/train_loader.py --images 256 --workers 1 2 --batch 16

The loader is what bounded training on the GPU machine (about 300 images/s with 14 workers
while the GPU alone trains several times faster), so images/s per worker is the figure to
watch. Prints a Markdown table for bench/RESULTS.md with the CPU named.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from stages.training.data import DataConfig
from stages.training.dataset import TrainingImages

DATA = Path(__file__).resolve().parents[1] / "stages" / "training" / "data" / "construction-site-safety.yaml"
DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "construction-site-safety"


def images_per_second(dataset: TrainingImages, workers: int, batch: int, epochs: int) -> float:
    """Images/s over ``epochs`` passes, after one warm-up pass (workers started, caches filled)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=TrainingImages.collate,
        persistent_workers=workers > 0,
    )
    for _ in loader:  # warm-up
        pass
    start = time.perf_counter()
    for _ in range(epochs):
        for _ in loader:
            pass
    return epochs * len(dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="a data config or a YOLO dataset folder")
    parser.add_argument("--data-root", type=Path, default=DATASET)
    parser.add_argument("--images", type=int, default=256, help="the first N training images")
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2, help="timed passes over the images")
    args = parser.parse_args()

    images, labels = DataConfig.load(args.data, args.data_root).split("train")
    images, labels = images[: args.images], labels[: args.images]
    torch.set_num_threads(1)  # as in a DataLoader worker
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}; "
        f"{len(images)} images at {args.img}, batch {args.batch}, mosaic + affine + flip (HSV runs on the device)"
    )
    print("| images from | workers | images/s | images/s per worker |")
    print("|---|---:|---:|---:|")
    for cache in (False, True):
        dataset = TrainingImages(images, labels, args.img, augment=True, cache=cache)
        for workers in args.workers:
            rate = images_per_second(dataset, workers, args.batch, args.epochs)
            source = "RAM cache" if cache else "disk (JPEG decode)"
            print(f"| {source} | {workers} | {rate:.1f} | {rate / max(workers, 1):.1f} |", flush=True)


if __name__ == "__main__":
    main()
