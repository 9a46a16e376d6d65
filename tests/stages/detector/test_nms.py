import numpy as np
import torch

from stages.detector.nms import greedy_nms, non_max_suppression, suppress_exclusive

BOXES = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]]], dtype=torch.float32)


def scores(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float32)


def test_overlapping_boxes_of_one_class_keep_the_best() -> None:
    # boxes 0 and 1 overlap with IoU 81/119 = 0.68; box 3 repeats box 0 with a lower score
    out = non_max_suppression(BOXES, scores([[0.9, 0], [0.8, 0], [0.7, 0], [0.6, 0]]), conf=0.25, iou=0.45)[0]
    np.testing.assert_allclose(out[:, 4], [0.9, 0.7])
    np.testing.assert_array_equal(out[:, 5], [0, 0])


def test_threshold_is_exclusive_of_the_iou_limit() -> None:
    out = non_max_suppression(BOXES, scores([[0.9, 0], [0.8, 0], [0, 0], [0, 0]]), conf=0.25, iou=0.7)[0]
    assert len(out) == 2  # IoU 0.68 is below 0.7: both stay


def test_classes_are_suppressed_separately_unless_agnostic() -> None:
    cls_scores = scores([[0.9, 0], [0, 0.8], [0, 0], [0, 0]])
    assert len(non_max_suppression(BOXES, cls_scores, 0.25, 0.45)[0]) == 2
    assert len(non_max_suppression(BOXES, cls_scores, 0.25, 0.45, agnostic=True)[0]) == 1


def test_conf_class_filter_and_max_det() -> None:
    cls_scores = scores([[0.9, 0], [0, 0.8], [0.3, 0], [0.2, 0]])
    kept = non_max_suppression(BOXES, cls_scores, conf=0.25, iou=0.45)[0]
    np.testing.assert_allclose(sorted(kept[:, 4]), [0.3, 0.8, 0.9], rtol=1e-6)
    only_one = non_max_suppression(BOXES, cls_scores, conf=0.25, iou=0.45, classes=[1])[0]
    np.testing.assert_array_equal(only_one[:, 5], [1])
    assert len(non_max_suppression(BOXES, cls_scores, conf=0.1, iou=0.45, max_det=1)[0]) == 1


def test_multi_label_keeps_each_class_above_conf() -> None:
    out = non_max_suppression(BOXES[:, 2:3], scores([[0.6, 0.5]]), conf=0.25, iou=0.45, multi_label=True)[0]
    assert sorted(out[:, 5].tolist()) == [0, 1]


def test_greedy_nms_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (200, 2))], 1).astype(np.float32)
    score = rng.uniform(0, 1, 200).astype(np.float32)
    keep = greedy_nms(boxes, score, 0.5, 1000)

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    expected: list[int] = []
    for i in np.argsort(-score):
        if all(iou(boxes[i], boxes[j]) <= 0.5 for j in expected):
            expected.append(int(i))
    assert keep.tolist() == expected


def rows(*boxes: tuple[float, float, float, float, float, int]) -> np.ndarray:
    return np.array(boxes, np.float32).reshape(-1, 6)


VEST, NO_VEST, PERSON, HARDHAT, NO_HARDHAT = range(5)
PAIRS = [(VEST, NO_VEST), (HARDHAT, NO_HARDHAT)]


def test_of_two_exclusive_boxes_on_one_object_the_stronger_stays() -> None:
    head = rows((0, 0, 10, 10, 0.57, HARDHAT), (1, 0, 10, 10, 0.59, NO_HARDHAT), (0, 0, 10, 30, 0.8, PERSON))
    kept = suppress_exclusive(head, PAIRS, 0.5)
    assert kept[:, 5].tolist() == [NO_HARDHAT, PERSON]  # order kept, the person untouched


def test_exclusive_boxes_apart_or_of_unpaired_classes_all_stay() -> None:
    apart = rows((0, 0, 10, 10, 0.9, VEST), (20, 0, 30, 10, 0.8, NO_VEST))  # two workers
    assert len(suppress_exclusive(apart, PAIRS, 0.5)) == 2
    unpaired = rows((0, 0, 10, 10, 0.9, VEST), (0, 0, 10, 10, 0.8, NO_HARDHAT))
    assert len(suppress_exclusive(unpaired, PAIRS, 0.5)) == 2
    assert len(suppress_exclusive(rows((0, 0, 10, 10, 0.9, VEST), (0, 0, 10, 10, 0.8, NO_VEST)), [], 0.5)) == 2


def test_a_suppressed_box_suppresses_nothing() -> None:
    # no_vest (0.7) loses to vest (0.9); the second vest (0.6) overlaps only the no_vest and stays
    chain = rows((0, 0, 10, 10, 0.9, VEST), (4, 0, 14, 10, 0.7, NO_VEST), (8, 0, 18, 10, 0.6, VEST))
    assert suppress_exclusive(chain, PAIRS, 0.3)[:, 4].tolist() == [np.float32(0.9), np.float32(0.6)]
