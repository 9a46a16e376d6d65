from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.capture.sources.demo import DEMO_IMAGES
from stages.detector.model import Model
from stages.training.augment import hsv_jitter
from stages.training.data import DataConfig
from stages.training.dataset import TrainingImages, model_input
from stages.training.loss import YoloLoss
from stages.training.train import cosine, epochs_within, seed_everything, transfer_weights, validate
from tests.conftest import COLOURS, SHARED
from tests.harness import vestwatch

STEPS = 120
CPU = torch.device("cpu")
DEMO_PICTURE = sorted(DEMO_IMAGES.glob("*.jpg"))[0]  # a real site picture


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
        loss, _ = criterion(model(model_input(batch_images, CPU, None)), targets)
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
        model(model_input(batch_images, CPU, None))
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
        bgr = image.numpy().astype(int)
        for _, cls, cx, cy, w, h in targets.tolist():
            x1, y1, x2, y2 = (int(round(v * 128)) for v in (cx - w / 4, cy - h / 4, cx + w / 4, cy + h / 4))
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            centre = bgr[y1:y2, x1:x2].reshape(-1, 3).mean(0)
            expected = np.array(COLOURS[int(cls)])
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


def test_cached_images_give_the_same_samples(boxes_dataset: Path) -> None:
    images, labels = DataConfig.load(boxes_dataset).split("train")
    samples = []
    for cache in (False, True):
        dataset = TrainingImages(images, labels, 128, augment=True, cache=cache)
        seed_everything(5)
        samples.append([dataset[i] for i in range(len(dataset))])
    for (image, targets), (cached_image, cached_targets) in zip(*samples):
        assert torch.equal(image, cached_image) and torch.equal(targets, cached_targets)


def test_hsv_jitter_matches_opencv_hsv(boxes_dataset: Path) -> None:
    """The batched jitter does what the official per-image recipe does with OpenCV's HSV and LUTs."""
    import cv2

    picture = cv2.imread(str(DEMO_PICTURE))
    gains = torch.tensor([[1.0, 1.0, 1.0], [1.012, 1.45, 0.7], [0.99, 0.5, 1.3]])
    jittered = hsv_jitter(torch.from_numpy(np.stack([picture] * 3)), gains).numpy().astype(int)
    assert np.abs(jittered[0] - picture).max() <= 3, "unit gains give the picture back (hue in 2-degree steps)"
    for k in range(3):
        h, s, v = cv2.split(cv2.cvtColor(picture, cv2.COLOR_BGR2HSV))
        x = np.arange(256, dtype=np.int16)
        luts = [((x * gains[k, 0].item()) % 180), np.clip(x * gains[k, 1].item(), 0, 255)]
        luts.append(np.clip(x * gains[k, 2].item(), 0, 255))
        hsv = cv2.merge([cv2.LUT(c, lut.astype(np.uint8)) for c, lut in zip((h, s, v), luts)])
        expected = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(int)
        difference = np.abs(jittered[k] - expected)
        assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 2, (difference.mean(), difference.max())


def test_epochs_are_sized_to_the_time_left() -> None:
    assert epochs_within(600, 70, 50, 1) == 11
    assert epochs_within(60, 70, 50, 1) == 1, "the epochs done stay done"
    assert epochs_within(3600, 200, 10, 5) == 345


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

    timed = vestwatch(
        "train", "--data", boxes_dataset, "--epochs", "100", "--time", "0.1", "--out", tmp_path / "t", *common
    )
    assert timed.returncode == 0, timed.stderr
    sized = re.search(r"--time 0.1 min: (\d+) epochs in all", timed.stderr)
    assert sized and int(sized[1]) >= 1
    assert len(list(csv.DictReader((tmp_path / "t" / "results.csv").open()))) == int(sized[1])

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
