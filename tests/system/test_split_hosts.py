"""The pipeline split across two hosts by config alone: capture, preprocess and the stream stages on a
camera host, inference on a GPU host, joined by tcp:// links that carry the pixels (two daemons here,
each with its own runtime dir, so no shared-memory ring can be reached from the other)."""

from __future__ import annotations

import pytest

from stages.config import BUNDLED_WEIGHTS
from tests.conftest import SHIPPED
from tests.harness import assert_same_boxes_as_detect, collect, free_port, probe_video, vestwatch

FRAMES = 20


@pytest.mark.parametrize(
    ("jpeg_quality", "curve"), [(None, False), (90, False), (None, True)], ids=["raw", "jpeg", "curve"]
)
def test_inference_on_another_host_gets_the_frames_inline(daemon, site_clip, tmp_path, jpeg_quality, curve) -> None:
    link, publish = free_port(), free_port()
    stream = {"id": "yard", "url": str(site_clip), "realtime": False}
    gpu_pipeline = {"stages": ["inference"], "inference": f"pull+bind:tcp://0.0.0.0:{link}"}
    cameras_pipeline = {
        "stages": ["capture", "preprocess", "stream"],
        "inference": f"push+connect:tcp://127.0.0.1:{link}",
        "detections": f"sub+connect:tcp://127.0.0.1:{publish}",
    }
    if jpeg_quality:
        cameras_pipeline["inline_jpeg_quality"] = jpeg_quality
    if curve:  # the same keys folder on both hosts; inference is the CURVE server
        assert vestwatch("keys", tmp_path / "keys").returncode == 0
        gpu_pipeline["link_keys"] = cameras_pipeline["link_keys"] = str(tmp_path / "keys")
    gpu = daemon([stream], publish_port=publish, home="gpu", pipeline=gpu_pipeline, detector=SHIPPED)
    cameras = daemon([stream], home="cameras", pipeline=cameras_pipeline, detector=SHIPPED)
    gpu.wait_ready()
    cameras.wait_ready()

    published = collect(cameras.endpoint, lambda m: len(m.get("yard", [])) >= FRAMES, timeout=120)["yard"]

    assert [m["seq"] - published[0]["seq"] for m in published] == list(range(FRAMES)), "offline credit crossed hosts"
    if jpeg_quality is None:
        assert_same_boxes_as_detect(published, site_clip, BUNDLED_WEIGHTS, tmp_path / "detect", SHIPPED["conf"])
    else:  # JPEG changes pixels a little, so scores move; the frames still arrive whole and in place
        assert all((m["width"], m["height"]) == (640, 640) for m in published)
        assert {"vest", "no_vest"} <= {name for m in published for name in m["names"]}
    assert not list(cameras.runtime_dir.glob("ring-preprocess-*")), "pixels went inline, not through a ring"
    for code, seconds in (cameras.stop(), gpu.stop()):
        assert code == 0 and seconds < 10
    assert "started inference" not in cameras.output.text() and "started capture" not in gpu.output.text()
    assert f"subscribe with: vestwatch subscribe --endpoint {cameras.endpoint}" in cameras.output.text()
    segments = sorted((cameras.recordings / "yard").rglob("*.ts"))
    assert sum(int(probe_video(s)[0]["nb_read_frames"]) for s in segments) == FRAMES, "recorded on the camera host"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('inference = "pub+bind:tcp://0.0.0.0:5570"', "pipeline.inference: Value error, 'pub+bind:tcp://0.0.0.0:5570'"),
        (
            'detections = "push+connect:tcp://gpu:5560"',
            "pipeline.detections: Value error, 'push+connect:tcp://gpu:5560'",
        ),
        ('stages = ["capture", "render"]', "pipeline.stages.1: Input should be 'capture', 'preprocess', 'inference'"),
    ],
)
def test_a_wrong_split_stops_start_up_with_one_line(tmp_path, line: str, message: str) -> None:
    config = tmp_path / "split.toml"
    config.write_text(f'runtime_dir = "{tmp_path}"\n[pipeline]\n{line}\n')
    result = vestwatch("run", "-c", config, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
