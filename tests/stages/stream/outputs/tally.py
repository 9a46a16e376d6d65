"""``tally``: a sink from outside vestwatch, in one module, registered by one entry point
(``test_plugin_output`` writes it): it counts inferred frames and events, and writes each event to
the file its own config section names. Nothing else in the code base knows of it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from stages.config import Settings, StreamSettings
from stages.stats import PluginStats, counter
from stages.stream.analysis import FrameAnalysis
from stages.stream.messages import EventMessage
from stages.stream.outputs.base import Sink


class TallySettings(BaseModel, extra="forbid"):
    """``[tally]``"""

    out: Path = Field(description="a JSON line per event phase goes here")
    label: str = Field("tally", description="written with each line")
    every: int = Field(1, gt=0, description="count one inferred frame in this many")


@dataclass
class TallyStats(PluginStats):
    frames: int = counter("vestwatch_tally_frames_total", "Inferred frames the tally counted")
    events: int = counter("vestwatch_tally_events_total", "Event phases the tally wrote")
    every: int = 0  # as configured: exported under the default name, vestwatch_tally_every


class TallySink(Sink):
    prefix, stats_type = "tally", TallyStats
    section, settings_model = "tally", TallySettings
    stats: TallyStats

    @classmethod
    def create(cls, settings: Settings, stream: StreamSettings) -> TallySink | None:
        """None without a ``[tally]`` section."""
        own = cls.section_settings(settings)
        return cls(own, stream) if own is not None else None

    def __init__(self, settings: TallySettings, stream: StreamSettings) -> None:
        super().__init__()
        self.settings, self.stream, self.seen = settings, stream, 0
        self.stats.every = settings.every

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        if analysis.seq and frame is not None:
            self.seen += 1
            self.stats.frames += self.seen % self.settings.every == 0

    def events(self, events: tuple[EventMessage, ...]) -> None:
        with self.settings.out.open("a") as out:
            for event in events:
                out.write(json.dumps({"label": self.settings.label, **asdict(event)}) + "\n")
                self.stats.events += 1
