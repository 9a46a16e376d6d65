import numpy as np
import pytest

from stages.detector.letterbox import PAD_VALUE, letterbox, letterbox_shape, scale_boxes


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
