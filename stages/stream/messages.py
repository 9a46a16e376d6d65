"""What subscribers read, built on ``pipeline.messages.WireMessage``: the ``det.<stream>`` and
``event.<stream>`` topics, each a two-frame ZeroMQ message, the topic (UTF-8) then a msgpack map.
Every map has ``v`` (the schema version, now 3) and ``type``. Fields of a ``det`` message (one per inferred frame):

| field | type | meaning |
|---|---|---|
| stream | str | stream id from the config |
| seq | int | frame number, increasing per stream (jumps when capture restarts) |
| captured | float | capture wall-clock time, Unix seconds |
| pts | float or nil | source presentation time, seconds |
| width, height | int | frame size in source pixels |
| boxes | [[x1, y1, x2, y2], ...] | source pixels |
| scores | [float] | confidence per box |
| classes | [int] | class id per box |
| names | [str] | class name per box |
| counts | {name: int} | boxes per class name |
| people | [person] | tracked people, below |
| latency_ms | float | capture -> publish |
| inference_ms | float | the batch's forward pass |
| batch_size | int | frames in that batch |
| drops | {stage: int} | frames of this stream dropped since the previous message, per stage |

A person: ``track_id`` (int, stable while the person stays in view), ``box``, ``score``,
``vest`` and ``hardhat`` (``yes``, ``no`` or ``unknown``, the majority of the last few
frames), ``zones`` (names of the zones the bottom centre of the box is in) and
``torso_only`` (true when a vest/no_vest box stands for a person the model saw no box of).

An ``event`` message is one phase of one violation: a person without the PPE that the zones they
stand in require, for at least a zone's ``dwell_s`` (default ``events.dwell_s``). A person has one
violation at a time however many zones they stand in:

| field | type | meaning |
|---|---|---|
| stream | str | stream id |
| event_id | str | the same for every phase of one violation |
| phase | str | ``start``, ``update`` (every ``events.update_s``, and when ``zones`` or ``missing`` change) or ``end`` |
| track_id | int | the person |
| zones | [str] | the zones that count against the person: missing something there for its dwell |
| require | [str] | what those zones require, together (``vest``, ``hardhat``) |
| missing | [str] | what of that the person is seen without |
| started | float | when the person was first seen without them, Unix seconds (2) |
| ended | float or nil | set on ``end`` |
| duration_s | float | so far, or in all on ``end`` |
| reason | str or nil | on ``end``: ``left`` (out of every such zone for ``lost_s``), ``complied``, ``lost`` (1) |
| seq, captured | int, float | the frame of this phase |
| box | [x1, y1, x2, y2] | the person on that frame (empty once they are lost) |
| snapshot | str or nil | annotated JPEG of that frame, the person highlighted (start and end; none when lost) |
| snapshot_url | str or nil | the start's snapshot through the HTTP server (nil when it is off) |
| segment, offset_s | str or nil, float or nil | the recording holding that frame, and where in it |
| clip, clip_url | str or nil | on ``end``: the event's MP4 (3) and its URL |

(1) ``lost``: out of view for ``events.lost_s`` (also when the camera or inference stops
delivering); ``stopped``: the daemon stopped or reloaded the stream while the event was open.
(2) capture time; for a file, its first frame's capture time plus the file's own timeline.
(3) from ``events.clip_pre_s`` before ``started`` to ``events.clip_post_s`` after ``ended``; it is
written once that much more has been recorded, so the file (and the URL) appear about
``clip_post_s`` after the ``end`` message; the URL answers 404 until then.

``event.<stream>`` also carries a ``camera`` message (``type`` camera) when the camera's state
changes (``stages.stream.health``): whether it is watched, so that "no violation" is never read
from a camera nobody watches:

| field | type | meaning |
|---|---|---|
| stream | str | stream id |
| site | str | the install's ``site`` name |
| event | str | ``camera_down``, ``camera_degraded`` or ``camera_up`` (watched again, or at last) |
| state | str | ``down`` (not watched), ``degraded`` (watched late or thinly) or ``watching`` |
| previous | str | the state before |
| reason | str | why it is not watching (empty while it is) |
| since | float | when the state began, Unix seconds |
| intended | bool | down by the operator's or the source's doing (paused, a file's end), not a fault |

``inferred.<stream>`` (inference's raw boxes for the stream stage) also passes the publish
endpoint; it is internal and may change without a version bump.

Unknown fields are ignored by readers, so fields can be added without a version bump;
removing or changing one bumps ``v``. Version 2 added people and the event lifecycle; version 3
made an event one per person (``zones`` and ``require`` for the one ``zone``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypedDict

import numpy as np

from pipeline.detections import Detections, class_name
from pipeline.messages import FrameBoxes, InferredMessage, WireMessage, box_fields, first_problem
from stages.stream.analysis import FrameAnalysis, Violation
from stages.stream.health import CameraHealth


def analysis_of(inferred: InferredMessage, clock: float | None = None) -> FrameAnalysis:
    """What the stream stage starts a frame's analysis from: inference's boxes."""
    detections = Detections(np.array(inferred.boxes, np.float32), inferred.scores, inferred.classes)
    return FrameAnalysis(
        inferred.stream,
        inferred.seq,
        inferred.captured,
        inferred.pts,
        inferred.width,
        inferred.height,
        detections,
        list(inferred.names),
        clock=clock,
    )


@dataclass
class DetectionMessage(FrameBoxes):
    """Published on ``det.<stream>``; see the module docstring for the fields."""

    TYPE: ClassVar[str] = "det"
    names: list[str]
    counts: dict[str, int]
    people: list[dict[str, Any]]
    latency_ms: float
    inference_ms: float
    batch_size: int
    drops: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_analysis(cls, analysis: FrameAnalysis, inferred: InferredMessage) -> DetectionMessage:
        """The one conversion from what the stream stage knows to what subscribers read."""
        detections = analysis.detections
        return cls(
            stream=analysis.stream,
            seq=analysis.seq,
            captured=analysis.captured,
            pts=analysis.pts,
            width=analysis.width,
            height=analysis.height,
            **box_fields(detections),
            names=[class_name(analysis.names, int(c)) for c in detections.class_id],
            counts=detections.counts(analysis.names),
            people=[asdict(person) for person in analysis.people],
            latency_ms=round((time.time() - analysis.captured) * 1e3, 2),
            inference_ms=inferred.inference_ms,
            batch_size=inferred.batch_size,
            drops=inferred.drops,
        )

    def problem(self) -> str | None:
        return first_problem(
            **self.box_problems(),
            names=len(self.names) == len(self.boxes),
            people=all(isinstance(p, dict) for p in self.people),
        )


class Evidence(TypedDict, total=False):
    """What sinks add to a violation phase before its ``EventMessage`` is made (``Sink.evidence``)."""

    snapshot: str | None  # annotated JPEG, the person highlighted
    snapshot_url: str | None  # the start's snapshot through the HTTP server
    segment: str | None  # recording that holds the moment, and where
    offset_s: float | None
    clip: str | None  # for ``end``: the event's MP4, written ``clip_post_s`` after the end
    clip_url: str | None


NO_EVIDENCE: Evidence = dict.fromkeys(Evidence.__annotations__)  # type: ignore[assignment]


@dataclass(frozen=True)
class EventMessage(WireMessage):
    """Published on ``event.<stream>``: one phase of a violation; see the module docstring. Made once
    per phase, and that one value goes to every output (event log, webhooks, MQTT, subscribers)."""

    TYPE: ClassVar[str] = "event"
    stream: str
    event_id: str
    phase: str
    track_id: int
    zones: list[str]
    require: list[str]
    missing: list[str]
    started: float
    ended: float | None
    duration_s: float
    reason: str | None
    seq: int
    captured: float
    box: list[float]
    snapshot: str | None
    snapshot_url: str | None
    segment: str | None
    offset_s: float | None
    clip: str | None
    clip_url: str | None

    @classmethod
    def from_violation(
        cls, analysis: FrameAnalysis, violation: Violation, box: list[float], evidence: Evidence
    ) -> EventMessage:
        """The one conversion from a processor's violation phase, with the person's ``box`` on the frame
        and what the sinks found (none given: None), to what every output of the event gets."""
        return cls(
            stream=analysis.stream,
            seq=analysis.seq,
            captured=analysis.captured,
            box=box,
            **asdict(violation),
            **{**NO_EVIDENCE, **evidence},
        )


CAMERA_EVENTS = {"down": "camera_down", "degraded": "camera_degraded", "watching": "camera_up"}


@dataclass(frozen=True)
class CameraMessage(WireMessage):
    """Published on ``event.<stream>`` and sent to the sinks when a camera's state changes; see the
    module docstring. Webhooks POST it as they do events, MQTT keeps it as the camera's state."""

    TYPE: ClassVar[str] = "camera"
    stream: str
    site: str
    event: str
    state: str
    previous: str
    reason: str
    since: float
    intended: bool

    @classmethod
    def of(cls, stream: str, site: str, health: CameraHealth, previous: str) -> CameraMessage:
        """The message for a camera now in ``health``, before in ``previous`` (empty: at start)."""
        event = CAMERA_EVENTS[health.state]
        return cls(stream, site, event, health.state, previous, health.reason, health.since, health.intended)
