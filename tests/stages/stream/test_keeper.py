"""Frames a stream stage still needs (to record, or for their results) stay in the capture ring until
capture is about to overwrite them, then are copied out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.frames import FrameRing
from pipeline.messages import FrameRef
from stages.stats import StreamStats
from stages.stream.analysis import FrameAnalysis
from stages.stream.keeper import FrameKeeper
from stages.stream.outputs.base import Sink
from stages.stream.stage import StreamStage
from stages.topology import capture_ring

SLOTS = 8  # the stage copies a frame out once capture is SLOTS // 2 frames past it


class Collector(Sink):
    """An every-frame sink that keeps what it was handed."""

    every_frame = True

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[int, np.ndarray]] = []

    def handle(self, image: np.ndarray | None, analysis: FrameAnalysis) -> None:
        assert image is not None
        self.frames.append((analysis.seq, image.copy()))


def picture(seq: int) -> np.ndarray:
    return np.full((4, 6, 3), seq, np.uint8)


def test_frames_are_copied_only_when_capture_closes_in(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'runtime_dir = "{tmp_path / "run"}"\nrecordings_dir = "{tmp_path / "rec"}"\n[pipeline]\nring_slots = {SLOTS}\n'
    )
    stage = StreamStage("stream.demo", config, None)
    ring = FrameRing.create(capture_ring(stage.settings.runtime_dir, "demo"), SLOTS, (4, 6, 3))
    collector = Collector()
    stage.frame_sinks = [collector]

    def capture(seq: int) -> None:
        slot = ring.write(seq, picture(seq), None, float(seq))
        stage.keeper.take(FrameRef("demo", seq, slot, float(seq), None, True))

    for seq in range(1, 4):
        capture(seq)
    assert [w.image is None for w in stage.keeper.pending] == [True] * 3, "no copy while far from being overwritten"
    for seq in range(4, 8):  # capture goes on before this stage drains their refs: the ring tells
        ring.write(seq, picture(seq), None, float(seq))
    stage._record_ready()  # nothing is due (no results yet), but 1-3 are 4 behind capture now
    assert [w.image is not None for w in stage.keeper.pending] == [True] * 3, "1-3 copied at 4 behind"
    for seq in range(4, 8):
        stage.keeper.take(FrameRef("demo", seq, seq % SLOTS, float(seq), None, True))
    assert [w.image is not None for w in stage.keeper.pending] == [True] * 3 + [False] * 4
    for seq in range(8, 13):  # overwrites the slots of 1-4: 4 was still in the ring only, and is lost
        ring.write(seq, picture(seq), None, float(seq))
    for seq in range(8, 13):
        stage.keeper.take(FrameRef("demo", seq, seq % SLOTS, float(seq), None, True))
    while stage.keeper.pending:
        stage._record_kept(stage.keeper.pending.popleft())
    recorded = {seq: int(image[0, 0, 0]) for seq, image in collector.frames}
    assert recorded == {seq: seq for seq in range(1, 13) if seq != 4}, "each frame its own pixels"
    assert stage.stats.missed == 1
    ring.close()


def test_a_frame_awaiting_results_keeps_its_picture_beyond_the_ring(tmp_path: Path) -> None:
    """Results later than a ring's worth of frames (an overloaded inference) still find their frame:
    the snapshot of an event is made from the frame its start was decided on."""
    stats = StreamStats()
    rejected: list[Exception] = []
    keeper = FrameKeeper(tmp_path / "ring", SLOTS, SLOTS, stats, lambda kind, error: rejected.append(error))
    ring = FrameRing.create(tmp_path / "ring", SLOTS, (4, 6, 3))
    for seq in range(1, 3 * SLOTS):  # detected frames, not recorded here; inference returns nothing yet
        slot = ring.write(seq, picture(seq), None, float(seq))
        keeper.take(FrameRef("demo", seq, slot, float(seq), None, True, record=False))
    assert keeper.image(5 % SLOTS, 5) is None, "5 was let go: more frames awaited than can be in flight"
    late = 2 * SLOTS  # overwritten in the ring long ago
    image = keeper.image(late % SLOTS, late)
    assert image is not None and int(image[0, 0, 0]) == late, "its own pixels, copied before capture overwrote them"
    assert all(k.ref.seq > late for k in keeper.awaiting), "results come in order: earlier frames let go"
    assert stats.unseen == 1 and stats.missed == 0 and not rejected
    ring.close()
    keeper.close()


def test_capture_gets_credit_for_what_is_secured_and_no_more_copies_than_a_ring(tmp_path: Path) -> None:
    """``secured`` is capture's record credit: up to it, every frame to record is out of the ring's
    danger. A stage that stays behind copies at most a ring's worth, then holds capture back."""
    stats = StreamStats()
    keeper = FrameKeeper(tmp_path / "ring", SLOTS, SLOTS, stats, lambda kind, error: None)
    ring = FrameRing.create(tmp_path / "ring", SLOTS, (4, 6, 3))
    for seq in range(1, SLOTS + 1):
        slot = ring.write(seq, picture(seq), None, float(seq))
        keeper.take(FrameRef("demo", seq, slot, float(seq), None, True))
    copied = [k.ref.seq for k in keeper.pending if k.image is not None]
    assert copied and copied == list(range(1, len(copied) + 1)), "the oldest copied as capture closed in"
    assert keeper.secured() == len(copied), "secured up to the first frame still only in the ring"
    for seq in range(SLOTS + 1, 4 * SLOTS):  # capture took its credit: overwrites only what is secured
        if seq - SLOTS > keeper.secured():
            break
        slot = ring.write(seq, picture(seq), None, float(seq))
        keeper.take(FrameRef("demo", seq, slot, float(seq), None, True))
    held = sum(k.image is not None for k in keeper.pending)
    assert held == SLOTS, f"{held} frames held out of the ring, a ring's worth at most"
    assert stats.missed == 0, "nothing overwritten before it was secured"
    assert stats.record_behind == 1, "capture held back: counted once"
    keeper.pending.popleft()  # one recorded: room for one more copy, and one more frame of credit
    before = keeper.secured()
    keeper.rescue()
    assert keeper.secured() == before + 1
    ring.close()
    keeper.close()


def test_a_recorded_frame_awaiting_its_results_holds_capture_s_credit(tmp_path: Path) -> None:
    """Recorded before its results came, it still needs the ring (its event's snapshot): capture gets no
    credit past it until it is copied out, so a stage descheduled on a loaded box finds it there."""
    keeper = FrameKeeper(tmp_path / "ring", SLOTS, SLOTS, StreamStats(), lambda kind, error: None)
    ring = FrameRing.create(tmp_path / "ring", SLOTS, (4, 6, 3))
    for seq in (1, 2):
        keeper.take(FrameRef("demo", seq, ring.write(seq, picture(seq), None, float(seq)), float(seq), None, True))
    keeper.await_results(keeper.pending.popleft())  # recorded from the ring, no results yet
    assert keeper.secured() == 0, "frame 1 is still only in the ring"
    for seq in range(3, SLOTS):
        keeper.take(FrameRef("demo", seq, ring.write(seq, picture(seq), None, float(seq)), float(seq), None, True))
    assert keeper.awaiting[0].image is not None and keeper.secured() >= 1, "copied out as capture neared it"
    ring.close()
    keeper.close()
