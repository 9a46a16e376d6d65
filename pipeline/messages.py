"""Every message that crosses a process boundary: one versioned msgpack schema.

Subscribers read ``det.<stream>`` and ``event.<stream>`` topics: a two-frame ZeroMQ
message, the topic (UTF-8) then a msgpack map. Every map has ``v`` (the schema
version, now 2) and ``type``. Fields of a ``det`` message (one per inferred frame):

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

An ``event`` message is one phase of one violation: a person in a zone without the PPE
the zone requires, for at least ``events.dwell_s``:

| field | type | meaning |
|---|---|---|
| stream | str | stream id |
| event_id | str | the same for every phase of one violation |
| phase | str | ``start``, ``update`` (every ``events.update_s``, and when ``missing`` changes) or ``end`` |
| track_id | int | the person |
| zone | str | the zone's name |
| missing | [str] | required items the person is seen without (``vest``, ``hardhat``) |
| started | float | when the person was first seen without them, Unix seconds (2) |
| ended | float or nil | set on ``end`` |
| duration_s | float | so far, or in all on ``end`` |
| reason | str or nil | on ``end``: ``left`` (out of the zone for ``lost_s``), ``complied``, ``lost`` (1) |
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

``inferred.<stream>`` (inference's raw boxes for the stream stage) also passes the publish
endpoint; it is internal and may change without a version bump.

Unknown fields are ignored by readers, so fields can be added without a version bump;
removing or changing one bumps ``v``. Version 2 added people and the event lifecycle.
"""

from __future__ import annotations

import math
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar, get_type_hints

import msgpack
import numpy as np

from pipeline.analysis import FrameAnalysis, Violation
from pipeline.detections import Detections, class_name

SCHEMA_VERSION = 2
MAX_CLASSES = 1000  # class ids in a det message are below this


class MessageError(ValueError):
    """Bytes that are not a valid message of the expected type."""


Message = TypeVar("Message", bound="WireMessage")


@dataclass
class WireMessage:
    TYPE: ClassVar[str] = ""

    def encode(self) -> bytes:
        return msgpack.packb({"v": SCHEMA_VERSION, "type": self.TYPE, **asdict(self)}, use_bin_type=True)

    @classmethod
    def decode(cls: type[Message], payload: bytes) -> Message:
        return cls._from_map(_unpack(payload))

    @classmethod
    def _from_map(cls: type[Message], data: dict) -> Message:
        if data.get("v") != SCHEMA_VERSION or data.get("type") != cls.TYPE:
            raise MessageError(f"expected {cls.TYPE} v{SCHEMA_VERSION}, got {data.get('type')} v{data.get('v')}")
        hints = get_type_hints(cls)
        values = {}
        for f in fields(cls):
            if f.name not in data:
                if f.default is not MISSING or f.default_factory is not MISSING:
                    continue
                raise MessageError(f"{cls.TYPE}: missing field {f.name!r}")
            values[f.name] = _checked(cls.TYPE, f.name, data[f.name], hints[f.name])
        message = cls(**values)
        problem = message.problem()
        if problem:
            raise MessageError(f"{cls.TYPE}: {problem}")
        return message

    def problem(self) -> str | None:
        """What makes well-typed fields unusable together (a negative slot, lists of unequal
        length); None when nothing does. Checked on decode, so no stage acts on it."""
        return None


def _unpack(payload: bytes) -> dict:
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as error:  # msgpack raises several unrelated types on garbage
        raise MessageError(f"not msgpack ({type(error).__name__})") from None
    if not isinstance(data, dict):
        raise MessageError("not a msgpack map")
    return data


def decode_one_of(payload: bytes, kinds: tuple[type[WireMessage], ...]) -> WireMessage:
    """A message of whichever of ``kinds`` its ``type`` names (one socket carrying several)."""
    data = _unpack(payload)
    kind = next((k for k in kinds if data.get("type") == k.TYPE), kinds[0])
    return kind._from_map(data)


def _checked(kind: str, name: str, value: Any, hint: Any) -> Any:
    """A shallow type check, enough to keep garbage out of the stages."""
    text = str(hint)
    allowed: tuple[type, ...]
    if text.startswith(("list", "typing.List")):
        allowed = (list,)
    elif text.startswith(("dict", "typing.Dict")):
        allowed = (dict,)
    elif hint is float or text.startswith("float"):
        allowed = (float, int)
    elif hint is int:
        allowed = (int,)
    elif hint is str:
        allowed = (str,)
    elif hint is bool:
        allowed = (bool,)
    else:
        return value
    if value is None and "None" in text:
        return value
    if isinstance(value, allowed) and not (allowed == (int,) and isinstance(value, bool)):
        return value
    raise MessageError(f"{kind}: field {name!r} has type {type(value).__name__}")


@dataclass
class FrameRef(WireMessage):
    """Capture -> preprocess: a frame in the stream's shared-memory ring."""

    TYPE: ClassVar[str] = "frame"
    stream: str
    seq: int
    slot: int
    captured: float
    pts: float | None
    realtime: bool
    drops: int = 0  # capture-side drops since the previous ref

    def problem(self) -> str | None:
        return _first_problem(seq=self.seq >= 1, slot=self.slot >= 0, drops=self.drops >= 0)


@dataclass
class EncodedPacket(WireMessage):
    """Capture -> stream stage: one compressed frame of the source, to be recorded as it came
    (``recording.video = "camera"``); small enough (some 10 KiB at 1080p) to travel inline. A
    keyframe names the codec and picture size, so that a recording can start at any of them."""

    TYPE: ClassVar[str] = "packet"
    stream: str
    captured: float  # when capture read it, Unix seconds
    pts: int | None
    dts: int | None
    time_base: list[int]  # [numerator, denominator]
    keyframe: bool
    data: bytes
    codec: str = ""  # on keyframes: FFmpeg's codec name (h264, hevc)
    width: int = 0
    height: int = 0

    def problem(self) -> str | None:
        tb = self.time_base
        valid_tb = len(tb) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in tb)
        return _first_problem(
            time_base=valid_tb,
            data=isinstance(self.data, bytes) and len(self.data) > 0,
            codec=self.codec in ("", "h264", "hevc"),
            size=self.width >= 0 and self.height >= 0,
        )

    @property
    def pts_s(self) -> float | None:
        return None if self.pts is None else self.pts * self.time_base[0] / self.time_base[1]


@dataclass
class Batchable(WireMessage):
    """Preprocess -> inference: a letterboxed frame in a worker's ring (or inline, between hosts),
    with what maps boxes back."""

    TYPE: ClassVar[str] = "batchable"
    stream: str
    seq: int
    ring: str
    slot: int
    ring_seq: int
    source_slot: int
    width: int
    height: int
    ratio: float
    pad: list[float]
    captured: float
    pts: float | None
    realtime: bool
    drops: dict[str, int] = field(default_factory=dict)
    pixels: bytes | None = None  # the frame itself when inference is on another host (pipeline.frames.pack_pixels)
    pixels_format: str = ""  # "bgr" or "jpeg"
    pixels_shape: list[int] = field(default_factory=list)  # [h, w, 3]

    def problem(self) -> str | None:
        return _first_problem(
            slot=self.slot >= 0 or self.pixels is not None,  # -1: the pixels are inline
            ring_seq=self.ring_seq >= 0,
            source_slot=self.source_slot >= 0,
            size=self.width >= 1 and self.height >= 1,
            ratio=self.ratio > 0,
            pad=len(self.pad) == 2 and all(isinstance(v, (int, float)) for v in self.pad),
        )


@dataclass
class FrameBoxes(WireMessage):
    """What inference found on one frame: the fields ``inferred`` and ``det`` messages share."""

    stream: str
    seq: int
    captured: float
    pts: float | None
    width: int
    height: int
    boxes: list[list[float]]
    scores: list[float]
    classes: list[int]

    def box_problems(self) -> dict[str, bool]:
        """The checks both messages make, by field."""
        return {
            "size": self.width >= 1 and self.height >= 1,
            "captured": _finite(self.captured) and (self.pts is None or _finite(self.pts)),
            "boxes": len(self.boxes) == len(self.scores) == len(self.classes)
            and all(isinstance(b, list) and len(b) == 4 and all(_finite(v) for v in b) for b in self.boxes),
            "scores": all(_finite(v) for v in self.scores),
            "classes": all(isinstance(c, int) and 0 <= c < MAX_CLASSES for c in self.classes),
        }


@dataclass
class InferredMessage(FrameBoxes):
    """Inference -> the stream's stage (internal, topic ``inferred.<stream>``): one frame's boxes."""

    TYPE: ClassVar[str] = "inferred"
    names: list[str]  # the model's class names, by id
    inference_ms: float
    batch_size: int
    drops: dict[str, int] = field(default_factory=dict)
    source_slot: int = -1  # where the stream stage finds the original frame in the capture ring

    def problem(self) -> str | None:
        return _first_problem(
            **self.box_problems(),
            names=len(self.names) <= MAX_CLASSES and all(isinstance(n, str) for n in self.names),
        )

    def analysis(self, clock: float | None = None) -> FrameAnalysis:
        detections = Detections(np.array(self.boxes, np.float32), self.scores, self.classes)
        return FrameAnalysis(
            self.stream,
            self.seq,
            self.captured,
            self.pts,
            self.width,
            self.height,
            detections,
            list(self.names),
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
        return _first_problem(
            **self.box_problems(),
            names=len(self.names) == len(self.boxes),
            people=all(isinstance(p, dict) for p in self.people),
        )


@dataclass
class EventMessage(WireMessage):
    """Published on ``event.<stream>``: one phase of a violation; see the module docstring."""

    TYPE: ClassVar[str] = "event"
    stream: str
    event_id: str
    phase: str
    track_id: int
    zone: str
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
    def from_violation(cls, analysis: FrameAnalysis, violation: Violation) -> EventMessage:
        fields_ = asdict(violation)
        return cls(stream=analysis.stream, seq=analysis.seq, captured=analysis.captured, **fields_)


@dataclass
class Heartbeat(WireMessage):
    """Stage -> supervisor, every second: alive, and what the stage wants to report."""

    TYPE: ClassVar[str] = "heartbeat"
    stage: str
    pid: int
    state: str = "running"
    stats: dict[str, Any] = field(default_factory=dict)


def _finite(value: object) -> bool:
    """A real number a stage can compute with: not NaN, not infinite, not a string."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _first_problem(**valid: bool) -> str | None:
    """The first field whose check failed, as a reason."""
    return next((f"field {name!r} out of range" for name, ok in valid.items() if not ok), None)


def box_fields(detections: Detections) -> dict[str, list]:
    """``boxes``, ``scores`` and ``classes`` of a message, rounded as they travel."""
    return {
        "boxes": detections.xyxy.round(2).tolist(),
        "scores": detections.confidence.round(4).tolist(),
        "classes": detections.class_id.tolist(),
    }


def topic(prefix: str, stream: str) -> bytes:
    return f"{prefix}.{stream}".encode()


@dataclass
class ControlState(WireMessage):
    """Supervisor -> every stage, on each change and every second: the live overrides.

    ``overrides`` maps ``*`` (all streams) or a stream id to setting values, e.g.
    ``{"*": {"conf": 0.4}, "gate": {"iou": 0.5}}``; ``paused`` lists paused streams.
    """

    TYPE: ClassVar[str] = "control"
    overrides: dict[str, dict[str, float]] = field(default_factory=dict)
    paused: list[str] = field(default_factory=list)


@dataclass
class ControlRequest(WireMessage):
    """``vestwatch ctl`` -> supervisor: ``status``, ``set`` (key, value, stream?), ``pause``/``resume`` (stream)."""

    TYPE: ClassVar[str] = "request"
    command: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ControlReply(WireMessage):
    TYPE: ClassVar[str] = "reply"
    ok: bool
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
