"""Every message that crosses a process boundary inside the daemon: one versioned msgpack schema.

Every map has ``v`` (the schema version, now 2) and ``type``; a message is a dataclass whose
fields are checked by type and range on decoding, so a malformed one is refused with its
reason rather than half-read. What subscribers read (``det.<stream>`` and ``event.<stream>``)
is built on ``WireMessage`` by the stages that publish it: ``stages/stream/messages.py``
documents those topics field by field.

Unknown fields are ignored by readers, so fields can be added without a version bump;
removing or changing one bumps ``v``.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar, get_type_hints

import msgpack

from pipeline.detections import Detections

SCHEMA_VERSION = 3
MAX_CLASSES = 1000  # class ids in a det message are below this


class MessageError(ValueError):
    """Bytes that are not a valid message of the expected type."""


Message = TypeVar("Message", bound="WireMessage")


class WireMessage:
    """The base of every message: each kind is a dataclass on it (frozen or not: the base, being
    no dataclass itself, leaves that to the kind)."""

    TYPE: ClassVar[str] = ""

    def encode(self) -> bytes:
        return msgpack.packb({"v": SCHEMA_VERSION, "type": self.TYPE, **asdict(self)}, use_bin_type=True)

    def to_json(self) -> bytes:
        """The map ``encode`` packs, as JSON: what webhooks POST and MQTT publishes (no bytes fields)."""
        return json.dumps({"v": SCHEMA_VERSION, "type": self.TYPE, **asdict(self)}).encode()

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
    record: bool = True  # to the stream stage: to be recorded; False: only kept for its results' sake
    detected: bool = True  # to the stream stage: sent for detection too (results may come); False: recorded only

    def problem(self) -> str | None:
        return first_problem(seq=self.seq >= 1, slot=self.slot >= 0, drops=self.drops >= 0)


@dataclass
class SourceStatus(WireMessage):
    """Capture -> stream stage, once a second and at each change: how the source is doing, so that
    the stage that speaks for the stream can say when it is not watched (``stages.stream.health``)."""

    TYPE: ClassVar[str] = "source_status"
    stream: str
    state: str  # connecting, connected, reconnecting, ended
    reason: str = ""  # why the source was lost, while reconnecting
    frame_age_s: float | None = None  # since the source's last frame; None: none yet
    fps_in: float = 0.0
    paused: bool = False


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
        return first_problem(
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
        return first_problem(
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
        return first_problem(
            **self.box_problems(),
            names=len(self.names) <= MAX_CLASSES and all(isinstance(n, str) for n in self.names),
        )


@dataclass
class Heartbeat(WireMessage):
    """Stage -> supervisor, every second: alive, and what the stage wants to report. Sent by the stage's
    own thread, also while its work is in one long step or in its setup: ``busy_s`` says how long that
    step (or setup) has run, so that a slow step is told from a hung one."""

    TYPE: ClassVar[str] = "heartbeat"
    stage: str
    pid: int
    state: str = "running"
    stats: dict[str, Any] = field(default_factory=dict)
    busy_s: float = 0.0


def _finite(value: object) -> bool:
    """A real number a stage can compute with: not NaN, not infinite, not a string."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def first_problem(**valid: bool) -> str | None:
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
