"""The violation lifecycle end to end: the real daemon and the shipped model on clips of real workers.

Clips (``tests.clips``) are dataset crops of workers with and without vests walking over a plain
background at 10 fps, played as offline files (``realtime = false``): the stream's clock is the
file's own timeline, so what happens, and when, is the same on every run however slow the machine.
Each clip ends with more than ``lost_s`` of empty background, so that a person who walked out is
reported lost before the file ends (an offline stream stops at its last frame).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from pipeline.subscriber import subscribe
from tests import clips
from tests.clips import FPS, Walker
from tests.conftest import SHIPPED
from tests.harness import Daemon, within
from tests.violations import EVENTS, Listener, start_daemon

FLOOR = 340  # where the workers stand: the bottom of their boxes, in a 640x360 frame
TAIL = 15  # empty frames after the last worker: more than lost_s, so their events end
EPS = 1e-3


@pytest.fixture(scope="module", autouse=True)
def dataset() -> Path:
    found = clips.dataset()
    if found is None:
        pytest.skip(f"construction-site-safety dataset not found at {clips.DATASET} (the ../shared checkout)")
    return found


@pytest.fixture
def play(tmp_path: Path) -> Iterator[Callable[..., dict[str, list[dict]]]]:
    """``play(walkers, frames, zones=None)``: the clip through a daemon with the shipped model; its
    ``det`` and ``event`` messages once every frame's ``det`` came (events of a frame follow its
    ``det``, and a clip's last frames are empty, so by then every event came)."""
    started: list[Daemon] = []

    def run(
        walkers: list[Walker], frames: int, zones: list[dict] | None = None, until: Callable | None = None
    ) -> dict[str, list[dict]]:
        clip = clips.write_clip(tmp_path / "clip.mp4", walkers, frames)
        daemon = start_daemon(tmp_path, clip, zones)
        started.append(daemon)
        listener = Listener(daemon.endpoint, frames, until)
        daemon.wait_ready()
        try:
            messages = listener.messages()
        except TimeoutError as error:
            raise TimeoutError(f"{error}\ndaemon output:\n{daemon.output.text()[-3000:]}") from None
        found = {
            "det": [m for m in messages if m["type"] == "det"],
            "event": [m for m in messages if m["type"] == "event"],
        }
        dets = found["det"]
        assert [round(m["pts"] * FPS) for m in dets] == list(range(frames)), "every frame, in order, from the first"
        return found

    yield run
    for daemon in started:
        daemon.close()


def by_event(events: list[dict]) -> dict[str, list[dict]]:
    """Phases per event id, in the order they came."""
    grouped: dict[str, list[dict]] = {}
    for event in events:
        grouped.setdefault(event["event_id"], []).append(event)
    return grouped


def clip_time(dets: list[dict], when: float) -> float:
    """A capture time of this clip as seconds into the file (the first frame's capture time is 0)."""
    return when - dets[0]["captured"]


def summary(events: list[dict]) -> str:
    keys = ("phase", "event_id", "track_id", "zones", "duration_s", "reason")
    return "\n".join(str({k: e[k] for k in keys}) for e in events)


def test_two_workers_crossing_one_after_the_other_raise_two_events(play) -> None:
    # each crosses 680 px in 3.5 s; the second comes in 0.3 s after the first went out
    first = Walker(clips.NO_VEST_JACKET, (-20, FLOOR), (660, FLOOR), 0, 34)
    second = Walker(clips.NO_VEST_CAMO, (-20, FLOOR), (660, FLOOR), 38, 72)
    found = play([first, second], 73 + TAIL)
    events, dets = found["event"], found["det"]

    starts = [e for e in events if e["phase"] == "start"]
    assert len(starts) == 2, summary(events)
    assert starts[0]["track_id"] != starts[1]["track_id"]
    phases = by_event(events)
    assert len(phases) == 2, summary(events)
    for start in starts:
        lifecycle = phases[start["event_id"]]
        assert lifecycle[0] is start and [e["phase"] for e in lifecycle[1:-1]] == ["update"] * (len(lifecycle) - 2)
        end = lifecycle[-1]
        assert end["phase"] == "end" and end["reason"] == "lost", summary(events)  # the whole frame has no outside
        assert {e["track_id"] for e in lifecycle} == {start["track_id"]}
        assert all(e["zones"] == ["site"] and e["missing"] == ["vest"] for e in lifecycle)
        assert start["duration_s"] == pytest.approx(EVENTS["dwell_s"], abs=EPS)
        assert 2.5 <= end["duration_s"] <= 3.5, "seen from coming in to going out, in one piece"
    one, two = (phases[s["event_id"]][-1] for s in starts)
    assert clip_time(dets, one["ended"]) < clip_time(dets, two["started"]), "one after the other"
    assert clip_time(dets, two["started"]) >= 3.8 - EPS, "the second's clock starts when they come in"


def test_a_lingering_worker_raises_one_event_updated_while_it_lasts(play) -> None:
    # 8 s in the middle of the frame, drifting 80 px, then gone
    lingerer = Walker(clips.NO_VEST_JACKET, (280, FLOOR), (360, FLOOR), 0, 79)
    found = play([lingerer], 80 + TAIL)
    events = found["event"]

    assert len(by_event(events)) == 1, summary(events)
    assert [e["phase"] for e in events] == ["start", "update", "update", "update", "end"], summary(events)
    durations = [e["duration_s"] for e in events]
    assert durations == sorted(durations) and len(set(durations)) == len(durations), durations
    assert durations[0] == pytest.approx(EVENTS["dwell_s"], abs=EPS)
    gaps = [later - earlier for earlier, later in pairwise(durations[:-1])]  # start and updates
    assert all(gap >= EVENTS["update_s"] - EPS for gap in gaps), f"updates at most every update_s: {durations}"
    assert events[-1]["reason"] == "lost" and 7.0 <= durations[-1] <= 8.0, summary(events)
    assert len({e["track_id"] for e in events}) == 1


def test_a_worker_outside_the_zone_raises_nothing(play) -> None:
    # the zone is the left half; the worker's feet stay on the right
    wanderer = Walker(clips.NO_VEST_CAMO, (400, FLOOR), (600, FLOOR), 0, 39)
    left = {"name": "left", "polygon": [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]], "require": ["vest"]}
    found = play([wanderer], 40 + TAIL, zones=[left])

    assert found["event"] == [], summary(found["event"])
    people = [p for m in found["det"] for p in m["people"]]
    assert sum(p["vest"] == "no" for p in people) >= 30, "the worker was seen, without a vest"
    assert all(p["zones"] == [] for p in people), "and never in the zone"


def test_a_worker_who_puts_a_vest_on_ends_the_event_complied(play) -> None:
    # stands in the middle, vest on from frame 25 (2.5 s), stays 2 s more with it, then gone
    worker = Walker(clips.NO_VEST_JACKET, (300, FLOOR), (330, FLOOR), 0, 44, switch={25: clips.VEST_YELLOW})
    found = play([worker], 45 + TAIL)
    events, dets = found["event"], found["det"]

    assert [e["phase"] for e in events] == ["start", "end"], summary(events)
    start, end = events
    assert end["event_id"] == start["event_id"] and end["track_id"] == start["track_id"]
    assert end["reason"] == "complied", summary(events)
    # the vest is seen from frame 25; the majority of the last 5 says so on its third frame (2.7 s),
    # with a frame of slack for one missed observation
    assert 2.5 - EPS <= clip_time(dets, end["ended"]) <= 2.8 + EPS, summary(events)
    after = [p for m in dets if 2.8 <= m["pts"] < 4.5 for p in m["people"]]
    assert after and all(p["track_id"] == start["track_id"] and p["vest"] == "yes" for p in after), after


def test_an_event_open_when_the_file_ends_is_ended_lost(play) -> None:
    # the worker is still in view on the last frame: no frame will ever show them gone
    stayer = Walker(clips.NO_VEST_JACKET, (300, FLOOR), (320, FLOOR), 0, 29)
    found = play([stayer], 30, until=lambda messages: any(m.get("phase") == "end" for m in messages))
    events = found["event"]

    assert events and events[0]["phase"] == "start" and events[-1]["phase"] == "end", summary(events)
    assert events[-1]["reason"] == "lost" and len(by_event(events)) == 1, summary(events)
    assert 2.6 <= events[-1]["duration_s"] <= 3.0, "ended when last seen: the clip's last frame (2.9 s)"


def said_until(event: dict) -> float:
    """The last moment a phase of ``event`` said it was open, on the stream's clock."""
    return event["started"] + event["duration_s"]


def test_an_event_open_when_its_stage_is_killed_ends_interrupted_for_subscribers(daemon, tmp_path: Path) -> None:
    """kill -9 of ``stream.<id>`` while a worker's event is open: its store row is ended, and the
    restarted stage publishes the ``end`` (reason ``interrupted``) that MQTT and webhook receivers
    would otherwise wait for for ever, lasting until the worker was last seen, not its last update."""
    standing = Walker(clips.NO_VEST_JACKET, (320, FLOOR), (320, FLOOR), 0, 99)
    clip = clips.write_clip(tmp_path / "standing.mp4", [standing], 100)
    running = daemon(
        [{"id": "yard", "url": str(clip), "realtime": True, "loop": True}],
        detector=SHIPPED,
        events={"dwell_s": 0.5, "update_s": 60},  # no update while it is open: only the start's duration
    )
    running.wait_ready()
    messages = within(subscribe(running.endpoint, ("det.yard", "event.yard"), timeout_s=120), 240)  # it loops
    start = None
    for _, message in messages:
        if start is None and message["type"] == "event" and message["phase"] == "start":
            start = message
        if start is not None and message["type"] == "det" and message["captured"] > said_until(start) + 2.5:
            break  # open 2.5 s beyond its start's duration: seen by the stage, said by no phase
    assert start is not None
    os.kill(running.stage_pid("stream.yard"), signal.SIGKILL)
    end = next(
        m for _, m in messages if m["type"] == "event" and m["event_id"] == start["event_id"] and m["phase"] == "end"
    )
    assert end["reason"] == "interrupted" and end["box"] == []
    # killed once a frame 2.5 s past the start's duration was published; the store hears it once a second
    # (a loaded box's stage took 1.1 s): beyond what any phase said, to within 2 s of the kill
    assert end["started"] + end["duration_s"] >= said_until(start) + 0.5, "as long as it was seen, to within 2 s"
    assert end["snapshot"] == start["snapshot"] and end["snapshot_url"]
    said = f"{start['event_id']} was open when the stage last stopped"
    running.output.wait_for(lambda line: said in line, 30)  # logged before the end went out; read after it came
    assert running.stop()[0] == 0
