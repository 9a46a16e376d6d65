"""Which frames a stream's ``fps`` and ``detect_fps`` take, by source time."""

from __future__ import annotations

import numpy as np
import pytest

from stages.capture.stage import RateSchedule


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
