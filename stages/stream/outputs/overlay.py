"""The frame as people see it, drawn the same for the recording, the live view and the snapshots."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from stages.config import StreamSettings
from stages.media.annotate import Overlay, annotate
from stages.stream.analysis import FrameAnalysis
from stages.stream.processors.zones import zones_for


def draw(image: np.ndarray, analysis: FrameAnalysis, stream: StreamSettings) -> np.ndarray:
    """Boxes, zones, people with their id and badge, camera and time."""
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
