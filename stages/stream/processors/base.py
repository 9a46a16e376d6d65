"""The base class of a stream's processors: the steps that turn inference's boxes into people,
zones and violations, in the order a stream's ``processors = [...]`` lists them.

The stream stage calls, and a processor may override (see ``stages.stream.plugins`` for what
every plug-in also declares: ``create``, figures, its own config section, ``close``):

- ``handle(frame, analysis)``: each inferred frame, in frame order, after the processors before it;
  and, while no results come for ``events.lost_s`` (camera or inference down, a file's end), once
  a second with ``frame`` None and an empty ``analysis`` (``seq`` 0), so that what was followed is
  lost in time;
- ``end_all(clock, reason)``: once, when the stage stops: the violation phases that end what is open.
"""

from __future__ import annotations

import numpy as np

from stages.config import EventSettings, Settings, StreamSettings
from stages.stream.analysis import FrameAnalysis, Violation
from stages.stream.plugins import Plugin


def inference_rate(stream: StreamSettings) -> float:
    """Frames a second the trackers can expect: the configured rate, else a camera's usual."""
    return stream.fps or 15.0


class Processor(Plugin):
    """A step of a stream's analysis, found through an entry point of ``vestwatch.processors``."""

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        """Add to ``analysis`` (its ``people``, its ``violations``); ``frame`` is the captured image
        (BGR) when the stage has it, else None. Default: nothing."""

    def end_all(self, clock: float, reason: str) -> list[Violation]:
        """The phases that end every open violation, as of ``clock`` (the stream's clock), for
        ``reason`` (``stopped``); called once as the stage stops. Default: none."""
        return []


class FollowingProcessor(Processor):
    """A processor that follows people across one stream's frames: it needs the stream, the event
    rules and the rate its frames come at (how many make a second), and is made from them."""

    @classmethod
    def create(cls, settings: Settings, stream: StreamSettings) -> FollowingProcessor:
        return cls(stream, settings.events, inference_rate(stream))

    def __init__(self, stream: StreamSettings, events: EventSettings, fps: float) -> None:
        super().__init__()
        self.stream, self.events, self.fps = stream, events, fps
