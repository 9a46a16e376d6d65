"""Detection metrics: COCO-style matching and 101-point interpolated AP, P/R, confusion matrix.

Matching follows COCO: per image and class, detections in descending score take the
best still-unmatched ground-truth box with IoU at or above the threshold. AP is the
mean of the precision envelope sampled at recall 0, 0.01, ..., 1 (pycocotools'
interpolation). mAP@0.5:0.95 averages AP over IoU 0.50, 0.55, ..., 0.95.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.detections import Detections
from stages.detector.nms import box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def match(detections: Detections, truth_boxes: np.ndarray, truth_classes: np.ndarray) -> np.ndarray:
    """``[N, 10]`` bool: is detection i a true positive at each IoU threshold (COCO greedy by score)."""
    correct = np.zeros((len(detections), len(IOU_THRESHOLDS)), bool)
    if not len(detections) or not len(truth_boxes):
        return correct
    ious = box_iou(detections.xyxy, truth_boxes)
    ious[detections.class_id[:, None] != truth_classes[None, :]] = 0.0
    order = np.argsort(-detections.confidence, kind="stable")
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(len(truth_boxes), bool)
        for i in order:
            candidates = np.where(taken, -1.0, ious[i])
            best = int(candidates.argmax())
            if candidates[best] >= threshold:
                taken[best] = True
                correct[i, t] = True
    return correct


def average_precision(tp: np.ndarray, scores: np.ndarray, n_truth: int) -> tuple[float, np.ndarray, np.ndarray]:
    """AP (101-point) for one class and threshold, with its recall and precision curves."""
    if n_truth == 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(tp[order])
    recall = hits / n_truth
    precision = hits / np.arange(1, len(hits) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.array([envelope[i] if i < len(envelope) else 0.0 for i in index])
    return float(sampled.mean()), recall, precision


@dataclass
class Evaluation:
    """Accumulates detections and ground truth image by image; ``summary()`` computes the metrics."""

    names: list[str]
    correct: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    classes: list[np.ndarray] = field(default_factory=list)
    truth_classes: list[np.ndarray] = field(default_factory=list)
    confusion: np.ndarray | None = None

    def add(self, detections: Detections, truth_boxes: np.ndarray, truth_classes: np.ndarray) -> None:
        self.correct.append(match(detections, truth_boxes, truth_classes))
        self.scores.append(detections.confidence)
        self.classes.append(detections.class_id)
        self.truth_classes.append(truth_classes.astype(np.int32))
        self._confuse(detections, truth_boxes, truth_classes)

    def _confuse(
        self,
        detections: Detections,
        truth_boxes: np.ndarray,
        truth_classes: np.ndarray,
        conf: float = 0.25,
        iou: float = 0.45,
    ) -> None:
        """Rows: predicted class (last = background); columns: true class (last = background)."""
        nc = len(self.names)
        if self.confusion is None:
            self.confusion = np.zeros((nc + 1, nc + 1), np.int64)
        keep = detections.confidence >= conf
        boxes, predicted = detections.xyxy[keep], detections.class_id[keep]
        ious = (
            box_iou(boxes, truth_boxes) if len(boxes) and len(truth_boxes) else np.zeros((len(boxes), len(truth_boxes)))
        )
        pairs = sorted(((ious[i, j], i, j) for i, j in zip(*np.nonzero(ious >= iou))), reverse=True)
        used_p, used_t = set(), set()
        for _, i, j in pairs:
            if i not in used_p and j not in used_t:
                used_p.add(i)
                used_t.add(j)
                self.confusion[predicted[i], truth_classes[j]] += 1
        for j, truth in enumerate(truth_classes):
            if j not in used_t:
                self.confusion[nc, truth] += 1  # missed
        for i, cls in enumerate(predicted):
            if i not in used_p:
                self.confusion[cls, nc] += 1  # false alarm

    def summary(self) -> dict:
        """Per class: AP50, AP50-95, precision and recall at the confidence of best mean F1; and the means."""
        correct = np.concatenate(self.correct) if self.correct else np.zeros((0, 10), bool)
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0)
        classes = np.concatenate(self.classes) if self.classes else np.zeros(0, np.int32)
        truth = np.concatenate(self.truth_classes) if self.truth_classes else np.zeros(0, np.int32)
        grid = np.linspace(0, 1, 1001)
        per_class, curves, p_grid, r_grid = {}, {}, [], []
        for c, name in enumerate(self.names):
            mine = classes == c
            n_truth = int((truth == c).sum())
            if n_truth == 0:
                continue
            aps = []
            for t in range(len(IOU_THRESHOLDS)):
                ap, recall, precision = average_precision(correct[mine, t], scores[mine], n_truth)
                aps.append(ap)
                if t == 0:
                    curves[name] = (recall, precision)
            ordered = np.argsort(-scores[mine], kind="stable")
            hits = np.cumsum(correct[mine][ordered, 0])
            sorted_scores = scores[mine][ordered]
            # precision and recall as functions of the confidence threshold, on a common grid
            kept = np.searchsorted(-sorted_scores, -grid, side="right")
            tp = np.where(kept > 0, hits[np.maximum(kept - 1, 0)] if len(hits) else 0, 0)
            p_grid.append(np.divide(tp, kept, out=np.zeros_like(grid), where=kept > 0))  # no detections: P 0
            r_grid.append(tp / n_truth)
            per_class[name] = {"instances": n_truth, "ap50": aps[0], "ap50_95": float(np.mean(aps))}
        if per_class:
            p_all, r_all = np.array(p_grid), np.array(r_grid)
            f1 = 2 * p_all * r_all / (p_all + r_all + 1e-16)
            best = int(f1.mean(0).argmax())
            for k, name in enumerate(per_class):
                per_class[name].update(precision=float(p_all[k, best]), recall=float(r_all[k, best]))
            conf_at_best = float(grid[best])
        else:
            conf_at_best = 0.0
        mean = lambda key: float(np.mean([v[key] for v in per_class.values()])) if per_class else 0.0  # noqa: E731
        return {
            "classes": per_class,
            "map50": mean("ap50"),
            "map50_95": mean("ap50_95"),
            "precision": mean("precision"),
            "recall": mean("recall"),
            "best_f1_conf": conf_at_best,
            "curves": curves,
        }
