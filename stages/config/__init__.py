"""The config schema of vestwatch's stages, read from ``config.toml`` by ``pipeline.settings``: a module per
section (``detector``, ``streams``, ``pipeline``, ``recording``, ``events``, ``outputs``) and ``daemon`` for the
top level, ``Settings``. Every field says what it does in its ``description``.

>>> Settings(detector=DetectorSettings(conf=0.4)).streams[0].url  # no file: the defaults run the demo
'demo'
"""

from stages.capture.sources.kinds import DEMO_URL, IMAGE_SUFFIXES, LIVE_SCHEMES, is_live, redact
from stages.config.daemon import LOOPBACK, Settings, default_runtime_dir, this_host
from stages.config.detector import DEFAULT_EXCLUSIVE, DetectorSettings
from stages.config.events import EventSettings
from stages.config.outputs import MqttSettings, WebhookSettings
from stages.config.pipeline import STAGE_KINDS, EndpointOf, PipelineSettings, StageKind
from stages.config.recording import RecordingSettings
from stages.config.shipped import BUNDLED_WEIGHTS, DEFAULT_CONFIG, REPO_ROOT
from stages.config.streams import STREAM_ID, StreamSettings, ZoneSettings, installed_plugins

__all__ = [
    "BUNDLED_WEIGHTS",
    "DEFAULT_CONFIG",
    "DEFAULT_EXCLUSIVE",
    "DEMO_URL",
    "IMAGE_SUFFIXES",
    "LIVE_SCHEMES",
    "LOOPBACK",
    "REPO_ROOT",
    "STAGE_KINDS",
    "STREAM_ID",
    "DetectorSettings",
    "EndpointOf",
    "EventSettings",
    "MqttSettings",
    "PipelineSettings",
    "RecordingSettings",
    "Settings",
    "StageKind",
    "StreamSettings",
    "WebhookSettings",
    "ZoneSettings",
    "default_runtime_dir",
    "installed_plugins",
    "is_live",
    "redact",
    "this_host",
]
