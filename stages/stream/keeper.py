"""The captured frames a stream stage still needs, and where their pixels are.

Capture sends the stage a reference to each frame it will need: every frame of a stream recorded
annotated (``record``), and every frame sent for detection, whose results come later and whose
picture the snapshot of an event is made from. A frame stays in the capture ring, read when it
is needed, unless capture (the newest seq in the ring) comes within half a ring of overwriting
it: then it is copied out. So a latency longer than the ring (an overloaded or stalled inference)
costs copies of the few frames in flight, never a snapshot without its picture; a 1080p30 camera
recorded without delays costs no copies at all. A frame already overwritten before it could be
copied (the stage itself fell behind) is counted: ``missed`` for recording, ``unseen`` for results.

Recording is lossless by credit: ``secured`` is the seq up to which every frame to record, and every
recorded one still awaiting its results, is out of danger (recorded and let go, or copied out), which
the stage hands capture through the ring's cursor; capture waits before it overwrites a frame past it.
Copies to record are bounded (``copies_max``): a stage that stays slower than its camera makes capture
wait, not its own memory grow, and counts it (``record_behind``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.frames import RingReaders
from pipeline.messages import FrameRef
from stages.stats import StreamStats


@dataclass
class Kept:
    """A captured frame the stage needs: in the ring, or copied out once endangered."""

    ref: FrameRef
    arrived: float  # monotonic
    image: np.ndarray | None = None
    lost: bool = False  # overwritten before it could be copied (counted)


class FrameKeeper:
    """The frames waiting to be recorded (oldest first) and those waiting for their results."""

    def __init__(
        self,
        ring_path: Path,
        ring_slots: int,
        in_flight: int,
        stats: StreamStats,
        reject: Callable[[str, Exception], None],
    ) -> None:
        self.ring = RingReaders()  # the one capture ring of this stream, once its capture created it
        self.ring_path = ring_path
        self.stats, self.reject = stats, reject
        self.pending: deque[Kept] = deque()  # to record
        self.awaiting: deque[Kept] = deque()  # detected, not recorded here: kept until their results come
        self.awaiting_max = in_flight  # the most frames the queues to inference hold: more cannot be awaited
        # a frame this many behind capture's newest is copied out; capture overwrites it at ring_slots
        # behind, so the stage may be this slow between two looks (before each recording)
        self.rescue_behind = ring_slots - max(2, ring_slots // 2)
        self.copies_max = ring_slots  # frames to record held out of the ring at most
        self.newest_record = 0  # the newest seq taken to record
        self.capped = False  # a ring's worth of copies held: capture is held back

    def has_slot(self, slot: int) -> bool:
        return self.ring.has_slot(self.ring_path, slot)

    def newest_seq(self) -> int:
        """How far capture has written the ring (0: not at all yet)."""
        return self.ring.newest_seq(self.ring_path)

    def take(self, ref: FrameRef) -> None:
        """A frame capture wrote: to record (``ref.record``), else to keep until its results come."""
        if not self.has_slot(ref.slot):
            self.reject(ref.TYPE, ValueError(f"slot {ref.slot} is not in the capture ring"))
            return
        kept = Kept(ref, time.monotonic())
        if ref.record:
            self.newest_record = max(self.newest_record, ref.seq)
        if ref.record and not ref.realtime:  # a file decodes ahead at its own speed: copy at once, lose nothing
            kept.image = self.copy(ref)
            if kept.image is None:
                return
        if ref.record:
            self.pending.append(kept)
        else:
            self.await_results(kept)
        self.rescue()

    def await_results(self, kept: Kept) -> None:
        """A frame sent only for detection, or a detected one recorded before its results came (a live
        one waits ``RECORD_DELAY_S`` at most): kept for them, at most as many as the queues to inference
        hold (frames capture recorded only, never sent, are not kept); one inference dropped is let go
        with the next results."""
        self.awaiting.append(kept)
        while len(self.awaiting) > self.awaiting_max:
            self.awaiting.popleft()

    def image(self, slot: int, seq: int) -> np.ndarray | None:
        """Frame ``seq``'s pixels, from the ring or a copy; None when neither has it (counted as unseen).
        Results come in order, so the frames kept for earlier ones are let go."""
        frame = self.ring.read(self.ring_path, slot, seq)
        kept = next((k.image for k in [*self.awaiting, *self.pending] if k.ref.seq == seq), None)
        while self.awaiting and self.awaiting[0].ref.seq <= seq:
            self.awaiting.popleft()
        if frame is None and kept is None:
            self.stats.unseen += 1
        return frame.image if frame is not None else kept

    def rescue(self) -> None:
        """Copy out of the ring the frames capture is about to overwrite."""
        newest = self.newest_seq()
        for queue in (self.pending, self.awaiting):
            if queue:
                newest = max(newest, queue[-1].ref.seq)
        copies, capped = sum(kept.image is not None for kept in self.pending), False
        for queue in (self.pending, self.awaiting):
            for kept in queue:
                if newest - kept.ref.seq < self.rescue_behind:
                    break  # the rest are newer
                if kept.image is None and not kept.lost:
                    if queue is self.pending and copies >= self.copies_max:
                        capped = True  # capture waits for this one
                        break
                    kept.image = self.copy(kept.ref, count=queue is self.pending)
                    kept.lost = kept.image is None
                    copies += queue is self.pending and not kept.lost
        self.stats.record_behind += capped and not self.capped
        self.capped = capped

    def secured(self) -> int:
        """The seq up to which no frame this stage still needs, to record or for its results (a frame
        recorded before they came), needs the ring any more: capture's credit."""
        in_ring = [
            next((k.ref.seq for k in queue if k.image is None and not k.lost), None)
            for queue in (self.pending, self.awaiting)
        ]
        oldest = min((seq for seq in in_ring if seq is not None), default=None)
        return self.newest_record if oldest is None else oldest - 1

    def copy(self, ref: FrameRef, count: bool = True) -> np.ndarray | None:
        """The frame copied out of the ring; None, counted as missed, if it was overwritten (this
        stage fell behind) or the ref was malformed."""
        try:
            frame = self.ring.read(self.ring_path, ref.slot, ref.seq)
        except ValueError as error:  # a slot the ring lacks, once the ring is there to tell
            self.reject(ref.TYPE, error)
            return None
        if frame is None:
            self.stats.missed += count
            return None
        return frame.image

    def recordable(self, kept: Kept) -> np.ndarray | None:
        """The pixels of a frame due to be recorded; None when they were lost (counted once)."""
        if kept.lost:
            return None
        return self.copy(kept.ref) if kept.image is None else kept.image

    def close(self) -> None:
        self.ring.close()
