import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from stages.capture.sources.camera import CameraFeed
from stages.capture.sources.demo import CLIP_NAME, DEMO_FPS, HOLD_S, demo_pictures
from stages.capture.sources.feeds import Decoder, FeedError, open_feed
from stages.capture.sources.video import decoder_for, open_reader
from stages.config import redact
from stages.topology import nvidia_gpu


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


NVDEC = Decoder("cuda")


def test_decoder_setting() -> None:
    assert decoder_for("cpu") == Decoder() and decoder_for("cuda") == Decoder("cuda", required=True)
    assert decoder_for("auto") == (NVDEC if nvidia_gpu() else Decoder())  # no torch, no CUDA call: /proc


def frames_decoded(path: Path, decoder: Decoder) -> tuple[str, np.ndarray]:
    with open_reader(str(path), None, None, decoder) as reader:
        return reader.decoded_on, np.stack([frame.image for frame in reader.frames()]).astype(int)


def test_hardware_decode_gives_the_cpus_frames(make_video) -> None:
    """With a GPU, NVDEC against the CPU (H.264 decodes bit-exactly; the conversion to BGR may round
    differently); without one, the fallback: the same frames, on the CPU."""
    clip = make_video(seconds=1, fps=10)
    on, hardware = frames_decoded(clip, NVDEC)
    assert on == ("cuda" if nvidia_gpu() else "cpu")
    assert np.abs(hardware - frames_decoded(clip, Decoder())[1]).mean() < 1


@pytest.mark.skipif(nvidia_gpu(), reason="checks the message when no GPU decoder opens")
def test_required_hardware_decoder_that_fails_names_the_setting(make_video) -> None:
    with pytest.raises(FeedError, match=r"pipeline\.decode = 'cuda': .*clip\.mp4: cannot open to decode on cuda"):
        open_feed(str(make_video("clip.mp4", seconds=1, fps=10)), Path("/tmp"), decoder=Decoder("cuda", required=True))


def test_dead_source_is_the_culprit_whatever_the_decoder() -> None:
    with pytest.raises(FeedError) as caught:
        open_feed("rtsp://127.0.0.1:9/none", Path("/tmp"), timeout_s=2, decoder=Decoder("cuda", required=True))
    assert "rtsp://127.0.0.1:9/none: cannot open (" in str(caught.value) and "pipeline.decode" not in str(caught.value)
