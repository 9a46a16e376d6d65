"""What a stream stage knows about one frame.

Inference fills ``detections``; processors (tracker and PPE, zones and violations) add
``people`` and ``violations`` in order; sinks (recorder, live view, snapshots, alerts) read
the result. ``FrameAnalysis`` is what ``det.<stream>`` carries, and each ``Violation`` what an
``event.<stream>`` says, converted in one place each (``stages.stream.messages``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.detections import Detections

PPE_ITEMS = ("vest", "hardhat")
Worn = Literal["yes", "no", "unknown"]
Phase = Literal["start", "update", "end"]


@dataclass
class Person:
    """A tracked person and the PPE they are seen wearing, smoothed over recent frames."""

    track_id: int
    box: list[float]  # x1, y1, x2, y2 in source pixels
    score: float
    vest: Worn = "unknown"
    hardhat: Worn = "unknown"
    zones: list[str] = field(default_factory=list)  # by the bottom centre of the box
    torso_only: bool = False  # no person box: a vest/no_vest box stands for this person


@dataclass
class Violation:
    """One phase of a violation's life: a person without what the zones they stand in require, as the
    processors found it; the stage adds the person's box and the sinks' evidence (snapshot, clip,
    recording) when it makes the phase's ``EventMessage``."""

    event_id: str
    phase: Phase
    track_id: int
    zones: list[str]  # the zones that count against the person (missing something there for their dwell)
    require: list[str]  # what those zones require, together
    missing: list[str]  # what the person is seen without, of that
    started: float  # capture time the person was first seen missing it, Unix seconds
    ended: float | None  # for ``end``
    duration_s: float
    reason: str | None = None  # for ``end``: left, complied or lost


@dataclass
class FrameAnalysis:
    stream: str
    seq: int
    captured: float  # Unix seconds
    pts: float | None
    width: int
    height: int
    detections: Detections
    names: list[str]  # class names of the model, by id
    people: list[Person] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    inferred_seq: int | None = None  # for a frame inference skipped: the frame these results are of
    # what dwell and loss are measured by: capture time live; for a file, its own timeline anchored
    # at its first frame's capture time, so a file played faster or slower than real time gives
    # the same events. Defaults to ``captured``.
    clock: float | None = None
    annotated: bool = True  # False: recorded undrawn, the CPU short (``stages.stream.shedding``)
    # capture time of the frame the detections are of: a frame recorded with earlier results keeps theirs
    results_at: float | None = None

    def __post_init__(self) -> None:
        if self.clock is None:
            self.clock = self.captured
        if self.results_at is None:
            self.results_at = self.captured
