"""The ``learning`` sink: frames kept for the learning loop (``stages.recording.learning``).

The frame each violation starts on, with its person, so that a reviewer's verdict (confirmed, false
alarm) can become a labelled picture; and a frame with people on it every ``[learning] sample_every_s``
of the stream's clock, the model's boxes as pre-labels: an even sample of the site. Blurred as the
stream's recording is (``[privacy]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from stages.config import Settings, StreamSettings
from stages.recording.learning import keep_frame
from stages.recording.paths import stream_folder
from stages.stats import PluginStats, counter
from stages.stream.analysis import FrameAnalysis, Violation
from stages.stream.messages import Evidence
from stages.stream.outputs.base import Sink
from stages.stream.outputs.overlay import hide


class LearningSettings(BaseModel, extra="forbid"):
    """``[learning]``"""

    sample_every_s: float = Field(
        600.0, gt=0, description="keep a frame with people on it this often (stream clock), for the site dataset"
    )


@dataclass
class LearningStats(PluginStats):
    """``learning_*`` in ``ctl status``."""

    kept: int = counter("vestwatch_learning_frames_kept_total", "Frames kept for the learning loop")
    failed: int = counter("vestwatch_learning_frames_failed_total", "Frames the disk refused for the learning loop")


class LearningSink(Sink):
    prefix, stats_type = "learning", LearningStats
    section, settings_model = "learning", LearningSettings
    stats: LearningStats

    def __init__(self, settings: Settings, stream: StreamSettings) -> None:
        super().__init__()
        self.every_s = (self.section_settings(settings) or LearningSettings()).sample_every_s
        self.root = stream_folder(settings.recordings_dir, stream.id)
        self.blur = settings.privacy.blur if settings.blurs_recording(stream) else []
        self.sampled: float | None = None  # stream clock of the last sample

    def evidence(self, frame: np.ndarray | None, analysis: FrameAnalysis, violation: Violation) -> Evidence:
        """The frame a violation starts on, with the person it is about; it adds nothing to the event."""
        if frame is not None and violation.phase == "start":
            person = next((p.box for p in analysis.people if p.track_id == violation.track_id), None)
            self._keep(frame, analysis, violation.event_id, event_id=violation.event_id,
                       track_id=violation.track_id, box=person, missing=violation.missing)  # fmt: skip
        return {}

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        if frame is None or not analysis.people:
            return
        if self.sampled is not None and 0 <= analysis.clock - self.sampled < self.every_s:
            return
        self.sampled = analysis.clock
        self._keep(frame, analysis, f"sample-{int(analysis.clock * 1000)}")

    def _keep(self, frame: np.ndarray, analysis: FrameAnalysis, name: str, **more: object) -> None:
        kept = keep_frame(self.root, name, hide(frame, analysis, self.blur), analysis, blurred=self.blur, **more)
        if kept is None:
            self.stats.failed += 1
        else:
            self.stats.kept += 1
