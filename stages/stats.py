"""What each stage kind reports in its heartbeat, as types: the stage fills one, ``/healthz``,
``/metrics`` and the live view read one back (``read_stats``), so a renamed figure is an error
in one place rather than a silently missing key in another. A stream plug-in's figures are its own
``PluginStats`` type, reported under its prefix (``read_plugin_stats`` reads one back)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.stage import StageStats


@dataclass
class CaptureStats(StageStats):
    frames: int = 0  # sent on to preprocess
    dropped: int = 0  # live frames no preprocess worker could take
    record_dropped: int = 0  # live frames the stream stage could not take for recording
    record_wait_s: float = 0.0  # waited for the stream stage to secure frames to record (its credit)
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
class StreamStats(StageStats):
    """The stream stage's own figures; each processor and sink reports its own beside them
    (``PluginStats``, merged into the heartbeat by ``plugins_report``)."""

    missed: int = 0  # captured frames overwritten in the ring before this stage copied them
    unseen: int = 0  # inferred frames whose picture was gone when their results came (no snapshot)
    record_behind: int = 0  # times a ring's worth of frames waited to be recorded, holding capture back
    annotation_shed: bool = False  # live frames recorded undrawn: the recording fell behind (stages.stream.shedding)
    events: int = 0  # violations started
    plugin_errors: int = 0  # processor or sink calls that raised (logged, the stage went on)
    recent_events: list[dict[str, Any]] = field(default_factory=list)
    detection_age_s: float | None = None  # since inference's latest results, as of the heartbeat
    recorded_age_s: float | None = None
    recording: bool = False
    camera: str = "down"  # watching | degraded | down (stages.stream.health)
    camera_reason: str = "starting"
    camera_since: float = 0.0  # Unix time
    camera_intended: bool = False  # down by the operator's or the source's doing
    # what its plug-ins find wrong (the recordings' disk, say), for /healthz; and their numeric figures
    # as [name, kind, help, value], for /metrics (``plugins_report``)
    problems: list[str] = field(default_factory=list)
    metrics: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Metric:
    """How ``/metrics`` exports one figure of a plug-in."""

    name: str
    kind: str  # counter | gauge
    help: str


def counter(name: str, help_text: str) -> Any:
    """A count that only grows, exported as the counter ``name`` (which ends in ``_total``)."""
    return field(default=0, metadata={"metric": Metric(name, "counter", help_text)})


def gauge(name: str, help_text: str, default: float | bool | None = 0) -> Any:
    """A figure that goes up and down, exported as the gauge ``name`` (not while it is None)."""
    return field(default=default, metadata={"metric": Metric(name, "gauge", help_text)})


@dataclass
class PluginStats:
    """A processor's or sink's figures: a dataclass of numbers, flags and None, each field with a
    default. The stream stage reports each field in its heartbeat (``ctl status``) as
    ``<prefix>_<field>``, the prefix being the plug-in's (none: the field's own name), and
    ``/metrics`` exports each numeric one: as declared with ``counter``/``gauge``, else as the
    gauge ``vestwatch_<prefix>_<field>``. A plug-in without figures keeps this empty base."""

    def problem(self) -> str | None:
        """What makes the daemon unhealthy (``/healthz``) in these figures; None when nothing does."""
        return None


def figure_name(prefix: str, name: str) -> str:
    return f"{prefix}_{name}" if prefix else name


def plugin_figures(prefix: str, stats: PluginStats) -> dict[str, Any]:
    """A plug-in's figures as the heartbeat carries them: ``{"webhook_failed": 0, ...}``."""
    return {figure_name(prefix, f.name): getattr(stats, f.name) for f in fields(stats)}


def plugins_report(
    running: list[tuple[str, PluginStats]], declined: Sequence[tuple[str, PluginStats]] = ()
) -> dict[str, Any]:
    """What a stream stage's heartbeat carries of its plug-ins' ``(prefix, figures)``: each figure as
    ``<prefix>_<field>`` (a plug-in that declined the stream at its defaults, so that ``ctl status`` names
    the same figures for every stream), and the running ones' ``problems`` and ``metrics``
    (``StreamStats``), worked out here in the stage so that the supervisor serves ``/healthz`` and
    ``/metrics`` without importing a plug-in."""
    report: dict[str, Any] = {}
    for prefix, stats in [*running, *declined]:
        report.update(plugin_figures(prefix, stats))
    report["problems"] = [problem for _, stats in running if (problem := stats.problem())]
    report["metrics"] = [
        [metric.name, metric.kind, metric.help, value]
        for prefix, stats in running
        for metric, value in plugin_metrics(prefix, stats)
    ]
    return report


def read_plugin_stats(prefix: str, cls: type[PluginStats], reported: dict[str, Any]) -> PluginStats | None:
    """A plug-in's figures back from a heartbeat as its type; None when the stage reports none of them."""
    values = {
        f.name: reported[figure_name(prefix, f.name)] for f in fields(cls) if figure_name(prefix, f.name) in reported
    }
    return cls(**values) if values else None


def plugin_metrics(prefix: str, stats: PluginStats) -> list[tuple[Metric, float]]:
    """The numeric figures of a plug-in (a flag as 0 or 1), each with how ``/metrics`` exports it."""
    found = []
    for f in fields(stats):
        value = getattr(stats, f.name)
        if isinstance(value, (bool, int, float)):
            default = Metric(f"vestwatch_{figure_name(prefix, f.name)}", "gauge", f"{f.name} of a stream plug-in")
            found.append((f.metadata.get("metric", default), int(value) if isinstance(value, bool) else value))
    return found


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
