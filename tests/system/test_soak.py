"""The long run: four live RTSP cameras for ``--soak`` seconds (``pytest tests/system --soak 1800 -s``).

It holds when no process's resident memory grows more than 5 % after the warm-up (the first
fifth of the run), no stage restarts, and record loses no frame: every frame capture took is in
a segment that decodes. It prints the figures for the closing note.
"""

from __future__ import annotations

import json
import time

from tests.harness import probe_video, rss_mib, vestwatch

STREAMS = 4
GROWTH_LIMIT = 0.05


def status_of(daemon) -> dict:
    return json.loads(vestwatch("ctl", "status", "-c", daemon.config, timeout=30).stdout)


def memory(daemon) -> dict[str, float]:
    status = status_of(daemon)
    pids = {name: stage["pid"] for name, stage in status["stages"].items()}
    return {"supervisor": rss_mib(daemon.process.pid), **{name: rss_mib(pid) for name, pid in pids.items()}}


def test_four_live_cameras_for_the_soak_duration(soak_s, rtsp_server, daemon) -> None:
    servers = [rtsp_server(size="640x360", fps=15) for _ in range(STREAMS)]
    streams = [{"id": f"cam{i}", "url": server.url} for i, server in enumerate(servers)]
    running = daemon(streams, recording={"segment_s": 60}, pipeline={"preprocess_workers": 2, "max_batch": 4})
    running.wait_ready()
    started = time.monotonic()
    time.sleep(soak_s / 5)  # the run's length is what is under test
    warm = memory(running)
    samples = [warm]
    while time.monotonic() - started < soak_s:
        time.sleep(min(60.0, soak_s / 10))
        samples.append(memory(running))
    final = status_of(running)
    assert running.stop()[0] == 0

    print(f"\nsoak: {STREAMS} live RTSP streams 640x360 at 15 fps for {soak_s:.0f} s")
    print("| process | RSS after warm-up (MiB) | max later | at the end | growth |")
    print("|---|---:|---:|---:|---:|")
    grown = {}
    for name, first in warm.items():
        later = [s[name] for s in samples[1:] if name in s]
        growth = (max(later) - first) / first if later else 0.0
        grown[name] = growth
        peak, end = max(later, default=first), samples[-1].get(name, 0)
        print(f"| {name} | {first:.0f} | {peak:.0f} | {end:.0f} | {growth:+.1%} |")
    stages = final["stages"]
    restarts = {name: stage["restarts"] for name, stage in stages.items() if stage["restarts"]}
    for i in range(STREAMS):
        capture, record = stages[f"capture.cam{i}"]["stats"], stages[f"stream.cam{i}"]["stats"]
        segments = sorted((running.recordings / f"cam{i}").rglob("*.ts"))
        decoded = [probe_video(s) for s in segments]
        frames = sum(int(stream["nb_read_frames"]) for stream, _ in decoded)
        print(
            f"cam{i}: captured {capture['frames'] + capture['dropped']}, recorded {frames} in {len(segments)} "
            f"segments, record missed {record['missed']}, to record dropped {capture['record_dropped']}, "
            f"inference processed {stages['inference']['stats']['streams'][f'cam{i}']['published']}"
        )
        assert all(problems == "" for _, problems in decoded)
        assert record["missed"] == 0 and capture["record_dropped"] == 0, f"cam{i} lost frames at record"
        assert frames >= capture["frames"] + capture["dropped"] - 2, f"cam{i}: frames missing from the recordings"
    assert not restarts, restarts
    assert max(grown.values()) < GROWTH_LIMIT, grown
