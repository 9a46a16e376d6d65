"""A live source faster than inference: frames are dropped (counted), latency stays bounded."""

from __future__ import annotations

import itertools
import json
import statistics
import time

from tests.harness import collect, recorded_seqs, vestwatch, wait_status
from tests.stages.web.test_observe import healthz_until


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def test_live_overload_drops_frames_and_keeps_latency_bounded(daemon, rtsp_server) -> None:
    server = rtsp_server(size="640x480", fps=30)  # CPU inference at 640 runs far below 30 fps
    vestwatch = daemon([{"id": "gate", "url": server.url, "record": False}], detector={"img_size": 640})
    vestwatch.wait_ready()
    collect(vestwatch.endpoint, lambda m: len(m.get("gate", [])) >= 5, timeout=90)  # warm-up

    messages = collect(vestwatch.endpoint, lambda m: len(m.get("gate", [])) >= 60, timeout=300)["gate"]

    latencies = [m["latency_ms"] for m in messages]
    dropped = sum(sum(m["drops"].values()) for m in messages)
    seconds = messages[-1]["captured"] - messages[0]["captured"]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(
        f"\n30 fps RTSP, yolov7-tiny 640 on CPU: {len(messages) / seconds:.1f} fps processed, "
        f"{dropped} frames dropped in {seconds:.1f} s, latency p50 {p50:.0f} ms p99 {p99:.0f} ms"
    )
    # frames are dropped, not queued (how many depends on the CPU: 1.8 per processed frame alone here,
    # 0.95 with other test processes about); that latency stays flat shows nothing queues
    assert dropped > 0.3 * len(messages)
    third = len(latencies) // 3
    first, last = statistics.median(latencies[:third]), statistics.median(latencies[-third:])
    assert last < first * 1.5 + 200, f"latency grows: median {first:.0f} ms -> {last:.0f} ms"
    assert p99 < 3000


OVERLOAD_S = 120  # how long the server is watched while overloaded


def test_an_overloaded_inference_is_shed_fairly_said_and_never_restarted(daemon, make_video, big_weights) -> None:
    """A model too big for the CPU: every batch takes longer than ``stall_s``. The supervisor
    leaves it be (heartbeats flow during a batch, saying how long it has run), each camera gets its
    fair share of detections, every camera is said to be degraded, overloaded, on /healthz, and the
    recording loses no frame (inference yields the CPU to it: ``pipeline.inference_nice``; a stream
    stage left behind sheds its drawing). It passes with both cores spun by other work too."""
    streams = [
        {"id": f"cam{i}", "url": str(make_video(f"cam{i}.mp4", seconds=3, fps=10)), "loop": True, "realtime": True}
        for i in range(3)
    ]
    running = daemon(
        streams,
        # 608: batches of about 3 s here, and three times that with both cores spun by other work
        # (inference is niced): still enough batches in OVERLOAD_S to judge fairness
        detector={"weights": str(big_weights), "img_size": 608},
        # down_after_s: a camera may then wait 30 s for a result; it would be said down, not degraded,
        # which is loud too but not what this test reads
        pipeline={"stall_s": 2, "max_latency_ms": 2000, "min_detect_fps": 0.1, "down_after_s": 45},
    )
    running.wait_ready()
    collect(running.endpoint, lambda m: all(m.get(s["id"]) for s in streams), timeout=300)  # the model is up
    wait_status(running, lambda status: status["stages"]["inference"]["busy_s"] > 2, timeout=120)  # said mid-batch
    end = time.monotonic() + OVERLOAD_S
    detected = collect(running.endpoint, lambda m: time.monotonic() > end, timeout=OVERLOAD_S + 60)
    report = healthz_until(f"http://{running.http}", lambda code: code == 503, saying="camera cam")
    status = json.loads(vestwatch("ctl", "status", "-c", running.config).stdout)
    assert running.stop()[0] == 0

    inference = status["stages"]["inference"]
    batch_s = inference["stats"]["inference_ms_sum"] / inference["stats"]["batches"] / 1e3
    counts = {s["id"]: len(detected.get(s["id"], [])) for s in streams}
    print(f"\nfull YOLOv7 on CPU: {batch_s:.1f} s a batch, detections in {OVERLOAD_S} s: {counts}")
    assert batch_s > 2, "the premise: a batch longer than stall_s"
    said = [line for line in running.output.text().splitlines() if "WARNING" in line or "ERROR" in line]
    assert inference["restarts"] == 0 and "stalled" not in running.output.text(), said[-20:]
    assert min(counts.values()) > 0 and max(counts.values()) <= 2 * min(counts.values()), "shed fairly"
    overloaded = [p for p in report["problems"] if "degraded: overloaded: " in p]
    assert {p.split()[1] for p in overloaded} == set(counts), report
    for stream in streams:
        seqs = recorded_seqs(running.recordings / stream["id"])
        gaps = [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]
        why = {name: stage["stats"] for name, stage in status["stages"].items() if stream["id"] in name}
        assert not gaps, f"{stream['id']}: every captured frame is recorded; gaps {gaps}, {why}, said {said[-20:]}"
