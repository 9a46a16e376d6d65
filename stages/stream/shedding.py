"""What a live recording sheds first when the CPU cannot keep up with it: the annotation.

A live frame is recorded once its results come, or ``RECORD_DELAY_S`` after it was captured. Frames
recorded much later than that, or a stage holding capture back (``FrameKeeper.capped``), for
``SUSTAIN_S`` without a break mean the stream stage is behind the camera: the CPU is short (x264 is
most of a stream stage's work). A shorter spike (a start, while the model warms up; a burst of clips
cut) is not that: the backlog it leaves is recorded drawn, and capture waits for it. Then
frames are recorded as captured, undrawn, their detections still in the sidecar (``"annotated":
false``: the review page draws them over a clip), in segments encoded with x264's fastest preset,
until the recording has kept up for ``RECOVER_S``. The detection rate gives next (inference is
niced), the recording itself never. Offline files are never shed: they are recorded at their own pace.
"""

from __future__ import annotations

import logging
import time

from pipeline.messages import FrameRef
from stages.stats import StreamStats

log = logging.getLogger(__name__)

BEHIND_S = 0.5  # a live frame recorded this long after its time to be: the recording is behind
SUSTAIN_S = 3.0  # behind this long without a break: annotation is shed
RECOVER_S = 60.0  # caught up this long: frames are drawn again (each change starts a segment)


class AnnotationShedding:
    """Whether a stream's frames are recorded drawn, judged from how late each one is recorded."""

    def __init__(self, stream_id: str, record_delay_s: float, stats: StreamStats) -> None:
        self.stream_id, self.record_delay_s, self.stats = stream_id, record_delay_s, stats
        self.behind_at = 0.0  # Unix seconds: when a frame was last recorded late
        self.behind_since: float | None = None  # since when every frame recorded was late

    def recorded(self, ref: FrameRef, holding_capture: bool, now: float | None = None) -> None:
        """Frame ``ref`` is being recorded ``now`` (Unix seconds); ``holding_capture``: the frames still to
        record fill what the stage may hold, and capture waits for them."""
        if not ref.realtime:
            return
        now = time.time() if now is None else now
        late_s = now - ref.captured - self.record_delay_s
        if late_s > BEHIND_S or holding_capture:
            if self.behind_since is None or now - self.behind_at > SUSTAIN_S:  # a new spell (after a gap too)
                self.behind_since = now
            self.behind_at = now
            if not self.active and now - self.behind_since >= SUSTAIN_S:
                self.stats.annotation_shed = True
                why = "capture held back for it" if holding_capture else f"frames {late_s:.1f} s late"
                log.warning("%s: the recording has been behind the camera for %.0f s (%s): frames are recorded "
                            "without their boxes drawn until it keeps up", self.stream_id, now - self.behind_since,
                            why)  # fmt: skip
            return
        self.behind_since = None
        if self.active and now - self.behind_at > RECOVER_S:
            self.stats.annotation_shed = False
            log.info("%s: the recording kept up for %.0f s: frames are drawn again", self.stream_id, RECOVER_S)

    @property
    def active(self) -> bool:
        return self.stats.annotation_shed
