"""Every message that crosses a process boundary: one versioned msgpack schema.

Subscribers read ``det.<stream>`` and ``event.<stream>`` topics: a two-frame ZeroMQ
message, the topic (UTF-8) then a msgpack map. Every map has ``v`` (the schema
version, now 1) and ``type``. Fields of a ``det`` message:

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
| latency_ms | float | capture -> publish |
| inference_ms | float | the batch's forward pass |
| batch_size | int | frames in that batch |
| drops | {stage: int} | frames of this stream dropped since the previous message, per stage |

Unknown fields are ignored by readers, so fields can be added without a version bump;
removing or changing one bumps ``v``.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar, get_type_hints

import msgpack

SCHEMA_VERSION = 1
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
        try:
            data = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as error:  # msgpack raises several unrelated types on garbage
            raise MessageError(f"not msgpack ({type(error).__name__})") from None
        if not isinstance(data, dict):
            raise MessageError("not a msgpack map")
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
class DetectionMessage(WireMessage):
    """Published on ``det.<stream>``; see the module docstring for the fields."""

    TYPE: ClassVar[str] = "det"
    stream: str
    seq: int
    captured: float
    pts: float | None
    width: int
    height: int
    boxes: list[list[float]]
    scores: list[float]
    classes: list[int]
    names: list[str]
    counts: dict[str, int]
    latency_ms: float
    inference_ms: float
    batch_size: int
    drops: dict[str, int] = field(default_factory=dict)
    source_slot: int = -1  # where render finds the original frame in the capture ring

    def problem(self) -> str | None:
        return _first_problem(
            size=self.width >= 1 and self.height >= 1,
            captured=_finite(self.captured) and (self.pts is None or _finite(self.pts)),
            boxes=len(self.boxes) == len(self.scores) == len(self.classes) == len(self.names)
            and all(isinstance(b, list) and len(b) == 4 and all(_finite(v) for v in b) for b in self.boxes),
            scores=all(_finite(v) for v in self.scores),
            classes=all(isinstance(c, int) and 0 <= c < MAX_CLASSES for c in self.classes),
        )


@dataclass
class EventMessage(WireMessage):
    """Published on ``event.<stream>``: a violation rule fired on this frame.

    ``snapshot`` is the annotated JPEG written under the recordings dir; ``segment`` and
    ``offset_s`` say where to watch it (None when the stream is not recorded).
    """

    TYPE: ClassVar[str] = "event"
    stream: str
    seq: int
    captured: float
    rule: dict[str, Any]
    frames_seen: int  # frames with the class in the rule's window
    boxes: list[list[float]]
    scores: list[float]
    classes: list[int]
    names: list[str]
    counts: dict[str, int]
    snapshot: str | None
    segment: str | None
    offset_s: float | None


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
