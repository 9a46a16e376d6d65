"""FrameTimes: the timestamps every recorded frame gets, whatever times it is asked for (#23)."""

from __future__ import annotations

import random
from itertools import pairwise
from math import gcd

import pytest

from stages.media.video import GRID_RATE, GRID_TICKS, FrameTimes


def asked(seed: int, count: int = 300) -> list[float]:
    """Times as a loaded capture gives them: on time, equal, a hair apart, jittered, in bursts, back."""
    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(count):
        t += rng.choice([0.1, 0.1, 0.1, 0.0, 1e-5, 0.002, 0.1 + rng.uniform(-0.06, 0.06), -0.03])
        out.append(t)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_each_frame_on_the_grid_after_the_last_and_at_its_own_time_where_it_can_be(seed: int) -> None:
    """What FFmpeg needs to read the frames in order: intervals whose gcd is a step, among all of them
    and among all but the first three (its guess of the rate is then 120 fps), none under a step."""
    times = FrameTimes()
    placed = [times.place(t) for t in asked(seed)]
    assert all(pts == dts for pts, dts in placed), "no B-frames: shown when decoded"
    assert all(dts % GRID_TICKS == 0 for _, dts in placed), "on the grid"
    steps = [dts // GRID_TICKS for _, dts in placed]
    own = [round(t * GRID_RATE) for t in asked(seed)]
    intervals = [b - a for a, b in pairwise(steps)]
    assert min(intervals) >= 1 and gcd(*intervals[:2]) == 1 and gcd(*intervals[3:5]) == 1
    for i, (step, mine) in enumerate(zip(steps, own, strict=True)):
        due = mine if i == 0 else max(mine, steps[i - 1] + 1)  # its own time, or the next step free
        assert abs(step - due) <= 2 if i in (2, 5) else step == due, i  # those two moved for the gcd


def test_frames_at_a_steady_rate_are_on_time_but_two() -> None:
    """10 fps: 12 steps apart, but the third and sixth frames a step earlier (else FFmpeg takes the
    file for 10 fps, and a later frame 10 ms after another for one in the same instant)."""
    times = FrameTimes()
    steps = [times.place(i / 10)[1] // GRID_TICKS for i in range(8)] + [times.place(0.71)[1] // GRID_TICKS]
    assert steps == [0, 12, 23, 36, 48, 59, 72, 84, 85]
    assert times.lateness_s(0.71) == 1 / GRID_RATE and times.lateness_s(0.9) == 0.0


def test_a_frame_moved_later_keeps_its_reordering_delay() -> None:
    """B-frames: a packet shown 0.2 s after it is decoded still is, however far it was moved."""
    times = FrameTimes()
    assert times.place(0.2, 0.0) == (18000, 0)
    pts, dts = times.place(0.1, 0.0)  # decoded at the same time as the first: moved a step later
    assert dts == GRID_TICKS and pts == 9000 + GRID_TICKS
    assert times.lateness_s(-1.0) == pytest.approx(1.0 + 2 / GRID_RATE), "how far a step back would be moved"
