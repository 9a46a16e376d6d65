"""Frames waiting to be recorded stay in the capture ring until capture is about to overwrite them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.frames import FrameRing
from pipeline.messages import FrameRef
from stages.stream.analysis import FrameAnalysis
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
        stage._take(FrameRef("demo", seq, slot, float(seq), None, True))

    for seq in range(1, 4):
        capture(seq)
    assert [w.image is None for w in stage.pending] == [True] * 3, "no copy while far from being overwritten"
    for seq in range(4, 8):  # capture goes on before this stage drains their refs: the ring tells
        ring.write(seq, picture(seq), None, float(seq))
    stage._record_ready()  # nothing is due (no results yet), but 1-3 are 4 behind capture now
    assert [w.image is not None for w in stage.pending] == [True] * 3, "1-3 copied at 4 behind"
    for seq in range(4, 8):
        stage._take(FrameRef("demo", seq, seq % SLOTS, float(seq), None, True))
    assert [w.image is not None for w in stage.pending] == [True] * 3 + [False] * 4
    for seq in range(8, 13):  # overwrites the slots of 1-4: 4 was still in the ring only, and is lost
        ring.write(seq, picture(seq), None, float(seq))
    for seq in range(8, 13):
        stage._take(FrameRef("demo", seq, seq % SLOTS, float(seq), None, True))
    while stage.pending:
        stage._record_waiting(stage.pending.popleft())
    recorded = {seq: int(image[0, 0, 0]) for seq, image in collector.frames}
    assert recorded == {seq: seq for seq in range(1, 13) if seq != 4}, "each frame its own pixels"
    assert stage.stats.missed == 1
    ring.close()
