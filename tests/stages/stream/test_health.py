"""A camera's state from what its stream stage hears: overload and a recording that cannot keep up
are said (``degraded``, with the reason), never read as watched."""

from __future__ import annotations

import time

from pipeline.messages import SourceStatus
from stages.config import PipelineSettings
from stages.stream.health import HealthJudge


def watched_camera() -> HealthJudge:
    judge = HealthJudge(PipelineSettings(max_latency_ms=2000), live=True, detect_fps=None)
    judge.heard(SourceStatus("cam", "connected", frame_age_s=0.1, fps_in=10.0))
    judge.inferred(time.time() - 0.2)
    assert judge.judge() is not None and judge.current.state == "watching"
    return judge


def test_late_results_are_said_as_an_overload() -> None:
    judge = watched_camera()
    for _ in range(5):
        judge.inferred(time.time() - 4.5)
    changed = judge.judge()
    assert changed is not None and changed.state == "degraded"
    assert changed.reason.startswith("overloaded: latency") and "max_latency_ms 2000" in changed.reason


def test_a_recording_that_misses_frames_or_holds_capture_back_is_a_problem() -> None:
    judge = watched_camera()
    assert judge.judge(missed=0, behind=0) is None, "nothing lost: still watching"
    changed = judge.judge(missed=3, behind=0)
    assert changed is not None and changed.state == "degraded" and "missed 3 frames" in changed.reason
    judge = watched_camera()
    changed = judge.judge(missed=0, behind=1)
    assert changed is not None and "holding capture back" in changed.reason


def test_frames_recorded_undrawn_to_keep_up_are_said() -> None:
    judge = watched_camera()
    changed = judge.judge(shedding=True)
    assert changed is not None and changed.state == "degraded" and "without boxes drawn" in changed.reason
    assert judge.judge(shedding=False) is not None and judge.current.state == "watching"
