from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.detector.model import Model
from stages.training.data import DataConfig
from stages.training.dataset import TrainingImages
from stages.training.loss import YoloLoss
from stages.training.train import cosine, seed_everything, transfer_weights, validate
from tests.conftest import SHARED
from tests.harness import vestwatch
from tests.stages.training.conftest import COLOURS

STEPS = 120


def test_recipe_learns_to_find_the_boxes_it_trained_on(boxes_dataset: Path) -> None:
    """Overfitting four images proves loss, target assignment and decoding agree with each other."""
    seed_everything(0)
    data = DataConfig.load(boxes_dataset)
    images, labels = data.split("train")
    dataset = TrainingImages(images[:4], labels[:4], 128, augment=False)
    batch_images, targets = TrainingImages.collate([dataset[i] for i in range(4)])
    model = Model("yolov7-tiny", nc=2, names=data.names).train()
    criterion = YoloLoss(model, 128)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    losses = []
    for _ in range(STEPS):
        loss, _ = criterion(model(batch_images.float() / 255), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # 120 steps at full LR move the weights faster than BatchNorm's running averages (momentum
    # 0.03) follow; a real run's thousands of steps do not have this, so recalibrate them
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        model(batch_images.float() / 255)
    summary = validate(model.eval(), torch.device("cpu"), images[:4], labels[:4], data.names, 128)[1]
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; mAP50 on the training images {summary['map50']:.3f}")
    assert losses[-1] < 0.5 * losses[0]
    assert summary["map50"] > 0.5


def test_augmented_boxes_stay_on_their_objects(boxes_dataset: Path) -> None:
    """Mosaic, affine and flips move boxes with the pixels: inside each box is its class's colour."""
    seed_everything(3)
    data = DataConfig.load(boxes_dataset)
    images, labels = data.split("train")
    dataset = TrainingImages(images, labels, 128, augment=True)
    checked = 0
    for index in range(len(dataset)):
        image, targets = dataset[index]
        bgr = image.numpy().transpose(1, 2, 0)[:, :, ::-1].astype(int)
        for _, cls, cx, cy, w, h in targets.tolist():
            x1, y1, x2, y2 = (int(round(v * 128)) for v in (cx - w / 4, cy - h / 4, cx + w / 4, cy + h / 4))
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            centre = bgr[y1:y2, x1:x2].reshape(-1, 3).mean(0)
            expected = np.array(COLOURS[int(cls)])
            # HSV jitter changes the shade, not which channel dominates
            assert int(centre.argmax()) == int(expected.argmax()), f"box of class {int(cls)} covers {centre}"
            checked += 1
    assert checked >= 8


def test_pretrained_weights_carry_over_except_what_the_class_count_changes() -> None:
    coco = Model("yolov7-tiny", nc=80)
    with torch.no_grad():
        for tensor in coco.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.5)  # unlike any fresh initialisation
    vests = Model("yolov7-tiny", nc=2, names=["vest", "no_vest"])
    anchors = vests.head.anchors.clone()

    copied, total = transfer_weights(vests, coco)

    theirs, mine = coco.state_dict(), vests.state_dict()
    skipped = [name for name in mine if not torch.equal(mine[name], theirs[name])]
    assert copied == total - len(skipped) and copied > 0.9 * total
    assert all(".m." in name or "im." in name or "anchor" in name for name in skipped), skipped
    assert torch.equal(vests.head.anchors, anchors), "the cfg's anchors stay"


def test_cosine_schedule_ends_at_lrf() -> None:
    assert cosine(0, 100, 0.01) == pytest.approx(1.0)
    assert cosine(100, 100, 0.01) == pytest.approx(0.01)
    assert cosine(50, 100, 0.01) == pytest.approx(0.505)


def test_train_resume_and_val_commands(boxes_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--img", "128", "--batch", "4", "--workers", "0", "--device", "cpu"]
    first = vestwatch("train", "--data", boxes_dataset, "--epochs", "1", "--out", run, *common)
    assert first.returncode == 0, first.stderr
    for name in ("best.safetensors", "last.safetensors", "state.pt", "results.csv", "config.json"):
        assert (run / name).is_file(), name
    resumed = vestwatch("train", "--resume", run / "state.pt", "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert torch.load(run / "state.pt", weights_only=True)["epoch"] == 1

    args = ["--data", boxes_dataset, "--epochs", "1", "--weights", run / "best.safetensors", *common]
    tuned = vestwatch("train", *args, "--out", tmp_path / "tuned")
    assert tuned.returncode == 0, tuned.stderr
    counts = re.search(r"initialised from .*best.safetensors: (\d+) of (\d+) tensors", tuned.stderr)
    assert counts and int(counts[1]) == int(counts[2]) - 2, "all but the two anchor buffers carry over"
    other = vestwatch("train", *args, "--cfg", "yolov7", "--out", tmp_path / "other")
    assert other.returncode == 2 and "tensors fit cfg yolov7: another model?" in other.stderr

    out = tmp_path / "val"
    val = vestwatch(
        "val",
        "--weights",
        run / "best.safetensors",
        "--data",
        boxes_dataset,
        "--split",
        "val",
        "--img",
        "128",
        "--device",
        "cpu",
        "--out",
        out,
    )
    assert val.returncode == 0, val.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["classes"]) <= {"red", "blue"} and 0 <= metrics["map50"] <= 1
    assert (out / "pr_curve.png").stat().st_size > 1000 and (out / "confusion_matrix.png").stat().st_size > 1000
    assert "mAP50" in val.stdout


def test_data_config_maps_dataset_classes_onto_ours() -> None:
    root = SHARED / "datasets" / "construction-site-safety"
    if not root.is_dir():
        pytest.skip(f"dataset not found at {root}")
    config = Path(__file__).parents[3] / "stages" / "training" / "data" / "construction-site-safety.yaml"
    data = DataConfig.load(config, root)
    assert data.names == ["vest", "no_vest", "person", "hardhat", "no_hardhat"]
    images, labels = data.split("test")
    assert len(images) == 82
    raw = (root / "test" / "labels" / f"{images[0].stem}.txt").read_text().split("\n")
    raw_classes = sorted(int(line.split()[0]) for line in raw if line.strip())
    # dataset ids: 7 Safety Vest -> 0 vest, 4 NO-Safety Vest -> 1, 5 Person -> 2, 0 Hardhat -> 3, 2 NO-Hardhat -> 4
    expected = sorted({7: 0, 4: 1, 5: 2, 0: 3, 2: 4}[c] for c in raw_classes if c in (7, 4, 5, 0, 2))
    assert sorted(labels[0][:, 0].astype(int).tolist()) == expected
