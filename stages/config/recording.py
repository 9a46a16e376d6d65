"""``[recording]``: how each stream is recorded, and how long its recordings are kept."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class RecordingSettings(BaseModel, extra="forbid"):
    """How each stream is recorded (segments under ``recordings_dir``) and how long recordings are kept."""

    video: Literal["annotated", "camera"] = Field(
        "annotated",
        description="annotated: every frame re-encoded with the boxes, zones and people drawn on it (x264: the most "
        "CPU and memory a camera costs). camera: the camera's own H.264/HEVC copied as it came, the detections "
        "beside it in the sidecar (drawn by the review page); a source without such video (a V4L2 camera, images) "
        "is recorded annotated all the same",
    )
    segment_s: float = Field(60.0, ge=1, description="a recording segment's length, seconds")
    max_age_days: float = Field(7.0, gt=0, description="recordings and events older than this are deleted")
    max_bytes: int = Field(50 * 2**30, gt=0, description="disk budget per stream")
    crf: int = Field(26, ge=0, le=51, description="x264 quality: lower is better and larger")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = Field(
        "veryfast",
        description='x264\'s speed: at 1080p "ultrafast" takes half the CPU of "veryfast" (5.3 against 10.6 ms a '
        "frame) for files 1.7 times larger; the recorder is most of a 1080p camera's CPU, so this sizes a server",
    )
    min_free_mb: int = Field(
        1000,
        ge=0,
        description="below this much free space on the recordings' disk the oldest segments, event clips and "
        "snapshots of any stream are deleted to keep recording (checked every second and whenever a write fails)",
    )
