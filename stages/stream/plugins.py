"""Processors and sinks by name, through entry points, so that a new one is one file and one line.

Each entry point is a factory ``(settings, stream) -> plug-in or None`` (None: not for this
stream, e.g. the recorder of an unrecorded one); a plug-in has ``handle(frame, analysis)``
and ``close()``, and may have ``tick()`` (called about ten times a second) and ``stats``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from stages.config import Settings, StreamSettings, installed_plugins
from stages.stream.processors.people import PeopleProcessor
from stages.stream.processors.zones import ZonesProcessor

PROCESSORS = "vestwatch.processors"
SINKS = "vestwatch.sinks"


def load(group: str, names: list[str], settings: Settings, stream: StreamSettings) -> list[Any]:
    """The plug-ins ``names`` of ``group`` for ``stream``, in order."""
    found = {entry.name: entry for entry in entry_points(group=group)}
    plugins = []
    for name in names:
        if name not in found:
            raise ValueError(f"streams.{stream.id}: no {group} named {name!r} (installed: {installed_plugins(group)})")
        plugin = found[name].load()(settings, stream)
        if plugin is not None:
            plugins.append(plugin)
    return plugins


def inference_rate(stream: StreamSettings) -> float:
    """Frames a second the trackers can expect: the configured rate, else a camera's usual."""
    return stream.fps or 15.0


def people(settings: Settings, stream: StreamSettings) -> PeopleProcessor:
    return PeopleProcessor(stream, settings.events, inference_rate(stream))


def zones(settings: Settings, stream: StreamSettings) -> ZonesProcessor:
    return ZonesProcessor(stream, settings.events, inference_rate(stream))
