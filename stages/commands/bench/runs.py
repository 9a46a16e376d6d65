"""What one bench run measured: the figures ``bench`` gathers and ``report`` prints."""

from __future__ import annotations

from dataclasses import dataclass, field

from stages.commands.bench.processes import Usage


@dataclass
class Run:
    """One run's figures over its measured window, and whether it held."""

    cameras: int
    seconds: float
    frames_in: int  # offered to detection, all cameras
    processed: int  # detections published
    dropped: int  # on the way to detection, any stage
    recorded: int
    record_dropped: int  # captured but not recorded
    latency_p50_ms: float
    latency_p99_ms: float
    per_camera: dict[str, dict[str, int]]
    processes: dict[str, Usage]
    kinds: dict[str, dict[str, float]]  # per stage kind: processes, cpu_percent, rss_mib, pss_mib
    gpu_util_percent: float | None
    gpu_memory_mib: float | None
    limiting: str
    holds: bool
    pipeline_vs_ceiling: float  # detections/s over min(decode-only, inference-only)
    drops: dict[str, int] = field(default_factory=dict)  # by the stage that dropped
    restarts: int = 0  # stage processes the supervisor restarted during the window
    undrawn: int = 0  # recorded without boxes drawn: annotation shed (stages.stream.shedding)

    machine_cpu_percent: float = 0.0  # all cores, every process of the machine (cameras included)

    @property
    def drop_fraction(self) -> float:
        """Frames offered to detection that gave no detections (drop counters of several stages may
        count one frame twice), less one frame per camera that may be in flight at the window's end."""
        return max(0.0, self.frames_in - self.processed - self.cameras) / max(self.frames_in, 1)

    @property
    def detections_per_camera(self) -> tuple[float, float]:
        """The fewest and the most detections a second one camera got: how fairly load was shed."""
        rates = [camera["processed"] / self.seconds for camera in self.per_camera.values()] or [0.0]
        return min(rates), max(rates)

    @property
    def record_drop_fraction(self) -> float:
        return self.record_dropped / max(self.recorded + self.record_dropped, 1)
