"""What the supervisor's HTTP server shows, from the stages' heartbeats: /healthz, /metrics,
/status.json and each stream's newest annotated frame, and the review page at / that reads them
(its events come from ``stages.web.review``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.prometheus import CONTENT_TYPE, LATENCY_BUCKETS_S, Exposition
from stages.stats import (
    CaptureStats,
    InferenceStats,
    StreamStats,
    read_stats,
)
from stages.topology import live_frame

REVIEW_PAGE = Path(__file__).with_name("review.html")
CAMERA_STATES = ("watching", "degraded", "down")

FRAME_SILENCE_S = 10.0  # a recorded stream without a frame recorded this long makes the daemon unhealthy


def _age(reported: float | None, stage: dict[str, Any]) -> float | None:
    """Seconds since what a figure times, now: its age as of the stage's last heartbeat plus that heartbeat's age."""
    return None if reported is None else round(reported + stage["heartbeat_age_s"], 1)


def _stats(name: str, stage: dict[str, Any]) -> Any:
    """The stage's last figures as its kind's type (``stages.stats``)."""
    return read_stats(name.partition(".")[0], stage["stats"])


def health(status: dict[str, Any], stall_s: float) -> tuple[int, str, bytes]:
    """200 only when every stage runs and reports, every camera is watched (``stages.stream.health``:
    not down, not degraded; paused by the operator or a file at its end aside) and what is to be
    recorded is; else 503 with one reason per problem. A daemon that just started is unhealthy until
    its cameras are watched."""
    problems = []
    for name, stage in status["stages"].items():
        if stage["pid"] is None or stage["heartbeat_age_s"] > stall_s:
            problems.append(f"{name}: {stage['state']}, no heartbeat for {stage['heartbeat_age_s']} s")
        elif not stage["stats"]:
            problems.append(f"{name}: {stage['state']}, not reporting yet")
        elif isinstance(stats := _stats(name, stage), StreamStats):
            problems += _camera_problems(name, stage, stats)
            problems += [f"{name}: {problem}" for problem in stats.problems]  # the recordings' disk, say
    body = json.dumps({"healthy": not problems, "problems": problems, "uptime_s": status["uptime_s"]})
    return (200 if not problems else 503), "application/json", body.encode()


def _camera_problems(name: str, stage: dict[str, Any], stats: StreamStats) -> list[str]:
    """What is wrong with one camera, as its stream stage judged it."""
    camera = name.partition(".")[2]
    if stats.camera_intended:
        return []  # paused by request, or a file that ran to its end
    if stats.camera != "watching":
        return [f"camera {camera} {stats.camera}: {stats.camera_reason}"]
    recorded = _age(stats.recorded_age_s, stage)
    if stats.recording and (recorded is None or recorded > FRAME_SILENCE_S):
        return [f"camera {camera}: detections arrive but nothing recorded for {recorded or 'ever'} s"]
    return []


def metrics(status: dict[str, Any]) -> tuple[int, str, bytes]:
    out = Exposition()
    for name, stage in status["stages"].items():
        out.add(
            "vestwatch_stage_restarts_total", "counter", "Stage process restarts", {"stage": name}, stage["restarts"]
        )
        out.add(
            "vestwatch_stage_up", "gauge", "1 if the stage process runs", {"stage": name}, int(stage["pid"] is not None)
        )
        stats, (kind, _, instance) = _stats(name, stage), name.partition(".")
        if kind == "capture":
            _capture_metrics(out, {"stream": instance}, stats)
        elif kind == "inference":
            _inference_metrics(out, stats)
        elif kind == "stream":
            _stream_metrics(out, {"stream": instance}, stats)
    return 200, CONTENT_TYPE, out.text().encode()


def _capture_metrics(out: Exposition, labels: dict[str, str], stats: CaptureStats) -> None:
    out.add("vestwatch_frames_in_total", "counter", "Frames captured and sent on", labels, stats.frames)
    out.add(
        "vestwatch_frames_dropped_total",
        "counter",
        "Frames dropped, per stream and stage",
        {**labels, "stage": "capture"},
        stats.dropped,
    )
    out.add("vestwatch_corrupt_total", "counter", "Undecodable packets or images skipped", labels, stats.corrupt)
    out.add("vestwatch_reconnects_total", "counter", "Source reconnects", labels, stats.reconnects)


def _inference_metrics(out: Exposition, stats: InferenceStats) -> None:
    out.add("vestwatch_batches_total", "counter", "Inference batches", {}, stats.batches)
    out.add(
        "vestwatch_batched_frames_total",
        "counter",
        "Frames over all batches (over batches: mean batch size)",
        {},
        stats.batch_size_sum,
    )
    out.add(
        "vestwatch_inference_seconds_total",
        "counter",
        "Forward-pass time over all batches, seconds",
        {},
        stats.inference_ms_sum / 1000,
    )
    for stream, figures in stats.streams.items():
        labels = {"stream": stream}
        out.add(
            "vestwatch_frames_processed_total",
            "counter",
            "Frames inference returned results for",
            labels,
            figures.published,
        )
        for dropped_at, count in figures.dropped.items():
            if dropped_at != "capture":  # capture's own counter is exact; this one lags a message
                out.add(
                    "vestwatch_frames_dropped_total",
                    "counter",
                    "Frames dropped, per stream and stage",
                    {**labels, "stage": dropped_at},
                    count,
                )
        out.histogram(
            "vestwatch_latency_seconds",
            "Capture to inference result latency, seconds",
            labels,
            LATENCY_BUCKETS_S,
            figures.latency_buckets,
            figures.latency_sum_ms / 1000,
        )


def _stream_metrics(out: Exposition, labels: dict[str, str], stats: StreamStats) -> None:
    """The stream stage's own figures, and each of its plug-ins' numeric ones as the plug-in declares them."""
    for name, kind, help_text, value in stats.metrics:
        out.add(name, kind, help_text, labels, value)
    out.add("vestwatch_events_total", "counter", "Violation events started", labels, stats.events)
    out.add(
        "vestwatch_plugin_errors_total",
        "counter",
        "Processor or sink calls that failed (logged; the stage went on)",
        labels,
        stats.plugin_errors,
    )
    for state in CAMERA_STATES:  # one series per state, 1 for the camera's: alert on state="down"
        help_text = "1 for the camera's state (stages.stream.health): watching, degraded or down"
        out.add("vestwatch_camera_state", "gauge", help_text, {**labels, "state": state}, int(stats.camera == state))
    out.add(
        "vestwatch_frames_unseen_total",
        "counter",
        "Inferred frames whose picture was gone when their results came: no snapshot could be made",
        labels,
        stats.unseen,
    )
    out.add(
        "vestwatch_record_missed_total",
        "counter",
        "Frames not recorded: gone from the capture ring before they could be drawn",
        labels,
        stats.missed,
    )


def live_jpeg(runtime_dir: Path, streams: list[str], path: str) -> tuple[int, str, bytes]:
    """``/live/<stream>.jpg``: the stream's newest annotated frame (only configured streams)."""
    stream = path.removeprefix("/live/").removesuffix(".jpg")
    frame = live_frame(runtime_dir, stream)
    if stream not in streams or not frame.is_file():
        return 404, "text/plain", b"no frame yet\n"
    return 200, "image/jpeg", frame.read_bytes()


def routes(
    status: Callable[[], dict[str, Any]], stall_s: float, runtime_dir: Path, streams: Callable[[], list[str]]
) -> dict:
    page = REVIEW_PAGE.read_bytes()
    return {
        "/": lambda _: (200, "text/html; charset=utf-8", page),
        "/status.json": lambda _: (200, "application/json", json.dumps(status()).encode()),
        "/healthz": lambda _: health(status(), stall_s),
        "/metrics": lambda _: metrics(status()),
        "/live/": lambda request: live_jpeg(runtime_dir, streams(), request.path),
    }
