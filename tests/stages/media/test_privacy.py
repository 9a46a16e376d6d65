"""Heads and people hidden on real site pictures: the dataset's own labels give the boxes; hidden regions
change, nothing else of the frame does, and a clip made of hidden frames still decodes."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.detections import Detections
from pipeline.httpauth import hash_secret
from stages.config import Settings, StreamSettings
from stages.media.privacy import BLOCKS_ACROSS, pixelate, regions
from stages.media.video import VideoReader, VideoWriter
from stages.stream.analysis import FrameAnalysis, Person
from stages.stream.outputs.overlay import draw
from tests import clips

OURS = {"Hardhat": "hardhat", "NO-Hardhat": "no_hardhat", "Person": "person", "Safety Vest": "vest",
        "NO-Safety Vest": "no_vest"}  # fmt: skip
NAMES = ["vest", "no_vest", "person", "hardhat", "no_hardhat"]
DATASET_NAMES = ["Hardhat", "Mask", "NO-Hardhat", "NO-Mask", "NO-Safety Vest", "Person", "Safety Cone",
                 "Safety Vest", "machinery", "vehicle"]  # fmt: skip


def labelled(count: int) -> list[tuple[np.ndarray, Detections]]:
    """``count`` validation pictures with people and heads, their labels as detections of our classes."""
    if clips.dataset() is None:
        pytest.skip(f"construction-site-safety dataset not found at {clips.DATASET} (the ../shared checkout)")
    found = []
    for label in sorted((clips.DATASET / "valid" / "labels").glob("*.txt")):
        rows = [line.split() for line in label.read_text().splitlines() if line.strip()]
        ours = [(NAMES.index(OURS[DATASET_NAMES[int(r[0])]]), *map(float, r[1:5])) for r in rows
                if DATASET_NAMES[int(r[0])] in OURS]  # fmt: skip
        if not any(NAMES[c] == "person" for c, *_ in ours) or not any(NAMES[c] == "hardhat" for c, *_ in ours):
            continue
        image = cv2.imread(str(clips.DATASET / "valid" / "images" / f"{label.stem}.jpg"))
        h, w = image.shape[:2]
        boxes = np.array([[(x - bw / 2) * w, (y - bh / 2) * h, (x + bw / 2) * w, (y + bh / 2) * h]
                          for _, x, y, bw, bh in ours])  # fmt: skip
        found.append((image, Detections(boxes, np.ones(len(ours)), np.array([c for c, *_ in ours]))))
        if len(found) == count:
            return found
    pytest.fail("the dataset has too few pictures with people and hardhats")


def mask_of(shape: tuple[int, ...], boxes: list) -> np.ndarray:
    mask = np.zeros(shape[:2], bool)
    for x1, y1, x2, y2 in boxes:
        mask[
            max(0, int(np.floor(y1))) : max(0, int(np.ceil(y2))), max(0, int(np.floor(x1))) : max(0, int(np.ceil(x2)))
        ] = True
    return mask


def test_heads_are_pixelated_and_the_rest_of_the_picture_is_untouched() -> None:
    for image, detections in labelled(5):
        hidden = regions(detections, NAMES, [], ["heads"])
        heads = [b for b, c in zip(detections.xyxy, detections.class_id) if NAMES[c] in ("hardhat", "no_hardhat")]
        assert heads and all(any(h[0] >= r[0] and h[1] >= r[1] and h[2] <= r[2] and h[3] <= r[3] for r in hidden)
                             for h in heads), "every head inside a hidden region"  # fmt: skip
        out = pixelate(image, hidden)
        mask = mask_of(image.shape, hidden)
        assert np.array_equal(out[~mask], image[~mask]), "nothing outside the heads changed"
        for x1, y1, x2, y2 in (tuple(map(int, b)) for b in heads):
            before, after = image[y1:y2, x1:x2].astype(int), out[y1:y2, x1:x2].astype(int)
            assert np.abs(after - before).mean() > 3, "the head changed"
            colours = lambda pixels: len(np.unique(pixels.reshape(-1, 3), axis=0))  # noqa: E731
            assert colours(after) <= BLOCKS_ACROSS * 2 * BLOCKS_ACROSS * 2 < colours(before), "a few flat blocks"


def test_people_without_a_head_box_have_the_top_of_their_box_hidden_and_people_mode_hides_them_all() -> None:
    detections = Detections(np.array([[100, 50, 140, 70], [300, 100, 360, 200]], float), np.ones(2), np.array([3, 0]))
    helmeted = Person(1, [95, 55, 145, 250], 0.9)  # the hardhat box sits on its top
    bare = Person(2, [400, 40, 480, 360], 0.9)  # no head box on it
    torso = Person(3, [300, 100, 360, 200], 0.9, torso_only=True)
    heads = regions(detections, NAMES, [helmeted, bare, torso], ["heads"])
    assert heads[0] == pytest.approx((92, 46, 148, 96)), "the hardhat, with a margin, and the face below it"
    assert (400, 40, 480, 120) in heads, "the top quarter of a person without a head box"
    assert any(box[3] <= 110 and box[1] < 100 for box in heads[1:]), "above a torso seen alone"
    assert not any(box[1] == 55 for box in heads), "the helmeted person's head is the hardhat box only"
    everyone = regions(detections, NAMES, [helmeted, bare, torso], ["people"])
    for person in (helmeted, bare):
        assert tuple(person.box) in everyone


def test_drawing_with_blur_differs_only_where_heads_are() -> None:
    ((image, detections),) = labelled(1)
    height, width = image.shape[:2]
    analysis = FrameAnalysis("gate", 1, 1_700_000_000.0, None, width, height, detections, NAMES)
    stream = StreamSettings(id="gate", url="demo")
    plain, blurred = draw(image, analysis, stream), draw(image, analysis, stream, ["heads"])
    mask = mask_of(image.shape, regions(detections, NAMES, [], ["heads"]))
    assert np.array_equal(plain[~mask], blurred[~mask])
    assert not np.array_equal(plain[mask], blurred[mask])


def test_a_clip_of_hidden_frames_still_decodes(tmp_path: Path) -> None:
    ((image, detections),) = labelled(1)
    image = cv2.resize(image, (640, 640))
    hidden = pixelate(image, regions(detections, NAMES, [], ["people"]))
    path = tmp_path / "hidden.mp4"
    with VideoWriter(path, Fraction(10)) as writer:
        for _ in range(20):
            writer.write(hidden)
    with VideoReader(path) as reader:
        frames = [frame.image for frame in reader.frames()]
    assert len(frames) == 20 and frames[0].shape == hidden.shape
    assert np.abs(frames[-1].astype(int) - hidden.astype(int)).mean() < 8, "the hidden picture, as encoded"


def test_faces_are_shown_to_reviewers_only_behind_the_password() -> None:
    with pytest.raises(ValidationError, match="reviewers_see_faces needs http_password_hash"):
        Settings(privacy={"blur": ["heads"], "reviewers_see_faces": True})
    hashed = hash_secret("a long enough secret", iterations=1000)
    settings = Settings(privacy={"blur": ["heads"], "reviewers_see_faces": True}, http_password_hash=hashed)
    assert not settings.serves_recording(settings.streams[0]), "heads blurred, the recording not: it stays"
    assert Settings(privacy={"blur": ["heads"], "blur_recordings": True}).serves_recording(settings.streams[0])
    copied = Settings(privacy={"blur": ["heads"], "blur_recordings": True}, recording={"video": "camera"})
    assert not copied.serves_recording(copied.streams[0]), "the demo's own video cannot be blurred"


def test_a_frame_without_results_is_hidden_whole_and_late_results_hide_more() -> None:
    ((image, detections),) = labelled(1)
    height, width = image.shape[:2]
    stream = StreamSettings(id="gate", url="demo")
    nothing = FrameAnalysis("gate", 1, 100.0, None, width, height, Detections(np.zeros((0, 4)), [], []), [])
    whole = draw(image, nothing, stream, ["heads"])
    assert len(np.unique(whole[height // 3 : 2 * height // 3].reshape(-1, 3), axis=0)) < 60, "all of it in blocks"
    fresh = FrameAnalysis("gate", 2, 100.0, None, width, height, detections, NAMES)
    late = FrameAnalysis("gate", 3, 100.5, None, width, height, detections, NAMES, results_at=100.0)
    stale = FrameAnalysis("gate", 4, 102.0, None, width, height, detections, NAMES, results_at=100.0)
    changed = [
        int((draw(image, a, stream, ["heads"]) != draw(image, a, stream)).any(axis=2).sum()) for a in (fresh, late)
    ]
    assert changed[1] > changed[0], "an earlier frame's results hide more around each head"
    assert (draw(image, stale, stream, ["heads"]) != draw(image, stale, stream)).any(axis=2).mean() > 0.8
