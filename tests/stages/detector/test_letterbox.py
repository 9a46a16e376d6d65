import cv2
import numpy as np
import pytest
import torch

from stages.capture.sources.demo import DEMO_IMAGES
from stages.config import BUNDLED_WEIGHTS
from stages.detector.detector import Letterboxed, load_detector
from stages.detector.letterbox import PAD_VALUE, letterbox, letterbox_shape, letterbox_tensor, scale_boxes
from tests.matching import assert_same_boxes


@pytest.mark.parametrize(
    ("source", "auto", "expected_shape", "expected_pad"),
    [
        ((360, 640), True, (384, 640), (0.0, 12.0)),  # 16:9 video: minimal stride padding
        ((360, 640), False, (640, 640), (0.0, 140.0)),  # square target
        ((1080, 1920), True, (384, 640), (0.0, 12.0)),  # downscaled by 1/3
        ((480, 300), True, (640, 416), (8.0, 0.0)),  # portrait: 300*4/3 = 400 -> pad to 416
    ],
)
def test_letterbox_matches_official_arithmetic(source, auto, expected_shape, expected_pad) -> None:
    image = np.full((*source, 3), 7, np.uint8)
    out, ratio, pad = letterbox(image, 640, auto=auto)
    assert out.shape[:2] == expected_shape
    assert pad == expected_pad
    assert ratio == pytest.approx(min(640 / source[0], 640 / source[1]))
    if pad[1]:
        assert (out[0] == PAD_VALUE).all() and (out[-1] == PAD_VALUE).all()
    if auto:
        assert letterbox_shape(source, 640) == expected_shape


def test_scaleup_false_never_enlarges() -> None:
    out, ratio, _ = letterbox(np.zeros((100, 200, 3), np.uint8), 640, auto=False, scaleup=False)
    assert ratio == 1.0 and out.shape[:2] == (640, 640)


def test_scale_boxes_inverts_the_letterbox() -> None:
    source = (720, 1280)
    _, ratio, pad = letterbox(np.zeros((*source, 3), np.uint8), 640)
    boxes = np.array([[100, 50, 400, 700], [0, 0, 1280, 720]], np.float32)
    forward = boxes * ratio + np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)
    np.testing.assert_allclose(scale_boxes(forward, ratio, pad, source), boxes, atol=1e-3)


def test_scale_boxes_clips_to_the_image() -> None:
    out = scale_boxes(np.array([[-20, -5, 900, 700]], np.float32), 1.0, (0, 0), (480, 640))
    np.testing.assert_array_equal(out, [[0, 0, 640, 480]])


def test_a_mixed_batch_centres_each_frame_and_keeps_its_boxes(tiny_weights) -> None:
    detector = load_detector(tiny_weights, "cpu", 320)
    sources, boxes = (
        [np.zeros((180, 320, 3), np.uint8), np.zeros((320, 180, 3), np.uint8)],
        [(40, 30, 120, 90), (20, 200, 100, 300)],
    )
    for image, (x0, y0, x1, y1) in zip(sources, boxes):
        image[y0:y1, x0:x1] = 255
    boxed = [letterbox(image, letterbox_shape(image.shape[:2], 320), auto=False) for image in sources]
    frames = [Letterboxed(ratio, pad, image.shape[:2]) for image, (_, ratio, pad) in zip(sources, boxed)]

    batch, moved = detector.batch_letterboxed([b[0] for b in boxed], frames)

    assert batch.shape == (2, 320, 320, 3)
    for canvas, frame, box in zip(batch, moved, boxes):
        ys, xs = np.nonzero(canvas[..., 0] == 255)
        found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        np.testing.assert_allclose(scale_boxes(found, frame.ratio, frame.pad, frame.source_shape)[0], box, atol=1)
    one_shape, unmoved = detector.batch_letterboxed([boxed[0][0]] * 2, frames[:1] * 2)
    assert one_shape.shape[1:3] == (192, 320), "one stream's batch keeps the official rectangular shape"
    assert (one_shape[0] == boxed[0][0]).all() and unmoved[0] == frames[0]


DEMO_PICTURES = sorted(DEMO_IMAGES.glob("*.jpg"))


@pytest.mark.parametrize("target", [(640, 640), (384, 640), (1280, 1280)])
def test_the_device_letterbox_equals_the_cpu_one_within_a_grey_level(target) -> None:
    """The CPU twin of the CUDA path: the same function, run here on CPU tensors."""
    pictures = [cv2.imread(str(path)) for path in DEMO_PICTURES]
    pictures.append(cv2.resize(pictures[0], (1920, 1080)))  # a 1080p camera frame, shrunk
    pictures.append(cv2.resize(pictures[1], (500, 281)))  # an odd size, enlarged
    for picture in pictures:
        expected, ratio, pad = letterbox(picture, target, auto=False)
        actual, actual_ratio, actual_pad = letterbox_tensor(torch.from_numpy(picture), target)
        assert (actual_ratio, actual_pad) == (ratio, pad)
        difference = np.abs(expected.astype(int) - actual.numpy().astype(int))
        assert difference.max() <= 1 and difference.mean() < 0.15, picture.shape  # rounding only


def test_detect_gives_the_same_boxes_letterboxed_on_the_device() -> None:
    detector = load_detector(BUNDLED_WEIGHTS, "cpu", 640)
    pictures = [cv2.imread(str(path)) for path in DEMO_PICTURES]
    detector.letterbox_on_device = False
    on_cpu = detector.detect(pictures).detections
    detector.letterbox_on_device = True  # what CUDA does, run on the CPU
    on_device = detector.detect(pictures).detections
    assert sum(len(d) for d in on_cpu) >= 20, "the shipped model finds the workers"
    for expected, actual in zip(on_cpu, on_device, strict=True):
        assert_same_boxes(expected, actual, detector.thresholds.conf, iou=0.9)
