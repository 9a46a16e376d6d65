"""The frame as people see it, drawn the same for the recording, the live view and the snapshots, with
what ``[privacy]`` hides pixelated first (``stages.media.privacy``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from stages.config import StreamSettings
from stages.media.annotate import Overlay, annotate
from stages.media.privacy import pixelate, regions
from stages.stream.analysis import FrameAnalysis
from stages.stream.processors.zones import zones_for


def hide(image: np.ndarray, analysis: FrameAnalysis, blur: Sequence[str]) -> np.ndarray:
    """``image`` with the heads or people ``blur`` names pixelated (itself when it names none)."""
    if not blur:
        return image
    return pixelate(image, regions(analysis.detections, analysis.names, analysis.people, blur))


def draw(image: np.ndarray, analysis: FrameAnalysis, stream: StreamSettings, blur: Sequence[str] = ()) -> np.ndarray:
    """Boxes, zones, people with their id and badge, camera and time, over ``image`` with ``blur`` hidden."""
    image = hide(image, analysis, blur)
    height, width = image.shape[:2]
    zones = zones_for(stream, width, height)
    required = {
        person.track_id: sorted({item for zone in zones if zone.name in person.zones for item in zone.require})
        for person in analysis.people
    }
    overlay = Overlay(
        people=analysis.people,
        required=required,
        zones=[(zone.name, zone.polygon_pixels(width, height)) for zone in zones if zone.settings.polygon],
        caption=f"{stream.id}  {datetime.fromtimestamp(analysis.clock).astimezone():%Y-%m-%d %H:%M:%S %z}",
    )
    return annotate(image, analysis.detections, analysis.names, overlay)
