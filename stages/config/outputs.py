"""``[[webhooks]]`` and ``[mqtt]``: where events go besides the publish socket."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import unicodedata
import urllib.parse
from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator

from stages.capture.sources.kinds import redact

TOPIC_PREFIX_MAX = 200  # characters; with site, stream and zone names (64 each) far within MQTT's 65535 bytes


def link_local(host: str) -> bool:
    """Whether ``host`` is a link-local address in any spelling the resolver takes (``169.254.169.254``,
    ``2852039166``, ``::ffff:169.254.169.254``, ``fe80::1%eth0``); a name is not looked up."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))  # the decimal, hex and short forms
        except (OSError, ValueError):
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_link_local


class WebhookSettings(BaseModel, extra="forbid"):
    """Where each violation event is POSTed as JSON (the ``event.<stream>`` message's fields)."""

    url: str = Field(pattern=r"^https?://", description="the receiver, http:// or https://")
    streams: list[str] | None = Field(None, description="only these streams' events; None: every stream")
    headers: dict[str, str] = Field(default_factory=dict, description="e.g. an Authorization token")
    timeout_s: float = Field(5.0, gt=0, description="a POST unanswered this long has failed")
    retries: int = Field(5, ge=0, description="after the first attempt, with doubling back-off")
    backoff_s: float = Field(1.0, gt=0, description="before the first retry")
    queue: int = Field(1000, ge=1, description="events waiting per URL; beyond it the oldest goes, counted")
    allow_link_local: bool = Field(
        False,
        description="a url whose host is a link-local address (169.254.0.0/16, fe80::/10) is refused unless set: "
        "there a cloud's metadata service (169.254.169.254) would get the events and their headers",
    )

    @model_validator(mode="after")
    def _not_link_local(self) -> WebhookSettings:
        host = urllib.parse.urlsplit(self.url).hostname or ""
        if link_local(host) and not self.allow_link_local:
            raise ValueError(
                f"url {redact(self.url)!r}: {host} is link-local, where a cloud's metadata service listens; "
                "set allow_link_local = true if this receiver is meant"
            )
        return self


class MqttSettings(BaseModel, extra="forbid"):
    """The MQTT broker every stream's events, states and counts go to (Home Assistant reads them)."""

    host: str = Field(description="the broker's host name or address")
    port: int = Field(1883, ge=1, le=65535, description="the broker's port")
    username: str | None = Field(None, description="for the broker; None: anonymous")
    password: str | None = Field(None, description="the username's")
    tls: bool = Field(False, description="with the system's CAs, or ca_file")
    ca_file: Path | None = Field(
        None,
        description="the CA certificates (PEM) that check the broker's, with tls; one that does not load is refused",
    )
    topic_prefix: str = Field(
        "vestwatch",
        description="topics are <topic_prefix>/<site>/<stream>/...: levels joined by '/', none empty; no MQTT "
        f"wildcards, control characters or leading '$'; at most {TOPIC_PREFIX_MAX} characters, so that every topic "
        "stays far within MQTT's 65535 bytes",
    )
    discovery: bool = Field(True, description="Home Assistant MQTT discovery")
    discovery_prefix: str = Field(
        "homeassistant", description="where Home Assistant looks for discovery topics; the same rules as topic_prefix"
    )
    queue: int = Field(1000, ge=1, description="messages held while the broker is away; beyond it they are counted")

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        """A prefix the broker takes: one it refuses is only seen once paho has a message to send, and then
        paho's thread dies (a wildcard), the broker drops the connection on every try (a control character)
        or denies every publish while acknowledging it (``$``)."""
        if len(value) > TOPIC_PREFIX_MAX:
            raise ValueError(f"must be at most {TOPIC_PREFIX_MAX} characters, not {len(value)}")
        if "" in value.split("/"):
            raise ValueError(f"{value!r} must be levels joined by '/', none empty (no leading, trailing or double '/')")
        if value.startswith("$"):
            raise ValueError(f"{value!r} must not start with '$': the broker keeps such topics ($SYS) to itself")
        for char in value:
            noncharacter = 0xFDD0 <= ord(char) <= 0xFDEF or ord(char) & 0xFFFE == 0xFFFE
            if char in "#+" or unicodedata.category(char) in ("Cc", "Cs") or noncharacter:
                raise ValueError(
                    f"{value!r} must not hold {char!r}: no MQTT wildcard, control character or non-character"
                )
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file_loads(cls, value: Path | None) -> Path | None:
        """Loaded now as paho will: a CA file it cannot load leaves the stream with no broker."""
        if value is None:
            return value
        if not value.is_file():
            raise ValueError(f"{value}: {'not a file' if value.exists() else 'no such file'}")
        try:
            ssl.create_default_context(cafile=value)
        except ssl.SSLError as error:
            raise ValueError(f"{value}: no CA certificate (PEM) in it ({error.reason})") from None
        except OSError as error:
            raise ValueError(f"{value}: cannot read it ({error.strerror})") from None
        return value
