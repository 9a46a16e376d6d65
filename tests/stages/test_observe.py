"""Health and Prometheus metrics over HTTP from the running daemon."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.harness import collect


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_until(base: str, predicate: Callable[[dict], bool], timeout: float = 60) -> dict[tuple[str, tuple], float]:
    """/metrics once the stages' heartbeats have carried what ``predicate`` waits for."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = samples(get(base + "/metrics")[1].decode())
        if predicate(metrics):
            return metrics
        if time.monotonic() > deadline:
            raise TimeoutError(f"metrics never satisfied the condition: {sorted(metrics)[:20]}")
        time.sleep(0.5)  # polling an HTTP endpoint whose figures change once a second


def healthz_until(base: str, predicate: Callable[[int], bool], timeout: float = 30) -> dict:
    """/healthz's report once its status code satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while not predicate(code := get(base + "/healthz")[0]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"/healthz stayed {code}")
        time.sleep(0.5)  # polling: what health reports changes with once-a-second heartbeats
    return json.loads(get(base + "/healthz")[1])


def test_healthz_and_metrics(daemon, make_video) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=10)
    vestwatch = daemon([{"id": "cam", "url": str(clip), "loop": True, "realtime": True}])
    vestwatch.wait_ready()
    http = next(line for line in vestwatch.config.read_text().splitlines() if line.startswith("http"))
    base = "http://" + http.split('"')[1]
    collect(vestwatch.endpoint, lambda m: len(m.get("cam", [])) >= 5, timeout=60)

    assert healthz_until(base, lambda code: code == 200)["healthy"] is True  # once heartbeats carry the figures

    processed = ("vestwatch_frames_processed_total", (("stream", "cam"),))
    frames_in = ("vestwatch_frames_in_total", (("stream", "cam"),))
    first = scrape_until(base, lambda m: m.get(processed, 0) > 0)
    # each stage reports once a second: wait for both counters to move, or time out
    second = scrape_until(base, lambda m: m[processed] > first[processed] + 5 and m[frames_in] > first[frames_in])
    assert second[("vestwatch_latency_ms_count", (("stream", "cam"),))] == second[processed]
    assert second[("vestwatch_latency_ms_bucket", (("le", "+Inf"), ("stream", "cam")))] == second[processed]
    assert second[("vestwatch_stage_restarts_total", (("stage", "inference"),))] == 0
    assert second[("vestwatch_recording_bytes_total", (("stream", "cam"),))] > 0

    inference = vestwatch.stage_pid("inference")
    os.kill(inference, signal.SIGSTOP)  # frames keep coming, detections stop: unhealthy too
    report = healthz_until(base, lambda code: code == 503)
    assert "capture.cam: frames arrive but no detections for" in " ".join(report["problems"]), report
    os.kill(inference, signal.SIGCONT)
    healthz_until(base, lambda code: code == 200)

    os.kill(vestwatch.stage_pid("capture.cam"), signal.SIGSTOP)  # a silent stream makes the daemon unhealthy
    report = healthz_until(base, lambda code: code == 503)
    assert any("capture.cam: no frame for" in p for p in report["problems"]), report
    assert get(base + "/nothing")[0] == 404
