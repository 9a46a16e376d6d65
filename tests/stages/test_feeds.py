import itertools
from pathlib import Path

import cv2
import pytest

from stages.feeds import FeedError, open_feed
from stages.feeds.camera import CameraFeed
from stages.feeds.demo import CLIP_NAME, DEMO_FPS, HOLD_S, demo_pictures
from stages.settings import redact


def test_camera_feed_through_its_seam(make_video) -> None:
    """No camera can be attached here: the seam opens a file with the same VideoCapture API."""
    clip = make_video(seconds=1, fps=10)
    feed = CameraFeed("/dev/video7", open_device=lambda url: cv2.VideoCapture(str(clip)))
    frames = []
    with pytest.raises(FeedError, match="camera /dev/video7: no frame"):  # the end reads as an unplugged camera
        for item in feed.frames():
            frames.append(item)
    assert len(frames) == 10 and frames[0].image.shape == (240, 320, 3)
    assert all(a.pts < b.pts for a, b in itertools.pairwise(frames))


def test_camera_that_cannot_open_is_a_feed_error(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="camera 3: cannot open"):
        CameraFeed("3", open_device=lambda url: cv2.VideoCapture(str(tmp_path / "absent.mp4")))


def test_image_folder_skips_unreadable_files(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.UMat(20, 20, cv2.CV_8UC3).get())
    (tmp_path / "3.jpg").write_bytes(b"broken")
    feed = open_feed(str(tmp_path), tmp_path)
    assert len(list(feed.frames())) == 3 and feed.corrupt == 1 and not feed.live


def test_demo_source_is_a_slideshow_made_once(tmp_path: Path) -> None:
    pictures = demo_pictures()
    feed = open_feed("demo", tmp_path)
    frames = list(feed.frames())
    assert feed.live and len(pictures) == 5 and len(frames) == len(pictures) * DEMO_FPS * HOLD_S
    first = frames[0].image.astype(int)
    assert abs(first - pictures[0]).mean() < 6, "the clip starts on the first picture (H.264 loses a little)"
    assert abs(frames[1].image.astype(int) - first).mean() > 0, "the zoom moves every frame"
    mtime = (tmp_path / CLIP_NAME).stat().st_mtime_ns
    open_feed("demo", tmp_path).close()
    assert (tmp_path / CLIP_NAME).stat().st_mtime_ns == mtime


def test_dead_rtsp_url_is_a_feed_error_naming_it_without_password() -> None:
    with pytest.raises(FeedError) as caught:
        open_feed("rtsp://admin:secret@127.0.0.1:9/none", Path("/tmp"), timeout_s=2)
    assert "rtsp://admin:***@127.0.0.1:9/none" in str(caught.value) and "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("rtsp://viewer:Pa@ssW0rd@cam/live", "rtsp://viewer:***@cam/live"),
        ("rtsp://u:pa/ss@10.0.0.9:554/x", "rtsp://u:***@10.0.0.9:554/x"),
        ("rtsp://:secret@cam/a", "rtsp://:***@cam/a"),
        ("rtsp://t0ken@cam/a", "rtsp://***@cam/a"),
        ("http://cam/s?channel=1&token=abc&Password=x;sig=y", "http://cam/s?channel=1&token=***&Password=***;sig=***"),
        ("opening rtsp://a:b@c/d failed (x@y)", "opening rtsp://a:***@c/d failed (x@y)"),
        ("http://cam/path@2x.jpg", "http://cam/path@2x.jpg"),
    ],
)
def test_every_form_of_credential_is_redacted(url: str, logged: str) -> None:
    assert redact(url) == logged
