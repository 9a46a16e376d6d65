"""Which frames a stream's ``fps`` and ``detect_fps`` take, by source time; a source that never gives one."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from stages.capture.stage import CaptureStage, RateSchedule


def taken(rate: float | None, timeline: np.ndarray) -> int:
    schedule = RateSchedule(rate)
    return sum(schedule.due(float(pts)) for pts in timeline)


@pytest.mark.parametrize(("rate", "expected"), [(20, 200), (10, 100), (7.5, 75), (30, 300), (60, 300), (None, 300)])
def test_a_30_fps_camera_gives_the_rate_asked_for(rate: float | None, expected: int) -> None:
    timeline = np.arange(300) / 30  # 10 s
    assert taken(rate, timeline) == pytest.approx(expected, abs=1)


def test_jittery_camera_timestamps_keep_the_rate() -> None:
    rng = np.random.default_rng(1)
    timeline = np.arange(300) / 30 + rng.uniform(-0.004, 0.004, 300)
    assert taken(20, timeline) == pytest.approx(200, abs=2)


def test_a_loop_starts_the_schedule_over() -> None:
    schedule = RateSchedule(2)
    assert [schedule.due(t) for t in (0.0, 0.2, 0.5, 0.9, 0.0, 0.2, 0.5)] == [1, 0, 1, 0, 1, 0, 1]
    assert schedule.due(None)  # no timestamp: nothing to schedule by


def test_a_looping_file_without_a_decodable_frame_is_retried_with_back_off(
    make_video, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It opens, ends at once, and would be reopened at once for ever (six times a second, a log line
    each): it is a lost source instead, retried with the reconnect back-off and said once."""
    clip = bytearray(make_video("clip.mp4", seconds=2, fps=10).read_bytes())
    mdat = clip.index(b"mdat")
    size = int.from_bytes(clip[mdat - 4 : mdat], "big")
    clip[mdat + 4 : mdat - 4 + size] = bytes(size - 8)  # the container intact, every frame zeros
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip)
    config = tmp_path / "c.toml"
    config.write_text(
        f'runtime_dir = "{tmp_path / "run"}"\nrecordings_dir = "{tmp_path / "rec"}"\n'
        f'[[streams]]\nid = "cam"\nurl = "{broken}"\nloop = true\nrealtime = true\n'
        "[pipeline]\nreconnect_min_s = 0.5\nreconnect_max_s = 5\n"
    )
    stage = CaptureStage("capture.cam", config, None)
    stage.setup()
    try:
        with caplog.at_level(logging.INFO, logger="stages.capture.stage"):
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                stage.step()
    finally:
        stage.teardown()
    opened = [r for r in caplog.records if "opened" in r.getMessage()]
    lost = [r for r in caplog.records if "before its first decodable frame" in r.getMessage()]
    assert 2 <= len(opened) <= 4, f"opened {len(opened)} times in 4 s: back-off 0.5, 1, 2 s"
    assert len(lost) == 1, "the same failure is said once, then every few minutes"
    assert stage.state == "reconnecting" and stage.stats.reconnects == len(opened)
