"""The config schema of vestwatch's stages, read from ``config.toml`` by ``pipeline.settings``."""

from __future__ import annotations

import os
import re
import socket
import tempfile
import urllib.parse
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, ValidationInfo, field_validator, model_validator

from pipeline.endpoints import Endpoint
from pipeline.httpauth import check_stored
from pipeline.settings import EnvOverridesFile

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_WEIGHTS = REPO_ROOT / "weights" / "vestwatch-yolov7-tiny.safetensors"
DEFAULT_EXCLUSIVE = [("vest", "no_vest"), ("hardhat", "no_hardhat")]
DEFAULT_CONFIG = REPO_ROOT / "config.toml"


class DetectorSettings(BaseModel, extra="forbid"):
    """The model and what NMS keeps; shared by ``vestwatch detect`` and the daemon."""

    weights: Path = BUNDLED_WEIGHTS
    device: str = "auto"  # cpu | cuda | cuda:N | auto
    img_size: int = Field(640, ge=32, le=4096)
    conf: float = Field(0.25, ge=0.0, le=1.0)
    iou: float = Field(0.45, ge=0.0, le=1.0)
    max_det: int = Field(300, ge=1)
    classes: list[int] | None = None  # keep only these class ids
    agnostic: bool = False  # NMS across classes
    names: list[str] | None = None  # for weights that carry no class names
    anchors: list[list[float]] | None = None  # per level, w,h pixel pairs: ONNX without the grid, if not YOLOv7's
    # classes one object cannot be at once: of two overlapping boxes (IoU above exclusive_iou) the
    # stronger stays. The default pairs apply where the model has both classes; listed pairs must.
    exclusive: list[tuple[str, str]] = Field(default_factory=lambda: list(DEFAULT_EXCLUSIVE))
    exclusive_iou: float = Field(0.5, ge=0.0, le=1.0)
    # a PyTorch model on a GPU replays its forward pass from CUDA graphs, one per batch size (padded
    # to a power of two) and input shape: fewer kernel launches per batch; off: always eager
    cuda_graphs: Literal["auto", "off"] = "auto"

    @field_validator("img_size")
    @classmethod
    def _stride_multiple(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"must be a multiple of 32, got {value}")
        return value

    @field_validator("weights")
    @classmethod
    def _relative_to_repo(cls, value: Path) -> Path:
        return value if value.is_absolute() or value.exists() else REPO_ROOT / value


DEMO_URL = "demo"
LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")
LIVE_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
STREAM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def is_camera(url: str) -> bool:
    return url.isdigit() or url.startswith("/dev/video")


def is_pictures(url: str) -> bool:
    """An image, or a folder of them."""
    path = Path(url)
    return "://" not in url and (path.suffix.lower() in IMAGE_SUFFIXES or path.is_dir())


def is_live(url: str) -> bool:
    return url.startswith(LIVE_SCHEMES) or is_camera(url) or url == DEMO_URL


AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(\S*)@")  # greedy: up to the last @ of the word
SECRET_QUERY = re.compile(
    r"([?&;#][^=&;#\s]*(?:token|pass|pw|secret|key|auth|sig|session|credential)[^=&;#\s]*=)[^&;#\s]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` (a URL, or a message quoting one) with passwords and secret query values replaced, for
    logs: ``rtsp://user:***@host/path?channel=1&token=***``. The user part ends at the last ``@``
    of the URL, so passwords holding ``@``, ``/`` or ``:`` are covered whole; a user name without
    a password may be a token and goes too.
    """

    def userinfo(match: re.Match) -> str:
        scheme, credentials = match[1], match[2]
        user, colon, _ = credentials.partition(":")
        if "/" in user:  # an @ in the path of a URL without credentials
            return match[0]
        return f"{scheme}{user}:***@" if colon else f"{scheme}***@"

    return SECRET_QUERY.sub(r"\1***", AUTHORITY.sub(userinfo, text))


@cache
def installed_plugins(group: str) -> list[str]:
    """Entry-point names of a plug-in group (scanning the installed packages takes milliseconds)."""
    return sorted(entry.name for entry in entry_points(group=group))


class ZoneSettings(BaseModel, extra="forbid"):
    """A named area of one camera's picture and the PPE a person standing in it must wear.

    ``polygon`` is in ``units`` (fractions of the frame's width and height, or pixels of the frame
    as processed: after ``pipeline.max_frame_pixels`` scales a larger camera down, so prefer
    fractions); none is the whole frame. A person is in the zone by the bottom centre of their box."""

    name: str = Field("site", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    polygon: list[tuple[float, float]] | None = Field(None, min_length=3)
    units: Literal["fraction", "pixel"] = "fraction"
    require: list[Literal["vest", "hardhat"]] = Field(default_factory=lambda: ["vest"], min_length=1)

    @model_validator(mode="after")
    def _fractions_within_the_frame(self) -> ZoneSettings:
        if self.units == "fraction" and any(not (0 <= v <= 1) for point in self.polygon or [] for v in point):
            raise ValueError(f'zone {self.name!r}: fractions must be within 0..1 (or set units = "pixel")')
        return self


class StreamSettings(BaseModel, extra="forbid"):
    """One source: ``rtsp://[user:pass@]host/path``, a camera index or ``/dev/videoN``, a video
    file, a folder of images, an image, or ``demo`` (the built-in slideshow of site pictures)."""

    id: str
    url: str
    realtime: bool | None = None  # live: drop the oldest frame when behind; default: true for live sources
    record: bool = True
    fps: float | None = Field(None, gt=0)  # take at most this many frames per second (the rest are skipped)
    # detect on at most this many frames per second; the others are still recorded, drawn with
    # the latest detections (a 30 fps camera recorded smoothly, detected 5 times a second)
    detect_fps: float | None = Field(None, gt=0)
    loop: bool = False  # files: start again at the end
    zones: list[ZoneSettings] = Field(default_factory=lambda: [ZoneSettings()], min_length=1)
    # what runs after inference, in order, by entry point name (groups vestwatch.processors, vestwatch.sinks)
    processors: list[str] = Field(default_factory=lambda: ["people", "zones"])
    sinks: list[str] = Field(
        default_factory=lambda: ["recorder", "live", "snapshots", "clips", "eventlog", "webhooks", "mqtt"]
    )

    @field_validator("processors", "sinks")
    @classmethod
    def _installed(cls, names: list[str], info: ValidationInfo) -> list[str]:
        group = f"vestwatch.{info.field_name}"
        installed = installed_plugins(group)
        unknown = [name for name in names if name not in installed]
        if unknown:
            raise ValueError(f"no {group} entry point named {unknown[0]!r} (installed: {', '.join(installed)})")
        return names

    @property
    def is_video(self) -> bool:
        """Video (a network stream, a file, the demo), not a V4L2 camera or pictures: what a recording of
        the camera's own packets (``recording.video = "camera"``) can copy, when it is H.264 or HEVC."""
        return not (is_camera(self.url) or is_pictures(self.url))

    @property
    def records(self) -> bool:
        """Recorded here: ``record`` and a ``recorder`` sink; capture then sends every frame to the stream stage."""
        return self.record and "recorder" in self.sinks

    @field_validator("zones")
    @classmethod
    def _unique_zone_names(cls, zones: list[ZoneSettings]) -> list[ZoneSettings]:
        names = [z.name for z in zones]
        if len(set(names)) < len(names):
            raise ValueError(f"zone names must be unique: {names}")
        return zones

    @field_validator("id")
    @classmethod
    def _id_is_a_name(cls, value: str) -> str:
        if not STREAM_ID.match(value):
            raise ValueError(f"{value!r} must be 1-64 letters, digits, '-' or '_'")
        return value

    @field_validator("url")
    @classmethod
    def _url_exists(cls, value: str) -> str:
        if not (is_live(value) or Path(value).exists()):
            raise ValueError(f"{redact(value)!r} is neither a live URL, a camera, 'demo' nor an existing path")
        return value

    @property
    def is_realtime(self) -> bool:
        return is_live(self.url) if self.realtime is None else self.realtime


def EndpointOf(*kinds: str) -> Any:  # noqa: N802 - reads as a type in field annotations
    """A field holding an endpoint string (``pub+bind:tcp://...``) whose socket type is one of ``kinds``."""

    def check(value: str) -> str:
        if Endpoint.parse(value).kind not in kinds:
            raise ValueError(f"{value!r} must be a {' or '.join(kinds)} endpoint")
        return value

    return Annotated[str, AfterValidator(check)]


STAGE_KINDS = ("capture", "preprocess", "inference", "stream")
StageKind = Literal["capture", "preprocess", "inference", "stream"]


class PipelineSettings(BaseModel, extra="forbid"):
    """Process counts, batching and queue bounds."""

    preprocess_workers: int = Field(2, ge=1, le=64)
    max_batch: int = Field(8, ge=1, le=256)
    max_wait_ms: float = Field(10.0, ge=0)
    ring_slots: int = Field(16, ge=4, le=1024)  # frames kept per stream in shared memory
    offline_window: int = Field(4, ge=1)  # frames of an offline stream in flight at once
    max_frame_pixels: int = Field(1920 * 1080, ge=64 * 64)  # larger frames are downscaled at capture
    publish_hwm: int = Field(1000, ge=1)  # messages queued per subscriber; a slow one loses the excess
    stall_s: float = Field(15.0, gt=0)  # a stage silent this long is restarted
    # fork the per-camera stages from one process that imported their code once (shared pages:
    # less memory per camera); off: each stage starts a fresh interpreter
    fork_server: bool = True
    # cameras whose capture (and whose stream stage) share one process, a thread each: each process's
    # own interpreter pages are paid once per group instead of per camera (see bench/RESULTS.md), at
    # the price that a failing stage restarts its whole group
    cameras_per_process: int = Field(1, ge=1, le=64)
    # where frames are letterboxed: in preprocess (CPU, into a ring per worker), or in inference on the
    # model's device from the capture rings (raw frames uploaded once: the GPU path); auto: inference
    # when the model runs on CUDA with PyTorch on this host, else preprocess
    letterbox: Literal["auto", "preprocess", "inference"] = "auto"
    # where video is decoded: cuda is NVDEC (frames copied back for the rings; codecs it lacks decode in
    # software); auto: cuda when an NVIDIA GPU is here and PyAV's FFmpeg drives it, falling back to the
    # CPU if it will not open
    decode: Literal["auto", "cpu", "cuda"] = "auto"
    rtsp_timeout_s: float = Field(5.0, gt=0)
    # a lost source is retried after reconnect_min_s, doubling up to reconnect_max_s (DeepStream's
    # rtsp-reconnect-interval-sec): a camera back after an outage gives frames within about that
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(5.0, gt=0)
    # Splitting the pipeline across hosts (see the README): which stages this host runs, where
    # preprocess meets inference (tcp:// carries the pixels inline), where detections come from
    stages: list[StageKind] = Field(default_factory=lambda: list(STAGE_KINDS), min_length=1)
    inference: EndpointOf("pull", "push") | None = None  # default pull+bind:ipc://<runtime_dir>/inference.ipc
    detections: EndpointOf("sub") | None = None  # default: this host's publish endpoint
    inline_jpeg_quality: int | None = Field(None, ge=1, le=100)  # inline pixels as JPEG; None: raw
    link_keys: Path | None = None  # CURVE keys (vestwatch keys DIR) for a tcp:// inference link; inference serves

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value} names a stage twice")
        if "capture" in value and "stream" not in value:  # it reads the capture ring: same host
            raise ValueError(f"{value}: a host with capture needs the stream stage too (it records and publishes)")
        return value

    @model_validator(mode="after")
    def _backoff_grows(self) -> PipelineSettings:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(f"reconnect_min_s {self.reconnect_min_s} exceeds reconnect_max_s {self.reconnect_max_s}")
        return self

    @model_validator(mode="after")
    def _window_fits_ring(self) -> PipelineSettings:
        if self.offline_window * 2 > self.ring_slots:
            raise ValueError(f"offline_window {self.offline_window} needs ring_slots >= {self.offline_window * 2}")
        return self


class WebhookSettings(BaseModel, extra="forbid"):
    """Where each violation event is POSTed as JSON (the ``event.<stream>`` message's fields)."""

    url: str = Field(pattern=r"^https?://")
    streams: list[str] | None = None  # only these streams' events; None: every stream
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. an Authorization token
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(5, ge=0)  # after the first attempt, with doubling back-off
    backoff_s: float = Field(1.0, gt=0)  # before the first retry
    queue: int = Field(1000, ge=1)  # events waiting per URL; beyond it the oldest goes, counted


class MqttSettings(BaseModel, extra="forbid"):
    """The MQTT broker every stream's events, states and counts go to (Home Assistant reads them)."""

    host: str
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool = False  # with the system's CAs, or ca_file
    ca_file: Path | None = None
    topic_prefix: str = Field("vestwatch", pattern=r"^[^#+]+$")
    discovery: bool = True  # Home Assistant MQTT discovery
    discovery_prefix: str = "homeassistant"
    queue: int = Field(1000, ge=1)  # messages held while the broker is away; beyond it they are counted


class RecordingSettings(BaseModel, extra="forbid"):
    # annotated: every frame re-encoded with the boxes, zones and people drawn on it (x264: the most
    # CPU and memory a camera costs). camera: the camera's own H.264/HEVC copied as it came, the
    # detections beside it in the sidecar (drawn by the review page); a source without such video
    # (a V4L2 camera, images) is recorded annotated all the same
    video: Literal["annotated", "camera"] = "annotated"
    segment_s: float = Field(60.0, ge=1)
    max_age_days: float = Field(7.0, gt=0)
    max_bytes: int = Field(50 * 2**30, gt=0)  # disk budget per stream
    crf: int = Field(26, ge=0, le=51)  # x264 quality: lower is better and larger
    # x264's speed: at 1080p "ultrafast" takes half the CPU of "veryfast" (5.3 against 10.6 ms a frame)
    # for files 1.7 times larger; the recorder is most of a 1080p camera's CPU, so this sizes a server
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    # below this much free space on the recordings' disk the oldest segments of any stream are
    # deleted to keep recording (checked every second and whenever a write fails)
    min_free_mb: int = Field(1000, ge=0)


class EventSettings(BaseModel, extra="forbid"):
    """When a person without a zone's required PPE becomes a violation event, and how it lives."""

    dwell_s: float = Field(2.0, ge=0)  # missing the item this long (capture time) opens an event
    update_s: float = Field(5.0, gt=0)  # an open event is re-announced at most this often
    lost_s: float = Field(3.0, gt=0)  # a person unseen this long has left: their event ends
    history: int = Field(5, ge=1, le=50)  # PPE observations a person's yes/no is the majority of
    min_conf: float = Field(0.25, ge=0, le=1)  # PPE boxes below this do not count
    clip_pre_s: float = Field(5.0, ge=0)  # an event's clip starts this long before it (at a keyframe)
    clip_post_s: float = Field(5.0, ge=0)  # and ends this long after it
    clip_max_s: float = Field(600.0, gt=0)  # a longer event's clip is its first this many seconds


@cache
def this_host() -> str:
    """This machine's name, looked up once: without working DNS the lookup may take seconds."""
    return socket.getfqdn()


def default_runtime_dir() -> Path:
    """systemd's RuntimeDirectory, else /run/vestwatch when writable (root), else the user's private
    runtime dir ($XDG_RUNTIME_DIR), else /tmp/vestwatch-<uid> (checked for owner and mode at start)."""
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    if os.access("/run", os.W_OK) and Path("/run/vestwatch").parent.exists():
        return Path("/run/vestwatch")
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "vestwatch"
    return Path(tempfile.gettempdir()) / f"vestwatch-{os.getuid()}"


class Settings(EnvOverridesFile):
    recordings_dir: Path = Path("recordings")
    runtime_dir: Path = Field(default_factory=default_runtime_dir)  # sockets and frame rings (tmpfs)
    publish: EndpointOf("pub") = "pub+bind:tcp://127.0.0.1:5560"  # where det.<stream> messages go
    control: EndpointOf("rep") | None = None  # vestwatch ctl's; default rep+bind:ipc://<runtime_dir>/control.ipc
    control_keys: Path | None = None  # CURVE keys (vestwatch keys DIR); required when control is tcp://
    # CURVE keys (vestwatch keys DIR) for the publish endpoint: only subscribers whose public key is in
    # DIR/clients get messages (vestwatch subscribe --keys DIR); this daemon's own stages use DIR's client key
    publish_keys: Path | None = None
    http: str | None = "127.0.0.1:8080"  # live view, /healthz and /metrics; None turns the server off
    # the secret for every page but /healthz, as 'vestwatch http-password' hashes it; required off loopback
    http_password_hash: Annotated[str, AfterValidator(check_stored)] | None = None
    http_tls_cert: Path | None = None  # with http_tls_key: HTTPS only
    http_tls_key: Path | None = None
    # how people and alert receivers reach the HTTP server, for the links in events
    # (e.g. https://site-server.example:8080); default: from http, this host's name when bound to all
    http_url: str | None = Field(None, pattern=r"^https?://[^/]+$")
    streams: list[StreamSettings] = Field(default_factory=lambda: [StreamSettings(id="demo", url=DEMO_URL)])
    detector: DetectorSettings = DetectorSettings()
    pipeline: PipelineSettings = PipelineSettings()
    recording: RecordingSettings = RecordingSettings()
    events: EventSettings = EventSettings()
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    mqtt: MqttSettings | None = None  # None: no MQTT

    @field_validator("streams")
    @classmethod
    def _unique_ids(cls, streams: list[StreamSettings]) -> list[StreamSettings]:
        ids = [s.id for s in streams]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"stream ids must be unique: {', '.join(duplicates)} repeated")
        return streams

    @field_validator("http")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.match(r"^[\w.:\[\]-]*:\d{1,5}$", value) or not 0 < int(value.rpartition(":")[2]) < 65536:
            raise ValueError(f"{value!r} must be HOST:PORT with a port from 1 to 65535")
        return value

    @field_validator("control_keys", "publish_keys")
    @classmethod
    def _keys_folder(cls, value: Path | None) -> Path | None:
        needed = ("server.key_secret", "server.key", "client.key_secret", "clients")
        missing = [name for name in needed if value is not None and not (value / name).exists()]
        if missing:
            raise ValueError(f"{value} lacks {missing[0]} (create the folder with 'vestwatch keys DIR')")
        return value

    @model_validator(mode="after")
    def _http_off_loopback_is_authenticated(self) -> Settings:
        host = (self.http or "").rpartition(":")[0]
        if self.http and host not in LOOPBACK and self.http_password_hash is None:
            raise ValueError(f"http {self.http!r} is off loopback: set http_password_hash ('vestwatch http-password')")
        if (self.http_tls_cert is None) != (self.http_tls_key is None):
            raise ValueError("http_tls_cert and http_tls_key go together")
        for path in (self.http_tls_cert, self.http_tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file (http TLS)")
        return self

    @model_validator(mode="after")
    def _tcp_control_is_authenticated(self) -> Settings:
        if self.control and "tcp://" in self.control and self.control_keys is None:
            raise ValueError("a tcp:// control endpoint needs control_keys (create them with 'vestwatch keys DIR')")
        return self

    @property
    def control_endpoint(self) -> Endpoint:
        return Endpoint.parse(self.control or f"rep+bind:ipc://{self.runtime_dir}/control.ipc")

    def copies_packets(self, stream: StreamSettings) -> bool:
        """Whether capture sends ``stream``'s own packets to be recorded (``recording.video = "camera"``
        and a video source), rather than its frames; capture and the stream stage size their queue by it."""
        return self.recording.video == "camera" and stream.is_video

    def stream(self, stream_id: str) -> StreamSettings:
        return next(s for s in self.streams if s.id == stream_id)

    @property
    def events_db(self) -> Path:
        """Every stream's events and their acknowledgements (stages.recording.eventstore)."""
        return self.recordings_dir / "events.sqlite3"

    @property
    def http_hosts(self) -> frozenset[str]:
        """The names the HTTP server answers for without a password: loopback's, its own address's,
        ``http_url``'s (a page elsewhere whose name is rebound to 127.0.0.1 gets nothing)."""
        own = (self.http or "").rpartition(":")[0].lower()
        public = urllib.parse.urlsplit(self.http_url).hostname if self.http_url else None
        return frozenset({*LOOPBACK, own, *([public] if public else [])})

    def link(self, path: str) -> str | None:
        """The URL of an HTTP path as receivers of an event should use it; None when HTTP is off."""
        if self.http is None:
            return None
        if self.http_url:
            return self.http_url + path
        host, _, port = self.http.rpartition(":")
        host = this_host() if host in ("", "0.0.0.0", "::", "[::]") else host
        return f"{'https' if self.http_tls_cert else 'http'}://{host}:{port}{path}"
