"""Zones and the violation lifecycle, fed by PeopleProcessor as in a stream stage."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detections import Detections
from stages.config import EventSettings, StreamSettings, ZoneSettings
from stages.stream.analysis import FrameAnalysis, Person, Violation
from stages.stream.processors.people import PeopleProcessor
from stages.stream.processors.zones import Zone, ZonesProcessor, zones_for
from tests.stages.stream.processors.test_people import FPS, NAMES, T0, Box, analysis, walker

LEFT_HALF = [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]
EVENTS = {"dwell_s": 1.0, "update_s": 2.0, "lost_s": 1.0, "history": 3}


def stream(*zones: ZoneSettings) -> StreamSettings:
    return StreamSettings(id="cam", url="demo", zones=list(zones) or [ZoneSettings()])


def run(frames: list[list[Box]], zones: list[ZoneSettings] | None = None, **events: float) -> list[FrameAnalysis]:
    """Each frame through people then zones; the analyses, as the sinks would see them."""
    settings = stream(*(zones or []))
    rules = EventSettings(**{**EVENTS, **events})
    people, zoned = PeopleProcessor(settings, rules, FPS), ZonesProcessor(settings, rules, FPS)
    out = []
    for seq, boxes in enumerate(frames):
        frame = analysis(seq, boxes)
        people.handle(None, frame)
        zoned.handle(None, frame)
        out.append(frame)
    return out


def phases(frames: list[FrameAnalysis], phase: str | None = None) -> list[Violation]:
    return [v for f in frames for v in f.violations if phase is None or v.phase == phase]


def test_zone_contains_by_fractions_pixels_or_whole_frame() -> None:
    half = Zone(ZoneSettings(name="a", polygon=LEFT_HALF), 640, 480)
    assert half.contains(100, 400) and half.contains(320, 240) and not half.contains(321, 240)
    assert half.polygon_pixels(640, 480).tolist() == [[0, 0], [320, 0], [320, 480], [0, 480]]
    assert half.polygon_pixels(100, 50).tolist() == [[0, 0], [50, 0], [50, 50], [0, 50]]
    tri = Zone(ZoneSettings(name="b", polygon=[(100, 100), (300, 100), (100, 300)], units="pixel"), 640, 480)
    assert tri.contains(150, 150) and not tri.contains(290, 290)
    whole = Zone(ZoneSettings(), 640, 480)
    assert whole.contains(10, 10) and whole.contains(700, 500)
    assert whole.polygon_pixels(640, 480).tolist() == [[0, 0], [640, 0], [640, 480], [0, 480]]
    drawn = zones_for(stream(ZoneSettings(name="a", polygon=LEFT_HALF), ZoneSettings(name="b")), 640, 480)
    assert [z.name for z in drawn] == ["a", "b"] and drawn[0].require == ["vest"]


def test_two_people_without_vests_crossing_start_and_end_two_events() -> None:
    # both walk left to right through the left half and out of it, the second 10 frames behind
    frames = []
    for i in range(90):
        boxes = []
        if i < 75:
            boxes += walker(8 * i, 20, vest="no_vest")
        if i >= 10:
            boxes += walker(8 * (i - 10), 280, vest="no_vest")
        frames.append(boxes)
    out = run(frames, [ZoneSettings(name="a", polygon=LEFT_HALF)])
    starts, ends = phases(out, "start"), phases(out, "end")
    assert len(starts) == 2 and len({v.track_id for v in starts}) == 2 and len({v.event_id for v in starts}) == 2
    assert sorted(v.event_id for v in ends) == sorted(v.event_id for v in starts)
    assert {v.reason for v in ends} == {"left"} and all(v.missing == ["vest"] and v.zones == ["a"] for v in ends)
    for start in starts:
        assert start.event_id == f"cam-{int(start.started * 1000)}-{start.track_id}"
        assert start.duration_s == 1.0 and start.ended is None
    # a track born after the first frame shows on its second detection (ByteTrack), so seq 11
    assert sorted(v.started for v in starts) == [T0, T0 + 11 / FPS]
    # the bottom centre (x + 30) is past x = 320 from 8 * i = 296 on: last in the zone at i = 36;
    # the end is reported lost_s later (out of the zone counts like out of view), ended when last in it
    assert sorted(v.ended for v in ends) == [T0 + 36 / FPS, T0 + 46 / FPS]
    assert sorted(v.duration_s for v in ends) == [35 / FPS, 36 / FPS]


def test_one_lingering_person_starts_once_and_updates_with_growing_duration() -> None:
    out = run([walker(100, 200, vest="no_vest")] * 60)  # 7.4 s in the whole-frame zone
    events = phases(out)
    assert [v.phase for v in events] == ["start", "update", "update", "update"]
    assert len({v.event_id for v in events}) == 1
    assert [v.duration_s for v in events] == [1.0, 3.0, 5.0, 7.0]  # dwell_s, then every update_s
    assert all(v.started == T0 and v.ended is None and v.missing == ["vest"] for v in events)
    assert out[0].people[0].zones == ["site"]


def test_person_outside_the_zone_has_no_events() -> None:
    frames = [walker(400, 200, vest="no_vest")] * 40  # bottom centre x = 430, the zone ends at 320
    out = run(frames, [ZoneSettings(name="a", polygon=LEFT_HALF)])
    assert phases(out) == []
    assert all(f.people and f.people[0].vest == "no" and f.people[0].zones == [] for f in out)
    # the very same frames in a whole-frame zone do make an event
    assert [v.phase for v in phases(run(frames))][:1] == ["start"]


def test_person_who_puts_a_vest_on_complies() -> None:
    frames = [walker(100, 200, vest="no_vest")] * 24 + [walker(100, 200, vest="vest")] * 16
    out = run(frames)
    events = phases(out)
    assert [v.phase for v in events] == ["start", "update", "end"]
    end = events[-1]
    assert end.reason == "complied" and end.missing == ["vest"]
    # history 3: the second vest frame (seq 25) makes the majority "yes"
    assert end.ended == T0 + 25 / FPS and end.duration_s == pytest.approx(25 / FPS)
    assert out[-1].people[0].vest == "yes"


def test_person_who_disappears_is_lost_after_lost_s() -> None:
    frames = [walker(100, 200, vest="no_vest")] * 16 + [[]] * 20
    out = run(frames)
    ends = phases(out, "end")
    assert len(ends) == 1 and ends[0].reason == "lost"
    last_seen = T0 + 15 / FPS
    # reported on the first frame lost_s (8 frames) after last seen; it ended when last seen
    assert [v.phase for v in out[15 + 8].violations] == ["end"]
    assert phases(out[16 : 15 + 8]) == []
    assert ends[0].ended == last_seen and ends[0].duration_s == pytest.approx(15 / FPS)


def test_pending_violation_that_clears_before_dwell_emits_nothing() -> None:
    frames = [walker(100, 200, vest="no_vest")] * 4 + [walker(100, 200, vest="vest")] * 20
    assert phases(run(frames)) == []


def test_unknown_is_no_violation() -> None:
    assert phases(run([walker(100, 200)] * 30)) == []


def processor(zones: list[ZoneSettings], **events: float) -> ZonesProcessor:
    return ZonesProcessor(stream(*zones), EventSettings(**{**EVENTS, **events}), FPS)


def frame_of(seq: int, *people: Person) -> FrameAnalysis:
    empty = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    return FrameAnalysis("cam", seq, T0 + seq / FPS, None, 640, 480, empty, NAMES, people=list(people))


def test_update_when_what_is_missing_changes_and_reappearing_within_lost_s_continues() -> None:
    zones = processor([ZoneSettings(name="gate", require=["vest", "hardhat"])])
    box = [100.0, 200.0, 160.0, 360.0]
    got = []
    for seq in range(30):
        if 14 <= seq < 18:  # gone from people for less than lost_s
            frame = frame_of(seq)
        else:
            frame = frame_of(seq, Person(7, box, 0.9, vest="no", hardhat="no" if seq >= 20 else "yes"))
        zones.handle(None, frame)
        got += [(seq, v.phase, v.missing) for v in frame.violations]
    assert got == [(8, "start", ["vest"]), (20, "update", ["vest", "hardhat"])]


def test_one_person_in_two_zones_is_one_event_with_both_and_close_drops_state() -> None:
    zones = processor([ZoneSettings(name="a"), ZoneSettings(name="b", require=["hardhat"])], dwell_s=0)
    frame = frame_of(0, Person(3, [10, 10, 50, 100], 0.9, vest="no", hardhat="no"))
    zones.handle(None, frame)
    (start,) = frame.violations
    assert (start.phase, start.zones, start.require, start.missing) == ("start", ["a", "b"], PPE, PPE)
    zones.close()
    assert zones.cases == {}


PPE = ["vest", "hardhat"]
HARDHAT_ZONE = ZoneSettings(name="scaffold", polygon=LEFT_HALF, require=["hardhat"], dwell_s=0.5)


def test_entering_a_hardhat_zone_updates_the_one_event_and_leaving_it_updates_again() -> None:
    # the whole site requires a vest; the scaffold (left half) a hardhat, after its own dwell of 0.5 s
    zones = processor([ZoneSettings(name="site"), HARDHAT_ZONE], dwell_s=1.0, update_s=60)
    got, ids = [], set()
    for seq in range(64):
        x = 400 if seq < 16 or seq >= 40 else 100  # on the right, into the scaffold at 16, out at 40
        frame = frame_of(seq, Person(5, [x, 200.0, x + 60, 360.0], 0.9, vest="no", hardhat="no"))
        zones.handle(None, frame)
        got += [(seq, v.phase, v.zones, v.require, v.missing) for v in frame.violations]
        ids.update(v.event_id for v in frame.violations)
    assert got == [
        (8, "start", ["site"], ["vest"], ["vest"]),  # events.dwell_s: 8 frames at 8 fps
        (20, "update", ["site", "scaffold"], PPE, PPE),  # the scaffold's own dwell: 4 frames
        (47, "update", ["site"], ["vest"], ["vest"]),  # out of it (last in at 39) for lost_s: no longer counts
    ]
    assert len(ids) == 1, "one person, one event"


def test_an_event_ends_only_when_no_zone_counts_and_then_as_complied() -> None:
    zones = processor([ZoneSettings(name="site"), HARDHAT_ZONE], dwell_s=0, update_s=60)
    got = []
    for seq in range(20):
        hardhat = "yes" if seq >= 10 else "no"
        vest = "yes" if seq >= 14 else "no"
        frame = frame_of(seq, Person(5, [100.0, 200.0, 160.0, 360.0], 0.9, vest=vest, hardhat=hardhat))
        zones.handle(None, frame)
        got += [(seq, v.phase, v.zones, v.missing, v.reason) for v in frame.violations]
    assert [g[:2] for g in got] == [(0, "start"), (4, "update"), (10, "update"), (14, "end")]
    assert got[1][2:4] == (["site", "scaffold"], PPE)  # the scaffold's dwell 0.5 s reached at seq 4
    assert got[2][2:4] == (["site"], ["vest"]) and got[3][4] == "complied"


def test_a_worker_at_the_zone_edge_keeps_one_event() -> None:
    # standing with the feet on the zone's edge (x = 320): the box jitters out for 2 frames of 30
    frames = [walker(285 + (8 if i % 10 in (4, 5) else 0), 20, vest="no_vest") for i in range(30)]
    out = run(frames, [ZoneSettings(name="a", polygon=LEFT_HALF)])
    assert len(phases(out, "start")) == 1 and phases(out, "end") == []
    assert all(f.people[0].zones == [] for f in out if f.seq % 10 in (4, 5) and f.people)


def test_a_worker_crossing_a_zone_briefly_opens_no_event() -> None:
    # without a hardhat through the scaffold's corner for 2 frames, then on, in view, outside it
    zones = processor([HARDHAT_ZONE], dwell_s=1.0)
    for seq in range(40):
        x = 100 if seq < 2 else 400
        frame = frame_of(seq, Person(5, [x, 200.0, x + 60, 360.0], 0.9, vest="yes", hardhat="no"))
        zones.handle(None, frame)
        assert frame.violations == [], f"seq {seq}: the time out of the zone counted toward its dwell"


def test_a_zone_still_in_its_dwell_when_the_event_ends_keeps_its_time() -> None:
    # the site wants a vest at once, the scaffold a hardhat after 2 s (16 frames); the vest goes on at 5
    slow = ZoneSettings(name="scaffold", polygon=LEFT_HALF, require=["hardhat"], dwell_s=2.0)
    zones = processor([ZoneSettings(name="site"), slow], dwell_s=0, update_s=60)
    got = []
    for seq in range(24):
        frame = frame_of(
            seq, Person(5, [100.0, 200.0, 160.0, 360.0], 0.9, vest="yes" if seq >= 5 else "no", hardhat="no")
        )
        zones.handle(None, frame)
        got += [(seq, v.phase, v.zones, v.started, v.event_id) for v in frame.violations]
    first = f"cam-{int(T0 * 1000)}-5"
    assert got == [
        (0, "start", ["site"], T0, first),
        (5, "end", ["site"], T0, first),
        (16, "start", ["scaffold"], T0, f"{first}-2"),  # without a hardhat there since seq 0; another event
    ]
