"""The daemon's whole config, ``config.toml``'s top level: its sockets, its HTTP server and every section."""

from __future__ import annotations

import os
import re
import socket
import tempfile
import urllib.parse
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.endpoints import Endpoint
from pipeline.httpauth import check_stored
from pipeline.settings import EnvOverridesFile
from stages.capture.sources.kinds import DEMO_URL
from stages.config.detector import DetectorSettings
from stages.config.events import EventSettings
from stages.config.outputs import MqttSettings, WebhookSettings
from stages.config.pipeline import EndpointOf, PipelineSettings
from stages.config.privacy import PrivacySettings
from stages.config.recording import RecordingSettings
from stages.config.streams import StreamSettings, plugin_settings_model
from stages.recording.paths import events_db

LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


@cache
def this_host() -> str:
    """This machine's name, looked up once: without working DNS the lookup may take seconds."""
    return socket.getfqdn()


def default_site() -> str:
    """The host's short name, in the letters a site name may have (``Site-Server.local`` -> ``site-server``)."""
    name = re.sub(r"[^a-z0-9_-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")
    return name[:64] or "vestwatch"


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
    """All of ``config.toml``; ``VESTWATCH_<SECTION>__<KEY>`` variables override it."""

    site: str = Field(
        default_factory=default_site,
        pattern=r"^[a-z0-9_-]{1,64}$",
        description="this install's name, in MQTT client ids, topics and Home Assistant devices, so that two sites "
        "on one broker never collide; default: the host's name",
    )
    recordings_dir: Path = Field(
        Path("recordings"), description="each stream's recordings, snapshots and clips, and the events database"
    )
    runtime_dir: Path = Field(
        default_factory=default_runtime_dir,
        description="sockets and frame rings (tmpfs); default: systemd's RuntimeDirectory, /run/vestwatch as "
        "root, else $XDG_RUNTIME_DIR/vestwatch or /tmp/vestwatch-<uid>",
    )
    publish: EndpointOf("pub") = Field("pub+bind:tcp://127.0.0.1:5560", description="where det.<stream> messages go")
    control: EndpointOf("rep") | None = Field(
        None, description="vestwatch ctl's; default rep+bind:ipc://<runtime_dir>/control.ipc"
    )
    control_keys: Path | None = Field(
        None, description="CURVE keys (vestwatch keys DIR); required when control is tcp://"
    )
    publish_keys: Path | None = Field(
        None,
        description="CURVE keys (vestwatch keys DIR) for the publish endpoint: only subscribers whose public key is "
        "in DIR/clients get messages (vestwatch subscribe --keys DIR); this daemon's own stages use DIR's client key",
    )
    http: str | None = Field(
        "127.0.0.1:8080", description="live view, /healthz and /metrics; None turns the server off"
    )
    http_password_hash: Annotated[str, AfterValidator(check_stored)] | None = Field(
        None,
        description="the secret for every page but /healthz, as 'vestwatch http-password' hashes it; required off "
        "loopback",
    )
    http_tls_cert: Path | None = Field(None, description="with http_tls_key: HTTPS only")
    http_tls_key: Path | None = Field(None, description="the certificate's private key (PEM), with http_tls_cert")
    http_url: str | None = Field(
        None,
        pattern=r"^https?://[^/]+$",
        description="how people and alert receivers reach the HTTP server, for the links in events "
        "(e.g. https://site-server.example:8080); default: from http, this host's name when bound to all",
    )
    streams: list[StreamSettings] = Field(
        default_factory=lambda: [StreamSettings(id="demo", url=DEMO_URL)],
        description="the sources; default: the built-in demo slideshow",
    )
    detector: DetectorSettings = Field(DetectorSettings(), description="the model and what NMS keeps")
    pipeline: PipelineSettings = Field(PipelineSettings(), description="process counts, batching and queue bounds")
    recording: RecordingSettings = Field(RecordingSettings(), description="how streams are recorded and kept")
    events: EventSettings = Field(EventSettings(), description="when a person without PPE becomes an event")
    webhooks: list[WebhookSettings] = Field(
        default_factory=list, description="where each violation event is POSTed as JSON"
    )
    mqtt: MqttSettings | None = Field(None, description="None: no MQTT")
    privacy: PrivacySettings = Field(PrivacySettings(), description="what is blurred, and for whom it is not")
    # the sections of installed stream plug-ins' own ([tally] for the sink "tally"), by plugin_section
    _plugin_sections: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _plugin_sections_apart(cls, values: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """A top-level section an installed processor or sink declares is validated by its model; any
        other unknown key is refused, as ever."""
        sections = {}
        if isinstance(values, dict):
            values = dict(values)
            for key in [key for key in values if key not in cls.model_fields]:
                model = plugin_settings_model(key)
                if model is not None:
                    sections[key] = _section(key, model, values.pop(key))
        settings = handler(values)
        settings._plugin_sections = sections
        return settings

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
    def _faces_only_for_the_authenticated(self) -> Settings:
        if self.privacy.reviewers_see_faces and self.http_password_hash is None:
            raise ValueError(
                "privacy.reviewers_see_faces needs http_password_hash: else anyone reaching the page sees faces"
            )
        if self.privacy.reviewer_password_hash and not self.privacy.reviewers_see_faces:
            raise ValueError("privacy.reviewer_password_hash shows faces to nobody without reviewers_see_faces = true")
        return self

    def blurs_recording(self, stream: StreamSettings) -> bool:
        """Whether ``stream``'s recording hides what ``privacy.blur`` hides: drawn frames, blurred (the
        camera's own copied packets cannot be)."""
        return bool(self.privacy.blur) and self.privacy.blur_recordings and not self.copies_packets(stream)

    def serves_recording(self, stream: StreamSettings) -> bool:
        """Whether ``stream``'s recording (and so its clips) may leave the server as it is: nothing is to be
        blurred, or it was."""
        return not self.privacy.blur or self.blurs_recording(stream)

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

    def plugin_section(self, name: str) -> Any:
        """A stream plug-in's own section, as its ``settings_model`` made it; None when the config has none."""
        return self._plugin_sections.get(name)

    def plugin_sections(self) -> dict[str, Any]:
        """Every stream plug-in's own section as JSON: what a stream stage reads at start besides its stream."""
        return {name: section.model_dump(mode="json") for name, section in self._plugin_sections.items()}

    @property
    def events_db(self) -> Path:
        """Every stream's events and their acknowledgements (stages.recording.eventstore)."""
        return events_db(self.recordings_dir)

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


def _section(key: str, model: type[BaseModel], value: object) -> BaseModel:
    """``value`` as ``model``; its errors named from the top (``tally.every``), as the built-in sections' are."""
    try:
        return model.model_validate(value)
    except ValidationError as error:
        details = [
            {"type": e["type"], "loc": (key, *e["loc"]), "input": e["input"], "ctx": e.get("ctx", {})}
            for e in error.errors()
        ]
        raise ValidationError.from_exception_data(model.__name__, details) from None  # type: ignore[arg-type]
