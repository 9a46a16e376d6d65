"""Health and Prometheus metrics over HTTP from the running daemon."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from importlib.metadata import entry_points

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stages.config import REPO_ROOT
from stages.stats import CaptureStats, InferenceStats, PluginStats, StreamFigures, StreamStats, plugins_report
from stages.stream.outputs.mqtt import MqttStats
from stages.stream.outputs.recorder import RecorderStats
from stages.stream.outputs.webhooks import WebhookStats
from stages.stream.plugins import PROCESSORS, SINKS
from stages.web.observe import health, metrics
from tests.harness import collect, wait_status

PROMTOOL = shutil.which("promtool")


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


def healthz_until(base: str, predicate: Callable[[int], bool], timeout: float = 30, saying: str = "") -> dict:
    """/healthz's report once its status code satisfies ``predicate`` (and a problem starts with ``saying``)."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = get(base + "/healthz")
        report = json.loads(body)
        if predicate(code) and (not saying or any(p.startswith(saying) for p in report["problems"])):
            return report
        if time.monotonic() > deadline:
            raise TimeoutError(f"/healthz stayed {code}: {report}")
        time.sleep(0.5)  # polling: what health reports changes with once-a-second heartbeats


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
    assert second[("vestwatch_latency_seconds_count", (("stream", "cam"),))] == second[processed]
    assert second[("vestwatch_latency_seconds_bucket", (("le", "+Inf"), ("stream", "cam")))] == second[processed]
    assert second[("vestwatch_stage_restarts_total", (("stage", "inference"),))] == 0
    assert second[("vestwatch_recording_bytes_total", (("stream", "cam"),))] > 0

    inference = vestwatch.stage_pid("inference")
    os.kill(inference, signal.SIGSTOP)  # frames keep coming, detections stop: unhealthy too
    report = healthz_until(base, lambda code: code == 503)
    assert "camera cam down: frames come but no detections for" in " ".join(report["problems"]), report
    os.kill(inference, signal.SIGCONT)
    healthz_until(base, lambda code: code == 200)

    os.kill(vestwatch.stage_pid("capture.cam"), signal.SIGSTOP)  # a silent stream makes the daemon unhealthy
    healthz_until(base, lambda code: code == 503, saying="camera cam down: no word from capture for")
    assert get(base + "/nothing")[0] == 404


def stage(state: str = "running", **stats: object) -> dict:
    return {"pid": 1, "state": state, "restarts": 0, "heartbeat_age_s": 0.2, "stats": stats}


def problems(stages: dict) -> list[str]:
    code, _, body = health({"uptime_s": 1.0, "stages": stages}, stall_s=15)
    report = json.loads(body)
    assert (code == 200) == report["healthy"] == (not report["problems"])
    return report["problems"]


def test_health_tells_the_truth_from_the_first_second() -> None:
    watched = {"camera": "watching", "camera_reason": "", "detection_age_s": 0.1}
    recording = {**watched, "recorded_age_s": 0.2, "recording": True}
    assert problems({"capture.cam": stage("connected", live=True), "stream.cam": stage(**recording)}) == []
    assert problems({"capture.cam": stage("starting"), "stream.cam": stage(**recording)}) == [
        "capture.cam: starting, not reporting yet"
    ]
    assert problems({"stream.cam": stage(events=0)}) == ["camera cam down: starting"], "unhealthy until watched"
    lost = {"camera": "down", "camera_reason": "source lost, reconnecting: f.mp4: read failed"}
    assert problems({"stream.f": stage(**lost)}) == ["camera f down: source lost, reconnecting: f.mp4: read failed"]
    finished_file = {"camera": "down", "camera_reason": "the source ended", "camera_intended": True}
    assert problems({"stream.f": stage(**finished_file)}) == [], "a file that ran to its end is done, not broken"
    late = {**watched, "camera": "degraded", "camera_reason": "latency 2.9 s, over max_latency_ms 2000"}
    assert problems({"stream.cam": stage(**late)}) == ["camera cam degraded: latency 2.9 s, over max_latency_ms 2000"]
    not_recorded = {"stream.cam": stage(**{**recording, "recorded_age_s": 40.0})}
    assert problems(not_recorded) == ["camera cam: detections arrive but nothing recorded for 40.2 s"]


def test_a_file_of_random_bytes_is_unhealthy(daemon, tmp_path) -> None:
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(os.urandom(200_000))
    vestwatch = daemon([{"id": "noise", "url": str(noise), "loop": True}])
    vestwatch.wait_ready()
    vestwatch.output.wait_for(lambda line: "noise:" in line and "retrying in" in line, timeout=60)
    wait_status(vestwatch, lambda s: s["stages"]["capture.noise"]["state"] == "reconnecting")
    healthz_until(f"http://{vestwatch.http}", lambda code: code == 503, saying="camera noise down: source lost, ")
    assert vestwatch.stop()[0] == 0


def test_heartbeat_figures_come_back_as_their_kinds_types() -> None:
    from stages.stats import read_plugin_stats, read_stats

    sent = InferenceStats(frames=3, streams={"cam": StreamFigures(published=3, latency_buckets=[1, 3])})
    back = read_stats("inference", {**asdict(sent), "from_a_newer_version": 1})
    assert back == sent and isinstance(back.streams["cam"], StreamFigures)
    stream = {"missed": 2, "disk_low": True, "webhook_failed": 1}
    assert read_stats("stream", stream) == StreamStats(missed=2), "a plug-in's figures are its own type's"
    assert read_plugin_stats("", RecorderStats, stream) == RecorderStats(disk_low=True)
    assert read_plugin_stats("webhook", WebhookStats, stream) == WebhookStats(failed=1)
    assert read_plugin_stats("mqtt", WebhookStats, stream) is None


def test_metrics_keep_every_digit_of_a_large_counter() -> None:
    from pipeline.prometheus import Exposition

    metrics = Exposition()
    metrics.add("vestwatch_frames_in_total", "counter", "Frames", {"stream": "cam"}, 123_456_789)
    families = {f.name: f for f in text_string_to_metric_families(metrics.text())}
    assert families["vestwatch_frames_in"].samples[0].value == 123_456_789  # was 1.23457e+08


HEALTH = {  # how MQTT and webhooks fare, on /metrics so that a dashboard can alert on a dead broker (#23)
    "vestwatch_mqtt_connected": 1,
    "vestwatch_mqtt_queued": 4,
    "vestwatch_mqtt_published_total": 12,
    "vestwatch_mqtt_overflowed_total": 3,
    "vestwatch_webhook_queued": 7,
    "vestwatch_webhook_sent_total": 5,
    "vestwatch_webhook_retried_total": 2,
    "vestwatch_webhook_failed_total": 1,
    "vestwatch_webhook_overflowed_total": 6,
}


def every_plugin() -> list[tuple[str, PluginStats]]:
    """(prefix, figures) of every installed processor and sink: MQTT's, webhooks' and the disk's known, the
    others at their defaults."""
    busy = {
        MqttStats: MqttStats(published=12, overflowed=3, connected=True, queued=4),
        WebhookStats: WebhookStats(sent=5, retried=2, failed=1, overflowed=6, queued=7),
        RecorderStats: RecorderStats(disk_free_bytes=2**30),
    }
    return [
        (cls.prefix, busy.get(cls.stats_type, cls.stats_type()))
        for group in (PROCESSORS, SINKS)
        for cls in (entry.load() for entry in entry_points(group=group))
    ]


def daemon_status() -> dict:
    """The supervisor's status of a daemon with one stream running every plug-in, as ``/metrics`` reads it."""
    latency = StreamFigures(
        published=5, dropped={"inference": 1}, latency_buckets=[1, 2, 3, 4, 5, 5, 5, 5, 5], latency_sum_ms=300.0
    )
    inference = InferenceStats(frames=5, batches=3, batch_size_sum=5, inference_ms_sum=12.5, streams={"cam": latency})
    stats = {
        "capture.cam": asdict(CaptureStats(frames=6, dropped=1, reconnects=1)),
        "preprocess.0": {},
        "inference": asdict(inference),
        "stream.cam": {**asdict(StreamStats(events=1)), **plugins_report(every_plugin())},
    }
    return {"stages": {name: {"pid": 1, "restarts": 0, "stats": s} for name, s in stats.items()}}


def promtool(text: str) -> str:
    """What ``promtool check metrics`` finds wrong in an exposition: "" when nothing."""
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (deploy/setup.sh --dev installs it, with Debian's prometheus)")
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    found = (checked.stdout + checked.stderr).strip()
    assert (checked.returncode == 0) == (not found), (checked.returncode, found)
    return found


def test_metrics_pass_promtool_and_show_mqtt_and_webhook_health() -> None:
    assert "abbreviated units" in promtool("# HELP x_ms Time\n# TYPE x_ms gauge\nx_ms 1\n"), "promtool lints"
    text = metrics(daemon_status())[2].decode()
    assert promtool(text) == ""
    exported = samples(text)
    cam = (("stream", "cam"),)
    assert {name: exported[(name, cam)] for name in HEALTH} == HEALTH
    # the stages count milliseconds; Prometheus names and values are in seconds
    assert exported[("vestwatch_inference_seconds_total", ())] == 0.0125
    assert exported[("vestwatch_latency_seconds_sum", cam)] == 0.3
    assert exported[("vestwatch_latency_seconds_bucket", (("le", "0.025"), *cam))] == 1
    assert exported[("vestwatch_latency_seconds_bucket", (("le", "5"), *cam))] == 5


def test_the_grafana_dashboard_reads_only_metrics_the_daemon_exports() -> None:
    exported = {sample.name for family in text_string_to_metric_families(metrics(daemon_status())[2].decode())
                for sample in family.samples}  # fmt: skip
    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana-dashboard.json").read_text())
    used = set(re.findall(r"vestwatch_[a-z_]+", " ".join(t["expr"] for p in dashboard["panels"]
                                                          for t in p["targets"])))  # fmt: skip
    assert used and used <= exported, used - exported
    assert set(HEALTH) <= used, f"not on the dashboard: {set(HEALTH) - used}"


def test_a_stream_stage_exports_its_plugins_figures_by_their_declared_names() -> None:
    recorder = RecorderStats(frames=7, bytes=9, disk_dropped=3, disk_free_bytes=11, segments=2)
    reported = {
        **asdict(StreamStats(events=2, missed=1, plugin_errors=5)),
        **plugins_report([("", recorder), ("webhook", WebhookStats(failed=4)), ("mqtt", MqttStats(connected=True))]),
    }
    text = metrics({"stages": {"stream.cam": {"pid": 1, "restarts": 0, "stats": reported}}})[2].decode()
    exported = samples(text)
    cam = (("stream", "cam"),)
    before = {  # what /metrics showed before plug-ins declared their figures
        "vestwatch_recording_bytes_total": 9,
        "vestwatch_recorded_frames_total": 7,
        "vestwatch_record_disk_dropped_total": 3,
        "vestwatch_disk_free_bytes": 11,
        "vestwatch_events_total": 2,
        "vestwatch_plugin_errors_total": 5,
        "vestwatch_record_missed_total": 1,
    }
    assert {name: exported[(name, cam)] for name in before} == before
    assert "# HELP vestwatch_recording_bytes_total Bytes of video recorded" in text
    assert "# HELP vestwatch_disk_free_bytes Free bytes on the recordings' filesystem" in text
    assert exported[("vestwatch_webhook_failed_total", cam)] == 4 and exported[("vestwatch_mqtt_connected", cam)] == 1
    assert exported[("vestwatch_recording_segments_total", cam)] == 2
    unknown = {**reported, **plugins_report([("", RecorderStats(disk_free_bytes=None))])}
    unknown_free = samples(metrics({"stages": {"stream.cam": {"pid": 1, "restarts": 0, "stats": unknown}}})[2].decode())
    assert ("vestwatch_disk_free_bytes", cam) not in unknown_free, "not while it is unknown"


def test_a_full_recordings_disk_makes_the_daemon_unhealthy() -> None:
    full = plugins_report([("", RecorderStats(disk_low=True, disk_free_bytes=5 * 2**20))])
    watched = {"camera": "watching", "recorded_age_s": 0.1}
    assert problems({"stream.cam": stage(recording=True, **watched, **full)}) == [
        "stream.cam: recordings disk full (5 MB free, nothing left to delete)"
    ]
