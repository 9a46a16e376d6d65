"""The frame as people see it, drawn the same for the recording, the live view and the snapshots, with
what ``[privacy]`` hides pixelated first (``stages.media.privacy``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from stages.config import StreamSettings
from stages.media.annotate import Overlay, annotate
from stages.media.privacy import grown, pixelate, regions
from stages.stream.analysis import FrameAnalysis
from stages.stream.processors.zones import zones_for

STALE_S = 1.0  # results older than this say little of where people are now: a blurred frame is hidden whole
LATE_MARGIN = 0.5  # of a region's size, each side, where the results are an earlier frame's


def hide(image: np.ndarray, analysis: FrameAnalysis, blur: Sequence[str]) -> np.ndarray:
    """``image`` with the heads or people ``blur`` names pixelated (itself when it names none). A frame
    recorded before any results came, or with results older than ``STALE_S``, is pixelated whole: nobody
    knows where its people are; with an earlier frame's results the regions are grown (people move)."""
    if not blur:
        return image
    height, width = image.shape[:2]
    age = analysis.captured - (analysis.results_at or analysis.captured)
    if not analysis.names or age > STALE_S:
        return pixelate(image, [(0.0, 0.0, float(width), float(height))])
    boxes = regions(analysis.detections, analysis.names, analysis.people, blur)
    return pixelate(image, [grown(box, LATE_MARGIN) for box in boxes] if age > 0 else boxes)


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
