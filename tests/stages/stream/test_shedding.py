"""Annotation is what a live recording gives up when the CPU is short: frames recorded undrawn, in
segments of x264's fastest preset, their people in the sidecar, drawn by the review page over a clip."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np

from pipeline.detections import Detections
from pipeline.messages import FrameRef
from stages.config import Settings, StreamSettings
from stages.recording.clips import cut_clip
from stages.recording.paths import sidecar
from stages.stats import StreamStats
from stages.stream.analysis import FrameAnalysis, Person
from stages.stream.outputs.recorder import RecorderSink
from stages.stream.shedding import BEHIND_S, RECOVER_S, SUSTAIN_S, AnnotationShedding

T0 = 1_800_000_000.0
DELAY_S = 0.3


def ref(seq: int, captured: float, realtime: bool = True) -> FrameRef:
    return FrameRef("cam", seq, 0, captured, None, realtime)


def test_annotation_is_shed_while_frames_are_recorded_late_and_comes_back_once_they_keep_up() -> None:
    stats = StreamStats()
    shedding = AnnotationShedding("cam", DELAY_S, stats)
    late = T0 + DELAY_S + BEHIND_S * 2  # recorded this long after captured at T0
    shedding.recorded(ref(1, T0), holding_capture=False, now=T0 + DELAY_S + BEHIND_S / 2)
    assert not shedding.active, "recorded within its patience"
    shedding.recorded(ref(2, T0), holding_capture=False, now=late)
    assert not shedding.active, "one late frame is a spike (a start, a burst), not a CPU too short"
    shedding.recorded(ref(3, T0 + 1), holding_capture=False, now=late + 1)
    shedding.recorded(ref(4, T0 + 2), holding_capture=False, now=T0 + 2.1)  # caught up: the spike is over
    shedding.recorded(ref(5, T0 + 3), holding_capture=False, now=late + 3)
    shedding.recorded(ref(6, T0 + 5), holding_capture=False, now=late + 5)
    assert not shedding.active, "late, but not SUSTAIN_S without a break"
    shedding.recorded(ref(7, T0 + 3 + SUSTAIN_S), holding_capture=False, now=late + 3 + SUSTAIN_S)
    assert shedding.active and stats.annotation_shed
    shedding.recorded(ref(8, T0 + 10), holding_capture=False, now=T0 + 10.1)
    assert shedding.active, "not back before it kept up for RECOVER_S"
    back = late + 3 + SUSTAIN_S + RECOVER_S + 1
    shedding.recorded(ref(9, back), holding_capture=False, now=back + 0.1)
    assert not shedding.active and not stats.annotation_shed
    for seconds in (0, SUSTAIN_S):
        shedding.recorded(ref(10, back + 100 + seconds), holding_capture=True, now=back + 100.1 + seconds)
    assert shedding.active, "a stage holding capture back is behind however fresh the frame"


def test_an_offline_file_is_never_shed() -> None:
    shedding = AnnotationShedding("cam", DELAY_S, StreamStats())
    shedding.recorded(ref(1, T0, realtime=False), holding_capture=True, now=T0 + 60)
    assert not shedding.active


def frame_with_person(seq: int, annotated: bool) -> FrameAnalysis:
    clock = T0 + seq / 10
    box = [40.0, 40.0, 120.0, 200.0]
    detections = Detections(np.array([box]), [0.9], [0])
    person = Person(track_id=7, box=box, score=0.9, vest="no", zones=["site"])
    return FrameAnalysis("cam", seq, clock, None, 320, 240, detections, ["person"], [person], annotated=annotated)


def test_undrawn_frames_go_to_segments_of_their_own_and_their_people_to_the_clip_overlay(tmp_path: Path) -> None:
    settings = Settings(recordings_dir=tmp_path / "rec", runtime_dir=tmp_path / "run")
    sink = RecorderSink(settings, StreamSettings(id="cam", url="demo"))
    grey = np.full((240, 320, 3), 90, np.uint8)
    for seq in range(1, 31):  # 1 s drawn, 1 s undrawn, 1 s drawn again
        sink.handle(grey.copy(), frame_with_person(seq, annotated=not 10 < seq <= 20))
    sink.close()
    assert sink.stats.undrawn == 10 and sink.stats.frames == 30

    segments = sorted((tmp_path / "rec" / "cam").rglob("*.ts"))
    assert len(segments) == 3, "a new preset starts a new segment"
    lines = [[json.loads(line) for line in sidecar(s).read_text().splitlines()] for s in segments]
    assert [{line["annotated"] for line in ls} for ls in lines] == [{True}, {False}, {True}]
    assert b"subme=0" in segments[1].read_bytes() and b"subme=0" not in segments[0].read_bytes(), "ultrafast"
    for segment, drawn in zip(segments, (True, False, True)):
        with av.open(str(segment)) as container:
            picture = next(container.decode(video=0)).to_ndarray(format="rgb24")
        assert (np.abs(picture.astype(int) - 90).max() > 60) == drawn, f"{segment.name}: boxes drawn {drawn}"

    clip = cut_clip(tmp_path / "rec" / "cam", T0 + 0.5, T0 + 2.5, tmp_path / "clip.mp4")
    assert clip is not None
    overlay = [json.loads(line) for line in sidecar(clip.path).read_text().splitlines()]
    assert len(overlay) == 10 and all(line["people"][0]["track_id"] == 7 for line in overlay)
    assert [round(line["t"] + clip.start - T0, 1) for line in overlay] == [round(s / 10, 1) for s in range(11, 21)]
