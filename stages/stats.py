"""What each stage kind reports in its heartbeat, as types: the stage fills one, ``/healthz``,
``/metrics`` and the live view read one back (``read_stats``), so a renamed figure is an error
in one place rather than a silently missing key in another."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.stage import StageStats


@dataclass
class CaptureStats(StageStats):
    frames: int = 0  # sent on to preprocess
    dropped: int = 0  # live frames no preprocess worker could take
    record_dropped: int = 0  # live frames the stream stage could not take for recording
    recorded_only: int = 0  # over detect_fps: recorded (its frame, or its packets copied), not detected
    corrupt: int = 0  # undecodable packets
    reconnects: int = 0
    fps_in: float = 0.0  # over the last 5 s
    paused: bool = False
    frame_age_s: float | None = None  # since the last frame, as of the heartbeat
    live: bool = False


@dataclass
class PreprocessStats(StageStats):
    frames: int = 0
    dropped: int = 0


@dataclass
class StreamFigures:
    """Inference's figures for one stream (totals for /metrics, recent ones for the live view)."""

    published: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # by the stage that dropped
    latency_buckets: list[int] = field(default_factory=list)  # cumulative, Prometheus-style
    latency_sum_ms: float = 0.0
    fps_out: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    conf: float = 0.0
    iou: float = 0.0


@dataclass
class InferenceStats(StageStats):
    frames: int = 0
    batches: int = 0
    dropped: int = 0
    streams: dict[str, StreamFigures] = field(default_factory=dict)
    batch_size_sum: int = 0
    inference_ms_sum: float = 0.0
    model: str = ""
    device: str = ""


@dataclass
class RecorderStats:
    frames: int = 0  # recorded (annotated frames, or copied packets)
    awaiting_keyframe: int = 0  # copied packets left out: no segment to add them to until a keyframe
    disk_dropped: int = 0  # not recorded for want of disk space
    write_errors: int = 0  # not recorded for another I/O error
    disk_free_bytes: int | None = None
    disk_low: bool = False  # below the floor even after deleting what may be deleted
    bytes: int = 0
    segments: int = 0


@dataclass
class ClipStats:
    clips: int = 0  # event clips written
    clips_failed: int = 0  # events whose recording held no frame of them, or could not be cut


@dataclass
class StreamStats(ClipStats, RecorderStats, StageStats):
    missed: int = 0  # captured frames overwritten in the ring before this stage copied them
    events: int = 0  # violations started
    plugin_errors: int = 0  # processor or sink calls that raised (logged, the stage went on)
    webhook_sent: int = 0  # event phases a webhook receiver took
    webhook_retried: int = 0
    webhook_failed: int = 0  # out of retries
    webhook_overflowed: int = 0  # pushed out of a full queue
    mqtt_published: int = 0  # messages the broker acknowledged
    mqtt_overflowed: int = 0  # not queued: the broker away too long
    mqtt_connected: bool = False
    recent_events: list[dict[str, Any]] = field(default_factory=list)
    detection_age_s: float | None = None  # since inference's latest results, as of the heartbeat
    recorded_age_s: float | None = None
    recording: bool = False


STATS = {"capture": CaptureStats, "preprocess": PreprocessStats, "inference": InferenceStats, "stream": StreamStats}


def read_stats(kind: str, reported: dict[str, Any]) -> StageStats:
    """A heartbeat's figures as the stage kind's type; figures it does not know are left out."""
    cls = STATS.get(kind, StageStats)
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in reported.items() if k in known}
    if cls is InferenceStats:
        values["streams"] = {s: _figures(f) for s, f in values.get("streams", {}).items()}
    return cls(**values)


def _figures(reported: dict[str, Any]) -> StreamFigures:
    known = {f.name for f in fields(StreamFigures)}
    return StreamFigures(**{k: v for k, v in reported.items() if k in known})
