"""``[pipeline]``: process counts, batching, queue bounds, and which stages this host runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from pipeline.endpoints import Endpoint

STAGE_KINDS = ("capture", "preprocess", "inference", "stream")
StageKind = Literal["capture", "preprocess", "inference", "stream"]


def EndpointOf(*kinds: str) -> Any:  # noqa: N802 - reads as a type in field annotations
    """A field holding an endpoint string (``pub+bind:tcp://...``) whose socket type is one of ``kinds``."""

    def check(value: str) -> str:
        if Endpoint.parse(value).kind not in kinds:
            raise ValueError(f"{value!r} must be a {' or '.join(kinds)} endpoint")
        return value

    return Annotated[str, AfterValidator(check)]


class PipelineSettings(BaseModel, extra="forbid"):
    """Process counts, batching and queue bounds."""

    preprocess_workers: int = Field(
        2, ge=1, le=64, description="preprocess processes; each stream's frames go to one of them, in order"
    )
    max_batch: int = Field(8, ge=1, le=256, description="inference takes at most this many frames at once")
    max_wait_ms: float = Field(10.0, ge=0, description="inference waits at most this long for a batch to fill")
    ring_slots: int = Field(16, ge=4, le=1024, description="frames kept per stream in shared memory")
    offline_window: int = Field(4, ge=1, description="frames of an offline stream in flight at once")
    max_frame_pixels: int = Field(1920 * 1080, ge=64 * 64, description="larger frames are downscaled at capture")
    publish_hwm: int = Field(1000, ge=1, description="messages queued per subscriber; a slow one loses the excess")
    stall_s: float = Field(
        15.0,
        gt=0,
        description="a stage whose process sends no heartbeat this long (hung whole, or stopped) is restarted; "
        "heartbeats come from a thread of their own, so a long batch or a slow start does not silence them",
    )
    step_timeout_s: float = Field(
        120.0,
        gt=0,
        description="a stage that heartbeats but has been in one step of its work this long (a batch, a read) "
        "is judged hung and restarted: a slow step on a loaded server is not",
    )
    start_grace_s: float = Field(
        300.0,
        gt=0,
        description="how long a stage may take to start (its interpreter, imports and setup, such as loading "
        "the model on a busy CPU) before it is judged hung and restarted",
    )
    down_after_s: float = Field(
        10.0,
        gt=0,
        description="a camera with no frame, or no detections, this long is down: not watched (its Home Assistant "
        "entities unavailable, camera_down sent, /healthz 503); a source that is reconnecting is down at once",
    )
    max_latency_ms: float = Field(
        2000.0,
        gt=0,
        description="capture-to-result latency (median over a few seconds) above which a camera is degraded: "
        "watched late, /healthz 503 naming it",
    )
    min_detect_fps: float = Field(
        0.5,
        gt=0,
        description="the detection rate a camera is owed (or its detect_fps, when lower); under it the camera "
        "is degraded",
    )
    inference_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="the CPU priority inference gives up (Unix nice): on a server short of cores, capture and "
        "recording keep up first and the detection rate is what gives (fairly across cameras; a camera under "
        "min_detect_fps is degraded), never a recorded frame; 0: inference competes equally",
    )
    fork_server: bool = Field(
        True,
        description="fork the per-camera stages from one process that imported their code once (shared pages: "
        "less memory per camera); off: each stage starts a fresh interpreter",
    )
    cameras_per_process: int = Field(
        1,
        ge=1,
        le=64,
        description="cameras whose capture (and whose stream stage) share one process, a thread each: each "
        "process's own interpreter pages are paid once per group instead of per camera (see bench/RESULTS.md), at "
        "the price that a failing stage restarts its whole group",
    )
    letterbox: Literal["auto", "preprocess", "inference"] = Field(
        "auto",
        description="where frames are letterboxed: in preprocess (CPU, into a ring per worker), or in inference on "
        "the model's device from the capture rings (raw frames uploaded once: the GPU path); auto: inference when "
        "the model runs on CUDA with PyTorch on this host, else preprocess",
    )
    decode: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where video is decoded: cuda is NVDEC (frames copied back for the rings; codecs it lacks "
        "decode in software); auto: cuda when an NVIDIA GPU is here and PyAV's FFmpeg drives it, falling back to "
        "the CPU if it will not open",
    )
    rtsp_timeout_s: float = Field(
        5.0, gt=0, description="a network source silent this long, opening or reading, is lost"
    )
    reconnect_min_s: float = Field(
        0.5,
        gt=0,
        description="a lost source is retried after reconnect_min_s, doubling up to reconnect_max_s (DeepStream's "
        "rtsp-reconnect-interval-sec)",
    )
    reconnect_max_s: float = Field(
        5.0,
        gt=0,
        description="the longest wait between retries: a camera back after an outage gives frames within about that",
    )
    # Splitting the pipeline across hosts: see the README
    stages: list[StageKind] = Field(
        default_factory=lambda: list(STAGE_KINDS), min_length=1, description="which stages this host runs"
    )
    inference: EndpointOf("pull", "push") | None = Field(
        None,
        description="where preprocess meets inference (tcp:// carries the pixels inline); "
        "default pull+bind:ipc://<runtime_dir>/inference.ipc",
    )
    detections: EndpointOf("sub") | None = Field(
        None, description="where detections come from; default: this host's publish endpoint"
    )
    inline_jpeg_quality: int | None = Field(None, ge=1, le=100, description="inline pixels as JPEG; None: raw")
    link_keys: Path | None = Field(
        None, description="CURVE keys (vestwatch keys DIR) for a tcp:// inference link; inference serves"
    )

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value} names a stage twice")
        if "capture" in value and "stream" not in value:  # it reads the capture ring: same host
            raise ValueError(f"{value}: a host with capture needs the stream stage too (it records and publishes)")
        return value

    @model_validator(mode="after")
    def _backoff_grows(self) -> PipelineSettings:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(f"reconnect_min_s {self.reconnect_min_s} exceeds reconnect_max_s {self.reconnect_max_s}")
        return self

    @model_validator(mode="after")
    def _window_fits_ring(self) -> PipelineSettings:
        if self.offline_window * 2 > self.ring_slots:
            raise ValueError(f"offline_window {self.offline_window} needs ring_slots >= {self.offline_window * 2}")
        return self
