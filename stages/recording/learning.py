"""Frames kept for the learning loop: the undrawn picture with what the model saw on it.

The stream stage keeps the frame each violation started on (``<event id>.jpg``) and, now and then, a
frame with people on it (``sample-<clock>.jpg``), in ``<stream>/<day>/learning/``, each with its
description (``.json``, not a segment's ``.jsonl`` lines): the model's boxes, the people and, for an
event, its person. They are what
``vestwatch dataset export`` turns into a site dataset (a drawn recording's frames carry the boxes drawn
on them; these do not). They are blurred as the stream's recording is, and go by its retention.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stages.recording.paths import about_frame, day_folder
from stages.stream.analysis import FrameAnalysis

QUALITY = 92  # JPEG quality: training pictures, not thumbnails


def learning_folder(stream_root: Path, when: float) -> Path:
    return day_folder(stream_root, when) / "learning"


def keep_frame(stream_root: Path, name: str, image: np.ndarray, analysis: FrameAnalysis, **more: Any) -> Path | None:
    """Write the picture and its description; None when the disk refused (the frame is only a training aid)."""
    path = learning_folder(stream_root, analysis.clock) / f"{name}.jpg"
    line = {
        "stream": analysis.stream,
        "clock": analysis.clock,
        "width": analysis.width,
        "height": analysis.height,
        "names": list(analysis.names),
        "detections": analysis.detections.records(analysis.names),
        "people": [
            {"track_id": p.track_id, "box": p.box, "vest": p.vest, "hardhat": p.hardhat} for p in analysis.people
        ],
        **more,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        about_frame(path).write_text(json.dumps(line) + "\n")
        if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, QUALITY]):
            raise OSError(f"cannot write {path}")
    except OSError:
        about_frame(path).unlink(missing_ok=True)
        return None
    return path


def kept_frames(recordings: Path, since: float) -> list[tuple[Path, dict[str, Any]]]:
    """Every kept frame (its picture, its description) of every stream from ``since`` on, oldest first."""
    found = []
    for picture in recordings.glob("*/*/learning/*.jpg"):
        try:
            line = json.loads(about_frame(picture).read_text())
        except (OSError, ValueError):
            continue  # retention took it meanwhile, or a write cut short
        if line.get("clock", 0) >= since:
            found.append((picture, line))
    return sorted(found, key=lambda kept: kept[1]["clock"])
