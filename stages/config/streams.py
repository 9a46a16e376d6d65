"""``[[streams]]``: each source, its zones and the plug-ins its frames go through."""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from stages.capture.sources.kinds import is_live, redact, source_kind

STREAM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@cache
def installed_plugins(group: str) -> list[str]:
    """Entry-point names of a plug-in group (scanning the installed packages takes milliseconds)."""
    return sorted(entry.name for entry in entry_points(group=group))


def plugin_settings_model(section: str) -> type[BaseModel] | None:
    """The model of a stream plug-in's own top-level section: the ``settings_model`` of the processor or
    sink whose entry point, and ``section``, are named ``section`` (``stages.stream.plugins.Plugin``, read
    by name: that module imports this one); None when no installed plug-in declares that section."""
    for group in ("vestwatch.processors", "vestwatch.sinks"):
        for entry in entry_points(group=group, name=section):
            plugin = entry.load()
            if getattr(plugin, "section", None) == section:
                return getattr(plugin, "settings_model", None)
    return None


class ZoneSettings(BaseModel, extra="forbid"):
    """A named area of one camera's picture and the PPE a person standing in it must wear.

    ``polygon`` is in ``units`` (fractions of the frame's width and height, or pixels of the frame
    as processed: after ``pipeline.max_frame_pixels`` scales a larger camera down, so prefer
    fractions); none is the whole frame. A person is in the zone by the bottom centre of their box."""

    name: str = Field("site", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="what events and MQTT topics call it")
    polygon: list[tuple[float, float]] | None = Field(
        None, min_length=3, description="the zone's corners, in units; None: the whole frame"
    )
    units: Literal["fraction", "pixel"] = Field(
        "fraction", description="of the polygon: fractions of the frame's size, or pixels of the frame as processed"
    )
    require: list[Literal["vest", "hardhat"]] = Field(
        default_factory=lambda: ["vest"], min_length=1, description="what a person standing in the zone must wear"
    )
    dwell_s: float | None = Field(
        None, ge=0, description="missing an item here this long opens (or joins) a violation; default events.dwell_s"
    )

    @model_validator(mode="after")
    def _fractions_within_the_frame(self) -> ZoneSettings:
        if self.units == "fraction" and any(not (0 <= v <= 1) for point in self.polygon or [] for v in point):
            raise ValueError(f'zone {self.name!r}: fractions must be within 0..1 (or set units = "pixel")')
        return self


class StreamSettings(BaseModel, extra="forbid"):
    """One source: ``rtsp://[user:pass@]host/path``, a camera index or ``/dev/videoN``, a video
    file, a folder of images, an image, or ``demo`` (the built-in slideshow of site pictures)."""

    id: str = Field(description="the stream's name in topics, paths and stages: 1-64 letters, digits, '-' or '_'")
    url: str = Field(
        description="rtsp://[user:pass@]host/path, a camera index or /dev/videoN, a video file, a folder of images, "
        "an image, or demo"
    )
    realtime: bool | None = Field(
        None, description="live: drop the oldest frame when behind; default: true for live sources"
    )
    record: bool = Field(True, description="recorded, when the recorder sink is listed too")
    fps: float | None = Field(None, gt=0, description="take at most this many frames per second (the rest are skipped)")
    detect_fps: float | None = Field(
        None,
        gt=0,
        description="detect on at most this many frames per second; the others are still recorded, drawn with "
        "the latest detections (a 30 fps camera recorded smoothly, detected 5 times a second)",
    )
    loop: bool = Field(False, description="files: start again at the end")
    zones: list[ZoneSettings] = Field(
        default_factory=lambda: [ZoneSettings()],
        min_length=1,
        description="where people are checked, each zone for what it requires; default: the whole frame, a vest",
    )
    processors: list[str] = Field(
        default_factory=lambda: ["people", "zones"],
        description="what runs after inference, in order, by entry point name (group vestwatch.processors)",
    )
    sinks: list[str] = Field(
        default_factory=lambda: [
            "recorder",
            "live",
            "snapshots",
            "clips",
            "eventlog",
            "compliance",
            "learning",
            "webhooks",
            "mqtt",
        ],
        description="what receives each frame after the processors, in order, by entry point name "
        "(group vestwatch.sinks)",
    )

    @field_validator("processors", "sinks")
    @classmethod
    def _installed(cls, names: list[str], info: ValidationInfo) -> list[str]:
        group = f"vestwatch.{info.field_name}"
        installed = installed_plugins(group)
        unknown = [name for name in names if name not in installed]
        if unknown:
            raise ValueError(f"no {group} entry point named {unknown[0]!r} (installed: {', '.join(installed)})")
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"{twice[0]!r} is listed twice")
        return names

    @property
    def is_video(self) -> bool:
        """Video (a network stream, a file, the demo), not a V4L2 camera or pictures: what a recording of
        the camera's own packets (``recording.video = "camera"``) can copy, when it is H.264 or HEVC."""
        return source_kind(self.url) in ("network", "file", "demo")

    @property
    def records(self) -> bool:
        """Recorded here: ``record`` and a ``recorder`` sink; capture then sends every frame to the stream stage."""
        return self.record and "recorder" in self.sinks

    @field_validator("zones")
    @classmethod
    def _unique_zone_names(cls, zones: list[ZoneSettings]) -> list[ZoneSettings]:
        names = [z.name for z in zones]
        if len(set(names)) < len(names):
            raise ValueError(f"zone names must be unique: {names}")
        return zones

    @field_validator("id")
    @classmethod
    def _id_is_a_name(cls, value: str) -> str:
        if not STREAM_ID.match(value):
            raise ValueError(f"{value!r} must be 1-64 letters, digits, '-' or '_'")
        return value

    @field_validator("url")
    @classmethod
    def _url_exists(cls, value: str) -> str:
        if not (is_live(value) or Path(value).exists()):
            raise ValueError(f"{redact(value)!r} is neither a live URL, a camera, 'demo' nor an existing path")
        return value

    @property
    def is_realtime(self) -> bool:
        return is_live(self.url) if self.realtime is None else self.realtime
