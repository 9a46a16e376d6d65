"""Pairing two sets of detections by overlap, not by order: scores that tie or round differently
on another CPU (or in fp16) must not pair different boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.detections import Detections


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU; two zero-area boxes (clipped at the image edge) at the same place count as 1."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(2)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(1), (b[:, 2:] - b[:, :2]).prod(1)
    union = area_a[:, None] + area_b[None] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    same_place = np.abs(a[:, None] - b[None]).max(2) < 0.01
    return np.where(same_place, 1.0, iou)


@dataclass
class Matching:
    pairs: list[tuple[int, int]]  # (expected index, actual index)
    missing: list[int]  # expected boxes with no partner
    extra: list[int]  # actual boxes with no partner


def match(expected: Detections, actual: Detections, iou: float, score: float) -> Matching:
    """Each expected box, strongest first, takes the best-overlapping free actual box of its class
    whose IoU exceeds ``iou`` and whose score is within ``score``."""
    overlaps = box_iou(expected.xyxy, actual.xyxy) if len(expected) and len(actual) else np.zeros((0, 0))
    free = np.ones(len(actual), bool)
    pairs, missing = [], []
    for i in np.argsort(-expected.confidence, kind="stable"):
        fits = (
            free
            & (actual.class_id == expected.class_id[i])
            & (np.abs(actual.confidence - expected.confidence[i]) < score)
        )
        candidates = np.where(fits, overlaps[i], 0.0) if len(actual) else np.zeros(0)
        j = int(candidates.argmax()) if len(candidates) else -1
        if j >= 0 and candidates[j] > iou:
            pairs.append((int(i), j))
            free[j] = False
        else:
            missing.append(int(i))
    return Matching(pairs, sorted(missing), np.flatnonzero(free).tolist())


def assert_same_boxes(expected: Detections, actual: Detections, conf: float, iou: float = 0.95) -> None:
    """Every box has its twin (same class, IoU above ``iou``, score within 0.01), except boxes whose
    score sits within 0.02 of the ``conf`` threshold: rounding may put those on either side."""
    found = match(expected, actual, iou, score=0.01)
    borderline = conf + 0.02
    for i in found.missing:
        assert expected.confidence[i] < borderline, f"expected box {expected.xyxy[i]} ({expected.confidence[i]:.3f})"
    for j in found.extra:
        assert actual.confidence[j] < borderline, f"unexpected box {actual.xyxy[j]} ({actual.confidence[j]:.3f})"
