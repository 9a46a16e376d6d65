"""``vestwatch val``'s metrics against computations done by hand on tiny cases."""

import numpy as np
import pytest

from pipeline.detections import Detections
from stages.training.metrics import Evaluation, average_precision, match

TRUTH = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)


def detections(rows: list[tuple[float, float, float, float, float, int]]) -> Detections:
    array = np.array(rows, np.float32).reshape(-1, 6)
    return Detections(array[:, :4], array[:, 4], array[:, 5].astype(np.int32))


def test_ap_of_a_hand_made_ranking() -> None:
    # scores 0.9 TP, 0.8 FP, 0.7 TP of 2 objects: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # Envelope: 1 up to recall 0.5 (51 of the 101 points), 2/3 above (50 points).
    ap, _, _ = average_precision(np.array([True, False, True]), np.array([0.9, 0.8, 0.7]), 2)
    assert ap == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)


def test_matching_is_greedy_by_score_and_per_class() -> None:
    found = detections(
        [
            (0, 0, 10, 10, 0.6, 0),  # matches truth 0, but only after the higher score took it
            (0, 0, 10, 11, 0.9, 0),  # IoU 10/11 = 0.909 with truth 0: TP up to the 0.90 threshold
            (20, 20, 30, 30, 0.8, 1),  # right place, wrong class: FP everywhere
        ]
    )
    correct = match(found, TRUTH, np.array([0, 0]))
    assert correct[1].tolist() == [True] * 9 + [False]  # 0.50 .. 0.90 yes, 0.95 no
    assert not correct[2].any()
    assert correct[0].tolist() == [False] * 9 + [True]  # at 0.95 the first is free for it


def test_evaluation_end_to_end_on_two_images() -> None:
    evaluation = Evaluation(["vest", "no_vest"])
    evaluation.add(detections([(0, 0, 10, 10, 0.9, 0), (50, 50, 60, 60, 0.8, 0)]), TRUTH, np.array([0, 1]))
    evaluation.add(detections([(20, 20, 30, 30, 0.7, 1)]), TRUTH[1:], np.array([1]))
    summary = evaluation.summary()
    vest, no_vest = summary["classes"]["vest"], summary["classes"]["no_vest"]
    assert vest["instances"] == 1 and no_vest["instances"] == 2
    assert vest["ap50"] == pytest.approx(1.0)  # the TP ranks first; a later FP cannot lower the envelope
    # no_vest: one TP (0.7) of two objects: precision 1 up to recall 0.5, then nothing
    assert no_vest["ap50"] == pytest.approx(51 / 101)
    assert summary["map50"] == pytest.approx((1.0 + 51 / 101) / 2)
    confusion = evaluation.confusion
    assert confusion[0, 0] == 1 and confusion[1, 1] == 1  # true positives on the diagonal
    assert confusion[2, 1] == 1  # no_vest in image 1 missed (background row)
    assert confusion[0, 2] == 1  # the vest false alarm (background column)
