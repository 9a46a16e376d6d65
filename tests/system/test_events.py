"""The stream stage on real site pictures with the shipped model: tracked people in ``det``,
violation events with snapshots and where to watch them."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import cv2

from stages.media.annotate import HIGHLIGHT_COLOUR
from tests.conftest import SHIPPED
from tests.harness import collect, vestwatch


def test_det_carries_tracked_people_in_frame_order(daemon, site_clip) -> None:
    vestwatch = daemon([{"id": "yard", "url": str(site_clip), "realtime": False}], detector=SHIPPED)
    vestwatch.wait_ready()
    published = collect(vestwatch.endpoint, lambda m: len(m.get("yard", [])) >= 20, timeout=120)["yard"]
    assert [m["seq"] for m in published] == sorted(m["seq"] for m in published), "frames reach the tracker in order"
    people = [p for m in published for p in m["people"]]
    assert people, "the site pictures show workers"
    assert {p["vest"] for p in people} <= {"yes", "no", "unknown"} and {"yes", "no"} & {p["vest"] for p in people}
    # a worker standing still through a picture's four zoom steps keeps one id
    ids_per_frame = [{p["track_id"] for p in m["people"]} for m in published[:4]]
    assert set.intersection(*ids_per_frame), "no track id survived four frames of one picture"


def test_violations_publish_events_with_snapshots(daemon, site_clip) -> None:
    streams = [
        {"id": "yard", "url": str(site_clip), "realtime": False, "loop": True},
        {"id": "gate", "url": str(site_clip), "realtime": False, "loop": True, "record": False},
    ]
    vestwatch = daemon(streams, detector=SHIPPED, events={"dwell_s": 0.5})
    vestwatch.wait_ready()

    events = collect(
        vestwatch.endpoint,
        lambda m: (
            any(e["phase"] == "start" for e in m.get("yard", []))
            and any(e["phase"] == "start" for e in m.get("gate", []))
        ),
        timeout=120,
        topics=("event.",),
    )

    for stream in ("yard", "gate"):
        start = next(e for e in events[stream] if e["phase"] == "start")
        assert start["type"] == "event" and start["missing"] == ["vest"] and start["zones"] == ["site"]
        assert start["duration_s"] >= 0.5 and start["ended"] is None
        assert start["event_id"].startswith(f"{stream}-") and len(start["box"]) == 4
        snapshot = cv2.imread(start["snapshot"])
        assert snapshot is not None and snapshot.shape == (640, 640, 3)
        assert Path(start["snapshot"]).parent.name == "events"
    yard = next(e for e in events["yard"] if e["phase"] == "start")
    assert Path(yard["segment"]).is_file() and 0 <= yard["offset_s"] <= 4  # segment_s 4 in the test config
    gate = next(e for e in events["gate"] if e["phase"] == "start")
    assert gate["segment"] is None and gate["offset_s"] is None  # not recorded
    assert not list((vestwatch.recordings / "gate").rglob("*.ts"))


def test_every_event_keeps_its_snapshot_when_results_come_seconds_late(daemon, site_clip) -> None:
    """Inference stopped for 3 s at a time (SIGSTOP/SIGCONT, shorter than ``stall_s``): the results
    come later than the capture ring holds a live camera's frames (16 slots, 1.6 s at 10 fps), yet
    the stream stage kept each detected frame, so every event's snapshot shows its person."""
    running = daemon(
        [{"id": "yard", "url": str(site_clip), "realtime": True, "loop": True}],
        detector=SHIPPED,
        events={"dwell_s": 0.5},
    )
    running.wait_ready()
    collect(running.endpoint, lambda m: len(m.get("yard", [])) >= 3, timeout=120)
    inference = running.stage_pid("inference")
    stopping = threading.Event()

    def delay_inference() -> None:
        while not stopping.is_set():
            os.kill(inference, signal.SIGSTOP)
            stopping.wait(3.0)
            os.kill(inference, signal.SIGCONT)
            stopping.wait(1.0)

    delayer = threading.Thread(target=delay_inference)
    delayer.start()
    try:
        messages = collect(
            running.endpoint,
            lambda m: (
                sum(e["type"] == "det" and e["latency_ms"] > 2000 for e in m.get("yard", [])) >= 3
                and sum(e["type"] == "event" and e["phase"] == "start" for e in m.get("yard", [])) >= 3
            ),
            timeout=180,
            topics=("det.", "event."),
        )["yard"]
    finally:
        stopping.set()
        delayer.join()
    late = [m for m in messages if m["type"] == "det" and m["latency_ms"] > 2000]
    assert late, "results came later than the ring holds frames"
    for start in (m for m in messages if m["type"] == "event" and m["phase"] == "start"):
        snapshot = cv2.imread(start["snapshot"])
        assert snapshot is not None, f"{start['event_id']}: no snapshot"
        x1, y1, x2, y2 = (int(round(v)) for v in start["box"])
        edge = snapshot[y1 : y2 + 1, [max(x1, 0), min(x2, snapshot.shape[1] - 1)]]
        assert (edge == HIGHLIGHT_COLOUR).all(axis=-1).any(), f"{start['event_id']}: the person's box is not drawn"
    status = json.loads(vestwatch("ctl", "status", "-c", running.config).stdout)
    assert status["stages"]["stream.yard"]["stats"]["unseen"] == 0, "a result found its frame gone"
    assert running.stop()[0] == 0
