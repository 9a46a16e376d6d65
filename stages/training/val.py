"""``vestwatch val``: mAP, precision and recall per class on a dataset split, with plots.

The same ``evaluate`` runs inside training (on the EMA model) and from the command line
(on any weights file, ONNX included), so the figures a checkpoint was chosen by are the
figures ``vestwatch val`` reproduces.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from stages.detector.detector import Detector
from stages.training.augment import to_pixels
from stages.training.metrics import Evaluation

VAL_CONF, VAL_IOU, VAL_MAX_DET = 0.001, 0.6, 300  # the official test.py settings for mAP


def evaluate(
    detector: Detector, images: list[Path], labels: list[np.ndarray], names: list[str], batch: int = 16
) -> Evaluation:
    """Run ``detector`` over the images and score it against the labels (our class ids, normalised)."""
    remap = _class_remap(detector.names, names)
    evaluation = Evaluation(names)
    for start in range(0, len(images), batch):
        chunk = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in images[start : start + batch]]
        result = detector.detect(chunk)
        for image, rows, found in zip(chunk, labels[start : start + batch], result.detections):
            h, w = image.shape[:2]
            truth = to_pixels(rows, w, h)
            if remap is not None:
                found = found.with_classes(remap)
            evaluation.add(found, truth[:, 1:], truth[:, 0].astype(np.int32))
    return evaluation


def _class_remap(model_names: list[str], data_names: list[str]) -> np.ndarray | None:
    """Model class id -> data class id by name (-1: not in the data), or None when they agree."""
    if list(model_names) == list(data_names):
        return None
    return np.array([data_names.index(n) if n in data_names else -1 for n in model_names], np.int32)


def report(summary: dict) -> str:
    """The per-class table printed after validation."""
    lines = [f"{'class':<14}{'images':>8}{'P':>8}{'R':>8}{'mAP50':>8}{'mAP50-95':>10}"]
    for name, c in summary["classes"].items():
        lines.append(
            f"{name:<14}{c['instances']:>8}{c['precision']:>8.3f}{c['recall']:>8.3f}"
            f"{c['ap50']:>8.3f}{c['ap50_95']:>10.3f}"
        )
    lines.append(
        f"{'all':<14}{'':>8}{summary['precision']:>8.3f}{summary['recall']:>8.3f}"
        f"{summary['map50']:>8.3f}{summary['map50_95']:>10.3f}"
    )
    return "\n".join(lines).replace("images", "boxes")


def save_results(evaluation: Evaluation, summary: dict, out: Path) -> None:
    """metrics.json, pr_curve.png and confusion_matrix.png in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "curves"}, indent=1))
    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    for name, (recall, precision) in summary["curves"].items():
        ap = summary["classes"][name]["ap50"]
        axes.plot(recall, precision, label=f"{name} {ap:.3f}")
    axes.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"precision-recall at IoU 0.5 (mAP50 {summary['map50']:.3f})",
    )
    axes.legend(loc="lower left")
    figure.savefig(out / "pr_curve.png")
    plt.close(figure)
    matrix = evaluation.confusion.astype(float)
    normalised = matrix / np.maximum(matrix.sum(0, keepdims=True), 1)
    labels = [*evaluation.names, "background"]
    figure, axes = plt.subplots(figsize=(7, 6), dpi=120)
    axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set(xlabel="true", ylabel="predicted", title="confusion matrix (conf 0.25, IoU 0.45), column-normalised")
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            axes.text(
                j,
                i,
                int(value),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if normalised[i, j] > 0.5 else "black",
            )
    figure.tight_layout()
    figure.savefig(out / "confusion_matrix.png")
    plt.close(figure)
