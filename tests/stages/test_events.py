"""Violation events: the rule itself, and events from the running daemon with their snapshots."""

from __future__ import annotations

from pathlib import Path

import cv2

from stages.events import ViolationRule
from stages.settings import EventRule
from tests.harness import collect


def test_rule_fires_on_k_of_n_then_cools_down() -> None:
    rule = ViolationRule(EventRule(**{"class": "no_vest", "min_frames": 2, "window": 3, "cooldown_s": 10}))
    frames = [["vest"], ["no_vest"], ["person"], ["no_vest"], ["no_vest"], ["no_vest"]]
    fired = [rule.observe(names, [0.9] * len(names), now=float(t)) for t, names in enumerate(frames)]
    assert fired == [None, None, None, 2, None, None]  # 2 of the last 3 at t=3; cooling down until t=13
    assert rule.observe(["no_vest"], [0.9], now=13.0) == 3  # the window restarted after firing: t=4, 5 and 13


def test_rule_ignores_boxes_below_min_conf() -> None:
    rule = ViolationRule(EventRule(**{"class": "no_vest", "min_frames": 1, "window": 1, "min_conf": 0.5}))
    assert rule.observe(["no_vest"], [0.4], now=0.0) is None
    assert rule.observe(["no_vest", "vest"], [0.6, 0.9], now=1.0) == 1


def test_daemon_publishes_events_with_snapshots(daemon, scene_video) -> None:
    streams = [
        {"id": "yard", "url": str(scene_video), "loop": True, "realtime": True},
        {"id": "gate", "url": str(scene_video), "loop": True, "realtime": True, "record": False},
    ]
    vestwatch = daemon(
        streams, detector={"conf": 0.1}, events={"class": "vest", "min_frames": 2, "window": 3, "cooldown_s": 2}
    )
    vestwatch.wait_ready()

    events = collect(
        vestwatch.endpoint,
        lambda m: len(m.get("yard", [])) >= 2 and len(m.get("gate", [])) >= 1,
        timeout=90,
        topics=("event.",),
    )

    for event in events["yard"] + events["gate"]:
        assert event["type"] == "event" and event["rule"]["class"] == "vest" and event["frames_seen"] >= 2
        assert "vest" in event["names"] and event["counts"]["vest"] >= 1
        snapshot = cv2.imread(event["snapshot"])
        assert snapshot is not None and snapshot.shape == (240, 320, 3)
        assert Path(event["snapshot"]).parent.name == "events"
    first, second = events["yard"][:2]
    assert second["captured"] - first["captured"] >= 2  # the cool-down
    assert Path(first["segment"]).is_file() and 0 <= first["offset_s"] <= 4  # segment_s 4 in the test config
    assert events["gate"][0]["segment"] is None and events["gate"][0]["offset_s"] is None  # not recorded
    assert not list((vestwatch.recordings / "gate").rglob("*.ts"))
