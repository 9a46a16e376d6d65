"""CPU time of the per-stream stage for one frame, by plug-in, at 640x360, 720p and 1080p.

    python bench/stream_stage.py                 # the shipped model's boxes on the site footage, or the demo
    python bench/stream_stage.py --frames 200

The shipped model's boxes are found once per frame up front (not timed); then each processor
(people: ByteTrack and PPE; zones: violations) and each sink (recorder: drawing and H.264
encoding; live view JPEG at most 5 a second; snapshots on events) is timed with
``time.process_time`` over the same frames, as the stream stage runs them. Prints a Markdown
table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stages.capture.sources.demo import demo_pictures, zoomed
from stages.config import BUNDLED_WEIGHTS, DetectorSettings, Settings, StreamSettings
from stages.detector.detector import detector_from_settings
from stages.media.video import VideoReader
from stages.stream import plugins
from stages.stream.analysis import FrameAnalysis
from stages.stream.messages import EventMessage
from stages.stream.plugins import Plugin

SITE_FOOTAGE = Path(__file__).resolve().parents[2] / "shared" / "media"
SIZES = {"640x360": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}


def source_frames(count: int) -> tuple[str, list[np.ndarray]]:
    """The first site-footage video in ../shared/media, else the demo pictures zooming."""
    videos = sorted(p for p in SITE_FOOTAGE.glob("*") if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".avi"))
    if videos:
        with VideoReader(videos[0]) as reader:
            frames = [frame.image for _, frame in zip(range(count), reader.frames())]
        return videos[0].name, frames
    pictures = demo_pictures()
    return "demo pictures", [zoomed(pictures[i % len(pictures)], (i % 20) / 20) for i in range(count)]


def time_plugins(frames: list[np.ndarray], size: tuple[int, int], weights: Path) -> dict[str, float]:
    """Milliseconds of CPU per frame for each plug-in, on ``frames`` scaled to ``size``."""
    detector = detector_from_settings(DetectorSettings(weights=weights, device="cpu"))
    frames = [cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames]
    found = [d for i in range(0, len(frames), 8) for d in detector.detect(frames[i : i + 8]).detections]
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(recordings_dir=Path(home) / "rec", runtime_dir=Path(home) / "run")
        settings.runtime_dir.mkdir(mode=0o700)
        stream = StreamSettings(id="bench", url="demo", realtime=True)
        processors = plugins.load(plugins.PROCESSORS, stream.processors, settings, stream).plugins
        sinks = plugins.load(plugins.SINKS, stream.sinks, settings, stream).plugins
        spent = {type(p).__name__: 0.0 for p in [*processors, *sinks]}

        def timed(plugin: Plugin, hook: Callable[..., Any], *args: Any) -> Any:
            began = time.process_time()
            result = hook(*args)
            spent[type(plugin).__name__] += time.process_time() - began
            return result

        start = time.time()
        for i, (frame, detections) in enumerate(zip(frames, found)):
            analysis = FrameAnalysis(
                "bench", i + 1, start + i / 15, None, size[0], size[1], detections, list(detector.names)
            )
            for processor in processors:
                timed(processor, processor.handle, frame, analysis)
            events = []  # as the stage makes them: each sink's evidence, then one message per phase
            boxes = {person.track_id: person.box for person in analysis.people}
            for violation in analysis.violations:
                evidence: dict[str, Any] = {}
                for sink in sinks:
                    evidence.update(timed(sink, sink.evidence, frame, analysis, violation))
                events.append(
                    EventMessage.from_violation(analysis, violation, boxes.get(violation.track_id, []), evidence)
                )
            for sink in sinks:
                timed(sink, sink.handle, frame, analysis)
                if events:
                    timed(sink, sink.events, tuple(events))
        for plugin in [*processors, *sinks]:
            plugin.close()
    return {name: seconds * 1e3 / len(frames) for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--weights", type=Path, default=BUNDLED_WEIGHTS)
    args = parser.parse_args()
    name, frames = source_frames(args.frames)
    print(f"{len(frames)} frames of {name}, CPU ms per frame (time.process_time), one stream\n")
    rows = {size: time_plugins(frames, dims, args.weights) for size, dims in SIZES.items()}
    plugins_seen = list(next(iter(rows.values())))
    print("| frame | " + " | ".join(plugins_seen) + " | all |")
    print("|---|" + "---:|" * (len(plugins_seen) + 1))
    for size, figures in rows.items():
        cells = " | ".join(f"{figures[p]:.2f}" for p in plugins_seen)
        print(f"| {size} | {cells} | {sum(figures.values()):.2f} |")


if __name__ == "__main__":
    main()
