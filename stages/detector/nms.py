"""Batched non-maximum suppression with the official YOLOv7 semantics, without torchvision.

Candidates are filtered on the device (torch), then suppressed greedily on CPU
(numpy): the loop runs once per kept box, so it is bounded by ``max_det``.
Classes are kept apart by offsetting boxes per class (``agnostic`` turns that off).
"""

from __future__ import annotations

import numpy as np
import torch

MAX_WH = 4096  # per-class box offset, larger than any input side
MAX_NMS = 30000  # candidates kept for NMS, highest score first


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    xy, half = boxes[..., :2], boxes[..., 2:4] / 2
    return torch.cat((xy - half, xy + half), -1)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int) -> np.ndarray:
    """Indices of the boxes kept, highest score first; a box goes when it overlaps a kept one above the threshold."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_keep:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = (np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest])).clip(0)
        h = (np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest])).clip(0)
        inter = w * h
        iou = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def non_max_suppression(
    boxes_xyxy: torch.Tensor,
    class_scores: torch.Tensor,
    conf: float = 0.25,
    iou: float = 0.45,
    classes: list[int] | None = None,
    agnostic: bool = False,
    max_det: int = 300,
    multi_label: bool = False,
) -> list[np.ndarray]:
    """Per image, ``[n, 6]`` float32 rows of x1, y1, x2, y2, score, class.

    ``boxes_xyxy`` is ``[B, N, 4]``; ``class_scores`` is ``[B, N, nc]``, already the final
    per-class confidence (objectness x class probability for YOLOv5/v7 outputs).
    """
    results = []
    for boxes, scores in zip(boxes_xyxy, class_scores):
        if multi_label:
            rows, cols = (scores > conf).nonzero(as_tuple=True)
            best, cls = scores[rows, cols], cols
            boxes = boxes[rows]
        else:
            best, cls = scores.max(1)
            mask = best > conf
            boxes, best, cls = boxes[mask], best[mask], cls[mask]
        if classes is not None:
            mask = torch.isin(cls, torch.as_tensor(classes, device=cls.device))
            boxes, best, cls = boxes[mask], best[mask], cls[mask]
        if best.numel() > MAX_NMS:
            top = best.topk(MAX_NMS).indices
            boxes, best, cls = boxes[top], best[top], cls[top]
        boxes_np = boxes.float().cpu().numpy()
        best_np = best.float().cpu().numpy()
        cls_np = cls.cpu().numpy().astype(np.float32)
        offset = 0.0 if agnostic else cls_np[:, None] * MAX_WH
        keep = greedy_nms(boxes_np + offset, best_np, iou, max_det)
        results.append(np.concatenate([boxes_np[keep], best_np[keep, None], cls_np[keep, None]], 1))
    return results


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``[N, 4]`` x ``[M, 4]``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(1)
    union = area_a[:, None] + area_b[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def suppress_exclusive(rows: np.ndarray, pairs: list[tuple[int, int]], iou: float) -> np.ndarray:
    """Rows (``[n, 6]``: x1, y1, x2, y2, score, class) without the weaker of two overlapping boxes
    whose classes exclude each other (``vest`` and ``no_vest`` on one torso), order kept.

    NMS keeps such pairs because it suppresses within a class; one person cannot be both.

    >>> rows = np.array([[0, 0, 10, 20, 0.59, 1], [1, 0, 10, 20, 0.57, 0]], np.float32)
    >>> suppress_exclusive(rows, [(0, 1)], 0.5)[:, 5].tolist()
    [1.0]
    """
    if not pairs or len(rows) < 2:
        return rows
    classes = rows[:, 5].astype(np.int64)
    top = int(max(max(p) for p in pairs) + 1)
    excludes = np.zeros((max(top, int(classes.max()) + 1),) * 2, bool)
    for a, b in pairs:
        excludes[a, b] = excludes[b, a] = True
    conflict = excludes[classes[:, None], classes[None, :]] & (box_iou(rows[:, :4], rows[:, :4]) > iou)
    keep = np.ones(len(rows), bool)
    for i in np.argsort(-rows[:, 4], kind="stable"):  # the stronger box decides first
        if keep[i]:
            keep &= ~conflict[i]
            keep[i] = True
    return rows[keep]
