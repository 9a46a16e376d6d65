"""The ``people`` processor: tracked people and the PPE they wear, smoothed over recent frames.

Person candidates are ``person`` boxes, plus ``vest``/``no_vest`` boxes that lie on no person box
(the model often sees a torso without the person around it). ByteTrack gives them ids that
survive a few missed frames; each track keeps its last few PPE observations so that one bad
frame does not flip what it is seen wearing.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import supervision as sv

from pipeline.detections import Detections
from stages.config import EventSettings, StreamSettings
from stages.stream.analysis import PPE_ITEMS, FrameAnalysis, Person, Worn
from stages.stream.processors.base import FollowingProcessor

ON = 0.5  # a box lies on another when this share of its area is inside it
CLASSES = ("person", *PPE_ITEMS, *(f"no_{item}" for item in PPE_ITEMS))  # looked up by name


@dataclass
class _Track:
    """What a track has been seen wearing, and when it was last seen (capture time)."""

    last_seen: float
    history: dict[str, deque[str]] = field(default_factory=dict)


def coverage(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """[M, N]: the share of each ``inner`` box's area that lies inside each ``outer`` box."""
    inner = np.asarray(inner, np.float64).reshape(-1, 4)
    outer = np.asarray(outer, np.float64).reshape(-1, 4)
    x1 = np.maximum(inner[:, None, 0], outer[None, :, 0])
    y1 = np.maximum(inner[:, None, 1], outer[None, :, 1])
    x2 = np.minimum(inner[:, None, 2], outer[None, :, 2])
    y2 = np.minimum(inner[:, None, 3], outer[None, :, 3])
    overlap = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = np.clip(inner[:, 2] - inner[:, 0], 0, None) * np.clip(inner[:, 3] - inner[:, 1], 0, None)
    return overlap / np.maximum(area, 1e-9)[:, None]


def class_masks(detections: Detections, names: list[str]) -> dict[str, np.ndarray]:
    """Per class of ``CLASSES``, which boxes are of it; a class the model lacks is never seen."""
    masks = {}
    for name in CLASSES:
        masks[name] = detections.class_id == names.index(name) if name in names else np.zeros(len(detections), bool)
    return masks


def majority(observations: deque[str] | None) -> Worn:
    """``yes`` or ``no`` by majority, a tie going to the latest; ``unknown`` without observations."""
    if not observations:
        return "unknown"
    yes = sum(o == "yes" for o in observations)
    no = len(observations) - yes
    if yes == no:
        return "yes" if observations[-1] == "yes" else "no"
    return "yes" if yes > no else "no"


def new_tracker(events: EventSettings, fps: float) -> sv.ByteTrack:
    """ByteTrack keeping lost tracks for ``events.lost_s`` at ``fps``.

    ByteTrack counts its buffer in frames at 30 fps (it keeps ``int(frame_rate / 30 * buffer)``
    frames), so the buffer is scaled to keep ``ceil(lost_s * fps)`` frames at this stream's rate."""
    rate = max(1, round(fps))
    frames = max(1, math.ceil(events.lost_s * fps - 1e-9))
    buffer = math.ceil(frames * 30 / rate)
    while int(rate / 30.0 * buffer) < frames:  # float rounding in ByteTrack's product
        buffer += 1
    with warnings.catch_warnings():
        # ByteTrack is deprecated from supervision 0.28 on; 0.30, the last with it, is pinned
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"(?s).*ByteTrack")
        return sv.ByteTrack(
            track_activation_threshold=events.min_conf,
            lost_track_buffer=buffer,
            minimum_matching_threshold=0.8,
            frame_rate=rate,
            minimum_consecutive_frames=1,
        )


class PeopleProcessor(FollowingProcessor):
    """Entry point ``people``: fills ``analysis.people``, tracked people with their smoothed ``vest``
    and ``hardhat``."""

    def __init__(self, stream: StreamSettings, events: EventSettings, fps: float) -> None:
        super().__init__(stream, events, fps)
        self.tracker = new_tracker(events, fps)
        self.tracks: dict[int, _Track] = {}
        # ByteTrack can revive a track up to a frame after lost_s; keep its history that long
        self.forget_s = events.lost_s + 1.0 / max(fps, 1e-3)
        self.last_clock: float | None = None
        self.interval_s = 1.0 / max(fps, 1e-3)  # between results, smoothed

    def _follow_rate(self, now: float) -> None:
        """ByteTrack counts lost frames, not seconds: keep its buffer at ``lost_s`` at the rate results
        really come (``fps`` is only the first guess; inference may deliver fewer, or more)."""
        if self.last_clock is not None and now > self.last_clock:
            self.interval_s = 0.9 * self.interval_s + 0.1 * (now - self.last_clock)
            self.tracker.max_time_lost = max(1, math.ceil(self.events.lost_s / self.interval_s - 1e-6))
            self.forget_s = self.events.lost_s + self.interval_s
        self.last_clock = now

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        detections = analysis.detections
        now = analysis.clock
        self._follow_rate(now)
        masks = class_masks(detections, analysis.names)
        persons = np.flatnonzero(masks["person"])
        torsos = np.flatnonzero(masks["vest"] | masks["no_vest"])
        if len(persons) and len(torsos):
            on_person = (coverage(detections.xyxy[torsos], detections.xyxy[persons]) >= ON).any(axis=1)
            torsos = torsos[~on_person]
        candidates = np.concatenate([persons, torsos]).astype(np.int64)  # indices into detections
        torso_only = np.zeros(len(candidates), bool)
        torso_only[len(persons) :] = True

        tracked = self.tracker.update_with_detections(
            sv.Detections(
                xyxy=detections.xyxy[candidates].astype(np.float32).reshape(-1, 4),
                confidence=detections.confidence[candidates].astype(np.float32),
                class_id=detections.class_id[candidates].astype(int),
                data={"candidate": np.arange(len(candidates))},
            )
        )
        people = []
        if len(tracked):  # an empty result carries no data fields
            for track_id, slot in zip(tracked.tracker_id, tracked.data["candidate"]):
                det, torso = int(candidates[slot]), bool(torso_only[slot])
                people.append(self._person(analysis, masks, int(track_id), det, torso))
        analysis.people = sorted(people, key=lambda p: p.track_id)
        self.tracks = {k: t for k, t in self.tracks.items() if now - t.last_seen <= self.forget_s}

    def _person(
        self, analysis: FrameAnalysis, masks: dict[str, np.ndarray], track_id: int, det: int, torso_only: bool
    ) -> Person:
        """The person of one tracked box, after adding this frame's PPE observations to its track."""
        detections = analysis.detections
        box = detections.xyxy[det]
        track = self.tracks.get(track_id)
        if track is None:
            track = self.tracks[track_id] = _Track(analysis.clock)
        track.last_seen = analysis.clock
        worn = {}
        for item in PPE_ITEMS:
            seen = self._observe(detections, masks[item], masks[f"no_{item}"], box, det if torso_only else None)
            history = track.history.setdefault(item, deque(maxlen=self.events.history))
            if seen is not None:
                history.append(seen)
            worn[item] = majority(history)
        return Person(
            track_id=track_id,
            box=[round(float(v), 2) for v in box],
            score=round(float(detections.confidence[det]), 4),
            vest=worn["vest"],
            hardhat=worn["hardhat"],
            torso_only=torso_only,
        )

    def _observe(
        self, detections: Detections, yes: np.ndarray, no: np.ndarray, box: np.ndarray, own: int | None
    ) -> str | None:
        """``yes``/``no`` by the best-scoring item box lying on ``box``; a torso's own box always counts."""
        usable = (yes | no) & (detections.confidence >= self.events.min_conf)
        if own is not None and (yes[own] or no[own]):
            usable[own] = True
        candidates = np.flatnonzero(usable)
        if not len(candidates):
            return None
        lying = candidates[coverage(detections.xyxy[candidates], box)[:, 0] >= ON]
        if not len(lying):
            return None
        best = lying[np.argmax(detections.confidence[lying])]
        return "yes" if yes[best] else "no"

    def close(self) -> None:
        self.tracks.clear()
        self.tracker.reset()
