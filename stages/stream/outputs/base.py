"""The base class of a stream's sinks: where an analysed frame and its events go after the processors.

The stream stage calls only the hooks declared here, each with a default, so a sink overrides
those it needs (see ``stages.stream.plugins`` for what every plug-in also declares: ``create``,
its figures ``stats_type`` and ``prefix``, its own config section, ``close``). For each inferred
frame, in this order:

1. ``note(analysis)``: every-frame sinks only, once the frames captured up to it were recorded;
2. ``evidence(frame, analysis, violation)`` of every sink, for each violation phase on the frame:
   the fields it adds to the phase's event (a snapshot, a clip, where the recording holds it);
3. ``handle(frame, analysis)``: the sinks that are not every-frame ones;
4. ``events(events)`` of every sink, when the frame has violation phases: each phase's
   ``EventMessage``, made once from the violation and all sinks' evidence, the same frozen value
   for every sink and for ``event.<stream>``.

While no results come (a camera or inference down, a file's end) the stage runs 2-4 once a second
with ``frame`` None and an empty analysis (``seq`` 0), and once more as it stops, for the phases
that end what was open. Beside the frames:

- ``every_frame`` sinks (the recorder) get every captured frame through ``handle``, drawn with its
  own results or, for a frame inference skipped, the latest earlier ones; and, for a stream whose
  camera's own packets are recorded, each packet through ``handle_packet``;
- ``tick()`` about ten times a second, frames or not; ``recorded_at()`` at each heartbeat;
- ``camera(message)`` when the camera's state changes (watched, degraded, down: ``stages.stream.health``),
  and once at start with its first state (``previous`` empty), so that an output never says "no
  violation" for a camera nobody watches.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pipeline.messages import EncodedPacket
from stages.stream.analysis import FrameAnalysis, Violation
from stages.stream.messages import CameraMessage, EventMessage, Evidence
from stages.stream.plugins import Plugin


class Sink(Plugin):
    """An output of a stream, found through an entry point of ``vestwatch.sinks``."""

    every_frame: ClassVar[bool] = False  # True: gets every captured frame (recording), not the inferred ones

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        """A frame (``frame`` the captured image, BGR, when the stage has it, else None) with its
        analysis: every captured frame for an ``every_frame`` sink, else each inferred one. Default: nothing."""

    def evidence(self, frame: np.ndarray | None, analysis: FrameAnalysis, violation: Violation) -> Evidence:
        """The fields this sink adds to ``violation``'s event, found or made now (a snapshot written,
        a clip promised); called for each phase before its event is made. Default: none."""
        return {}

    def events(self, events: tuple[EventMessage, ...]) -> None:
        """The violation phases of a frame, as ``event.<stream>`` publishes them. Default: nothing."""

    def left_open(self) -> tuple[EventMessage, ...]:
        """Asked once, after the sinks' first ``tick``: the ``end`` phases of events a crash of this
        stage left open (ended ``interrupted``), which the stage then gives every sink's ``events`` and
        publishes, so that no receiver keeps them open for ever. Default: none."""
        return ()

    def camera(self, message: CameraMessage) -> None:
        """The camera's state changed (or, ``previous`` empty, its first state at start). Default: nothing."""

    def tick(self) -> None:
        """Called about ten times a second, frames or not: timed work (retention, due clips). Default: nothing."""

    def note(self, analysis: FrameAnalysis) -> None:
        """Every-frame sinks: an inferred frame's results, once the frames captured up to it were
        handed over (a recording of copied packets writes them beside them). Default: nothing."""

    def handle_packet(self, packet: EncodedPacket, clock: float) -> None:
        """Every-frame sinks: one of the camera's own packets, ``clock`` the stream's event clock for it.
        A ``ValueError`` says the packet is no video (counted as a bad message). Default: nothing."""

    def recorded_at(self) -> float | None:
        """Monotonic time this sink last recorded a frame, for ``/healthz``; None: it records none (yet)."""
        return None
