"""PeopleProcessor: ByteTrack ids that hold across frames and gaps, and PPE smoothed per track."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detections import Detections
from stages.config import EventSettings, StreamSettings
from stages.stream.analysis import FrameAnalysis, Person
from stages.stream.processors.people import PeopleProcessor, coverage, majority, new_tracker

NAMES = ["hardhat", "no_hardhat", "no_vest", "person", "vest"]
T0 = 1_700_000_000.0
FPS = 8.0  # 1/8 s steps add up exactly on T0

Box = tuple[str, float, float, float, float, float]  # class name, x1, y1, x2, y2, score


def analysis(seq: int, boxes: list[Box], names: list[str] = NAMES, fps: float = FPS) -> FrameAnalysis:
    xyxy = np.array([b[1:5] for b in boxes], np.float32).reshape(-1, 4)
    scores = np.array([b[5] for b in boxes], np.float32)
    ids = np.array([names.index(b[0]) for b in boxes], np.int32)
    return FrameAnalysis("cam", seq, T0 + seq / fps, None, 640, 480, Detections(xyxy, scores, ids), list(names))


def walker(x: float, y: float, vest: str | None = None, hat: str | None = None, score: float = 0.9) -> list[Box]:
    """A 60×160 person box at (x, y), with a torso box (``vest``/``no_vest``) and a head box."""
    boxes: list[Box] = [("person", x, y, x + 60, y + 160, score)]
    if vest:
        boxes.append((vest, x + 10, y + 40, x + 50, y + 100, 0.8))
    if hat:
        boxes.append((hat, x + 15, y, x + 45, y + 25, 0.7))
    return boxes


def processor(**events: float) -> PeopleProcessor:
    return PeopleProcessor(StreamSettings(id="cam", url="demo"), EventSettings(**events), FPS)


def run(people: PeopleProcessor, frames: list[list[Box]], names: list[str] = NAMES) -> list[list[Person]]:
    out = []
    for seq, boxes in enumerate(frames):
        frame = analysis(seq, boxes, names)
        people.handle(None, frame)
        out.append(frame.people)
    return out


def test_two_walkers_keep_two_distinct_stable_ids() -> None:
    # one walks right along the top, the other left along the bottom; their x ranges cross
    frames = [walker(20 + 8 * i, 20) + walker(560 - 8 * i, 260) for i in range(40)]
    seen = run(processor(), frames)
    top, bottom = set(), set()
    for people in seen:
        assert len(people) == 2
        for person in people:
            (top if person.box[1] < 200 else bottom).add(person.track_id)
    assert len(top) == 1 and len(bottom) == 1 and top != bottom
    last = {p.box[1]: p.box for p in seen[-1]}
    assert last[20.0] == [20 + 8 * 39, 20, 80 + 8 * 39, 180]  # boxes are the detections', as floats
    assert last[260.0] == [560 - 8 * 39, 260, 620 - 8 * 39, 420]


def test_walker_missed_in_two_frames_keeps_its_id() -> None:
    frames = [walker(20 + 8 * i, 100) if i not in (10, 11) else [] for i in range(25)]
    seen = run(processor(), frames)
    assert seen[10] == [] and seen[11] == []
    ids = {p.track_id for people in seen for p in people}
    assert len(ids) == 1
    assert all(len(people) == 1 for i, people in enumerate(seen) if i not in (10, 11))


@pytest.mark.parametrize(("gap", "same"), [(6, True), (12, False)])
def test_a_track_survives_a_gap_shorter_than_lost_s(gap: int, same: bool) -> None:
    # lost_s=1 at 8 fps is 8 frames (ByteTrack's own buffer is counted at 30 fps: it must be scaled)
    frames = [walker(200, 100)] * 5 + [[]] * gap + [walker(200, 100)] * 5
    seen = run(processor(lost_s=1.0), frames)
    ids = [p.track_id for people in seen for p in people]
    assert (len(set(ids)) == 1) is same


@pytest.mark.parametrize(("fps", "lost_s", "frames"), [(8, 1.0, 8), (10, 3.0, 30), (25, 0.5, 13), (1, 3.0, 3)])
def test_tracker_buffer_is_lost_s_in_frames(fps: float, lost_s: float, frames: int) -> None:
    assert new_tracker(EventSettings(lost_s=lost_s), fps).max_time_lost == frames


def test_one_vest_frame_among_no_vest_frames_does_not_flip() -> None:
    kinds = ["no_vest"] * 4 + ["vest"] + ["no_vest"] * 3 + ["vest"] * 3
    seen = run(processor(history=5), [walker(200, 100, vest=k) for k in kinds])
    vests = [people[0].vest for people in seen]
    assert vests[:8] == ["no"] * 8
    # three of the last five say yes: now it is a vest
    assert vests[8:] == ["no", "no", "yes"]
    assert len({people[0].track_id for people in seen}) == 1


def test_lone_no_vest_box_is_a_torso_only_person() -> None:
    seen = run(processor(), [[("no_vest", 300, 200, 340, 260, 0.7)]])
    [person] = seen[0]
    assert person.torso_only and person.vest == "no" and person.hardhat == "unknown"
    assert person.box == [300, 200, 340, 260] and person.score == pytest.approx(0.7)


def test_vest_box_on_a_person_is_no_separate_person() -> None:
    seen = run(processor(), [walker(100, 100, vest="vest", hat="hardhat")] * 3)
    for people in seen:
        [person] = people
        assert not person.torso_only and person.vest == "yes" and person.hardhat == "yes"


def test_torso_box_mostly_off_the_person_is_a_person_of_its_own() -> None:
    frames = [[*walker(100, 100), ("vest", 140, 150, 200, 210, 0.8)]] * 2  # a third of it on the person
    [first, _] = run(processor(), frames)
    assert sorted(p.torso_only for p in first) == [False, True]
    by_kind = {p.torso_only: p for p in first}
    assert by_kind[True].vest == "yes"
    assert by_kind[False].vest == "unknown"  # a third of the vest box on it is not enough


def test_best_scoring_item_box_decides_and_weak_boxes_do_not_count() -> None:
    both = [*walker(100, 100, vest="no_vest"), ("vest", 115, 150, 145, 190, 0.95)]
    weak = [*walker(100, 100), ("vest", 115, 150, 145, 190, 0.1)]
    assert run(processor(), [both])[0][0].vest == "yes"
    assert run(processor(), [weak])[0][0].vest == "unknown"


def test_classes_the_model_lacks_are_never_seen() -> None:
    names = ["person", "no_vest"]
    seen = run(processor(), [walker(100, 100, vest="no_vest")], names=names)
    [person] = seen[0]
    assert person.vest == "no" and person.hardhat == "unknown"


def test_tracks_unseen_for_lost_s_are_forgotten() -> None:
    people = processor(lost_s=1.0)
    run(people, [walker(20 * i, 100, vest="no_vest") for i in range(3)] + [[]] * 12)
    assert people.tracks == {}


def test_majority_breaks_ties_by_the_latest() -> None:
    from collections import deque

    assert majority(deque()) == "unknown"
    assert majority(deque(["yes", "no"])) == "no"
    assert majority(deque(["no", "yes"])) == "yes"
    assert majority(deque(["yes", "yes", "no"])) == "yes"


def test_coverage_is_the_share_of_the_inner_box() -> None:
    got = coverage(np.array([[0, 0, 10, 10], [5, 5, 15, 15]]), np.array([[0, 0, 10, 10]]))
    assert got[:, 0].tolist() == [1.0, 0.25]
