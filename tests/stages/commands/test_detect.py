"""``vestwatch detect`` run as a user runs it: a subprocess on real files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from stages.config import DetectorSettings
from stages.detector.detector import detector_from_settings, load_detector
from tests.conftest import TEST_NAMES, scene
from tests.harness import probe_video, vestwatch


@pytest.fixture
def media(tmp_path: Path, make_video) -> Path:
    """A folder with nested images, a video and a corrupt image."""
    root = tmp_path / "inputs"
    (root / "cam2").mkdir(parents=True)
    cv2.imwrite(str(root / "yard.jpg"), scene(480, 640, seed=2))
    cv2.imwrite(str(root / "cam2" / "gate.png"), scene(640, 360, seed=1))
    (root / "cam2" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    video = make_video("walk.mp4", seconds=1, fps=10, size="320x240")
    video.rename(root / "walk.mp4")
    return root


def test_folder_of_images_and_video(media: Path, tmp_path: Path, tiny_weights: Path, ffmpeg: str) -> None:
    out = tmp_path / "out"
    result = vestwatch(
        "detect",
        media,
        "--weights",
        tiny_weights,
        "--out",
        out,
        "--conf",
        "0.3",
        "--img",
        "320",
        "--device",
        "cpu",
        "--batch",
        "4",
    )

    assert result.returncode == 1, result.stderr  # one corrupt input
    assert "cam2/broken.jpg: unreadable or corrupt image" in result.stderr
    assert (out / "yard.jpg").is_file() and (out / "cam2" / "gate.png").is_file()

    record = json.loads((out / "yard.json").read_text())
    assert (record["width"], record["height"]) == (480, 640)
    detector = detector_from_settings(DetectorSettings(weights=tiny_weights, device="cpu", img_size=320, conf=0.3))
    expected = detector.detect([cv2.imread(str(media / "yard.jpg"))]).detections[0]
    assert len(record["detections"]) == len(expected) > 0
    assert record["counts"] == expected.counts(TEST_NAMES)
    for det in record["detections"]:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 <= x2 <= 480 and 0 <= y1 <= y2 <= 640
        assert det["class_name"] == TEST_NAMES[det["class_id"]] and 0.3 < det["score"] <= 1

    lines = [json.loads(line) for line in (out / "walk.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(10))
    assert lines[1]["pts_s"] == pytest.approx(0.1)
    stream, problems = probe_video(out / "walk.mp4")
    assert problems == ""
    assert (stream["codec_name"], int(stream["nb_read_frames"]), stream["width"]) == ("h264", 10, 320)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == 3 and summary["frames"] == 12 and len(summary["failed"]) == 1
    image_boxes = sum(
        json.loads((out / n).read_text())["counts"].get(c, 0)
        for n in ("yard.json", "cam2/gate.json")
        for c in TEST_NAMES
    )
    video_boxes = sum(sum(line["counts"].values()) for line in lines)
    assert sum(summary["counts"].values()) == image_boxes + video_boxes
    assert "files processed" in result.stdout and "mean inference ms/frame" in result.stdout


def test_glob_and_all_good_inputs_exit_zero(tmp_path: Path, tiny_weights: Path) -> None:
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"shot{i}.jpg"), scene(320, 240, seed=i))
    result = vestwatch(
        "detect",
        tmp_path / "shot*.jpg",
        "--weights",
        tiny_weights,
        "--out",
        tmp_path / "o",
        "--device",
        "cpu",
        "--img",
        "320",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "o").glob("*.json")) == ["shot0.json", "shot1.json", "summary.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--conf", "1.5"], "--conf: Input should be less than or equal to 1"),
        (["--img", "300"], "--img_size: Value error, must be a multiple of 32"),
        (["--device", "tpu"], "device 'tpu': expected cpu, cuda, cuda:N or auto"),
        (["--weights", "absent.pt"], "absent.pt: weights file not found"),
    ],
)
def test_bad_options_stop_with_one_line(tmp_path: Path, tiny_weights: Path, args: list[str], message: str) -> None:
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), scene(160, 160))
    result = vestwatch("detect", image, "--weights", tiny_weights, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_overrides_config(tmp_path: Path, tiny_weights: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(f'[detector]\nweights = "{tiny_weights}"\nconf = 0.3\nimg_size = 320\ndevice = "cpu"\n')
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), scene(320, 240, seed=2))
    result = vestwatch("detect", image, "-c", config, "--out", tmp_path / "o", env={"VESTWATCH_DETECTOR__CONF": "0.99"})
    assert result.returncode == 0, result.stderr
    assert all(d["score"] > 0.99 for d in json.loads((tmp_path / "o" / "a.json").read_text())["detections"])


def test_export_command_writes_a_loadable_onnx(tmp_path: Path, tiny_weights: Path) -> None:
    out = tmp_path / "model.onnx"
    result = vestwatch("export", tiny_weights, "--out", out, "--img", "320")
    assert result.returncode == 0, result.stderr
    assert load_detector(out, "cpu", 320).names == TEST_NAMES


def test_live_rtsp_source_for_a_number_of_frames(rtsp_server, tmp_path: Path, tiny_weights: Path) -> None:
    """A camera check at commissioning: the next N frames of a stream, annotated, with their detections.

    (Local cameras take the same path through the capture stage's V4L2 seam, which needs a device.)
    """
    server = rtsp_server(size="320x240", fps=15)
    url = server.url.replace("rtsp://", "rtsp://viewer:hunter2@")  # the test server ignores credentials
    out = tmp_path / "out"
    dead = "rtsp://viewer:hunter2@127.0.0.1:9/nothing"
    result = vestwatch("detect", url, dead, "--weights", tiny_weights, "--img", "320", "--frames", "12", "--out", out)

    assert result.returncode == 1, result.stderr  # the dead source failed, the live one was processed
    assert "hunter2" not in result.stderr + result.stdout + "".join(p.name for p in out.rglob("*"))
    assert "rtsp://viewer:***@127.0.0.1:9/nothing" in result.stderr
    [video] = out.glob("rtsp-127-0-0-1-*-cam.mp4")
    stream, problems = probe_video(video)
    assert problems == "" and int(stream["nb_read_frames"]) == 12 and (stream["width"], stream["height"]) == (320, 240)
    lines = [json.loads(line) for line in video.with_suffix(".jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(12))
    source_times = [line["pts_s"] for line in lines[1:]]  # an RTSP stream's first frame may come without one
    assert None not in source_times and source_times == sorted(source_times) and source_times[-1] > source_times[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 12 and summary["files"] == 1 and len(summary["failed"]) == 1
