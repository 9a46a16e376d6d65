"""``[[webhooks]]`` and ``[mqtt]``: where events go besides the publish socket."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class WebhookSettings(BaseModel, extra="forbid"):
    """Where each violation event is POSTed as JSON (the ``event.<stream>`` message's fields)."""

    url: str = Field(pattern=r"^https?://", description="the receiver, http:// or https://")
    streams: list[str] | None = Field(None, description="only these streams' events; None: every stream")
    headers: dict[str, str] = Field(default_factory=dict, description="e.g. an Authorization token")
    timeout_s: float = Field(5.0, gt=0, description="a POST unanswered this long has failed")
    retries: int = Field(5, ge=0, description="after the first attempt, with doubling back-off")
    backoff_s: float = Field(1.0, gt=0, description="before the first retry")
    queue: int = Field(1000, ge=1, description="events waiting per URL; beyond it the oldest goes, counted")


class MqttSettings(BaseModel, extra="forbid"):
    """The MQTT broker every stream's events, states and counts go to (Home Assistant reads them)."""

    host: str = Field(description="the broker's host name or address")
    port: int = Field(1883, ge=1, le=65535, description="the broker's port")
    username: str | None = Field(None, description="for the broker; None: anonymous")
    password: str | None = Field(None, description="the username's")
    tls: bool = Field(False, description="with the system's CAs, or ca_file")
    ca_file: Path | None = Field(None, description="the CA certificates (PEM) that check the broker's, with tls")
    topic_prefix: str = Field(
        "vestwatch", pattern=r"^[^#+]+$", description="topics are <topic_prefix>/<site>/<stream>/...; no MQTT wildcards"
    )
    discovery: bool = Field(True, description="Home Assistant MQTT discovery")
    discovery_prefix: str = Field("homeassistant", description="where Home Assistant looks for discovery topics")
    queue: int = Field(1000, ge=1, description="messages held while the broker is away; beyond it they are counted")
