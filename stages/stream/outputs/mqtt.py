"""The ``mqtt`` sink: a stream's violations, states and counts on an MQTT broker, for Home Assistant.

Topics, under ``<topic_prefix>/<site>/<stream>/`` (``site``: the install's name, so that two sites
on one broker never collide):

- ``events``: each violation phase as JSON (the ``event.<stream>`` fields), QoS 1;
- ``event``: each violation's start and end, for Home Assistant's event entity: the same JSON with
  ``event_type`` ``violation_start`` or ``violation_end``;
- ``violation`` and ``<zone>/violation``: ``ON`` while a violation is open (counting in that zone), else
  ``OFF`` (retained);
- ``acknowledge`` (we subscribe): any message acknowledges the camera's events not yet acknowledged,
  open ones included, as the review page's button does (Home Assistant's button entity presses it);
- ``people`` and ``without_vest``: how many people are in view, and how many of them without a vest (retained);
- ``snapshot``: the JPEG of the latest violation (retained);
- ``availability``: ``online``, or ``offline`` (also the broker's last will for us);
- ``watched``: ``online`` while the camera is watched (``watching`` or ``degraded``), ``offline`` while it
  is down (retained); ``camera``: its state as the ``camera`` message (JSON, retained); ``problem``: ``ON``
  while it is not ``watching``.

With ``discovery``, Home Assistant finds a device per stream (its ``configuration_url`` the review
page of that camera) with binary sensors (stream and zones), count sensors, an image entity and an
event entity, all unavailable while the camera is down (their
availability is the connection's and ``watched``: a camera nobody watches never reads "Safe"),
and a ``problem`` binary sensor that stays available to say so, the reason in its attributes, and
an "acknowledge" button that does too.
The broker may be down at start or restart at any time: paho reconnects by itself and holds QoS 1
messages until then, up to ``queue`` (what does not fit is counted); on every connection the
discovery configs and states are sent again. ``published`` counts what the broker acknowledged
(PUBACK), not what was handed to paho. Connecting, losing the connection and each way it fails
(unreachable, TLS, refused) are logged, the same failure again at most every ``FAILURE_LOG_EVERY_S``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import sys
import threading
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho

from pipeline.repeats import RepeatedFailure
from stages.capture.sources.kinds import source_kind
from stages.config import MqttSettings, Settings, StreamSettings
from stages.recording.eventstore import EventStore
from stages.stats import PluginStats, counter, gauge
from stages.stream.analysis import FrameAnalysis
from stages.stream.messages import CameraMessage, EventMessage
from stages.stream.outputs.base import Sink

log = logging.getLogger(__name__)

FAILURE_LOG_EVERY_S = 300.0  # the same connection failure again and again is said once, then this often
EVENT_TYPES = {"start": "violation_start", "end": "violation_end"}  # the phases Home Assistant's event entity gets


def _software() -> str:
    try:
        return version("vestwatch")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


@dataclass
class MqttStats(PluginStats):
    """``mqtt_published``... in ``ctl status``."""

    published: int = counter("vestwatch_mqtt_published_total", "MQTT messages the broker acknowledged")
    overflowed: int = counter("vestwatch_mqtt_overflowed_total", "MQTT messages not queued: the broker away too long")
    connected: bool = gauge("vestwatch_mqtt_connected", "1 while connected to the MQTT broker", False)
    queued: int = gauge("vestwatch_mqtt_queued", "MQTT messages held for the broker, not yet acknowledged")


class MqttSink(Sink):
    prefix = "mqtt"
    stats_type = MqttStats
    stats: MqttStats

    @classmethod
    def create(cls, settings: Settings, stream: StreamSettings) -> MqttSink | None:
        """Entry point ``mqtt``: none without an ``[mqtt]`` section."""
        if not settings.mqtt:
            return None
        page = settings.link(f"/#camera={stream.id}")
        return cls(settings.mqtt, stream, settings.site, events_db=settings.events_db, page=page)

    def __init__(
        self,
        settings: MqttSettings,
        stream: StreamSettings,
        site: str,
        events_db: Path | None = None,
        page: str | None = None,
    ) -> None:
        """``events_db``: where the acknowledge button's presses are recorded (none: not offered);
        ``page``: the camera's review page, the device's ``configuration_url``."""
        super().__init__()
        self.settings, self.stream, self.site = settings, stream, site
        self.events_db, self.page = events_db, page
        self.base = f"{settings.topic_prefix}/{site}/{stream.id}"
        self.camera_state: CameraMessage | None = None  # none yet: the stage announces one at start
        self.closing = False
        self.sending_states = threading.Lock()
        self.zones = [zone.name for zone in stream.zones]
        self.open: dict[str, list[str]] = {}  # open event id -> the zones it counts in
        self.counts = {"people": -1, "without_vest": -1}
        self.counting = threading.Lock()  # _send runs on the stage's thread and on paho's, _published on paho's
        self.failure_said = RepeatedFailure(FAILURE_LOG_EVERY_S)
        self.said_connected = False  # a connection is said when the log last said otherwise
        self.client = self._client()
        if self._secure():
            # only now: a broker that answers at once has on_connect publish through self.client
            self.client.connect_async(settings.host, settings.port, keepalive=30)
            self.client.loop_start()

    def _client(self) -> paho.Client:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"vestwatch-{self.site}-{self.stream.id}")
        if self.settings.username:
            client.username_pw_set(self.settings.username, self.settings.password)
        client.will_set(f"{self.base}/availability", "offline", qos=1, retain=True)
        client.max_queued_messages_set(self.settings.queue)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._connected
        client.on_connect_fail = self._connect_failed
        client.on_disconnect = self._disconnected
        client.on_publish = self._published
        client.on_message = self._acknowledge_pressed  # the one topic we subscribe to
        return client

    def _secure(self) -> bool:
        """TLS as configured; False when it cannot start (the CA file deleted or made unreadable since the
        settings were checked): the sink then never connects, in clear least of all, and holds its messages
        up to ``queue`` and counts the rest, but it raises nothing: the stream records on."""
        if not self.settings.tls:
            return True
        try:
            self.client.tls_set(ca_certs=str(self.settings.ca_file) if self.settings.ca_file else None)
        except OSError as error:  # ssl.SSLError too
            self._failed(f"TLS cannot start ({error}); not connecting")
            return False
        return True

    def _failed(self, why: str) -> None:
        """Say why the broker is out of reach: at once, then the same again at most every
        ``FAILURE_LOG_EVERY_S`` with how often since (paho retries up to every 30 s)."""
        again = self.failure_said.again(why)
        if again is None:
            return
        log.warning("%s: MQTT broker %s:%d: %s%s", self.stream.id, self.settings.host, self.settings.port, why, again)
        self.said_connected = False

    def _connect_failed(self, client: paho.Client, userdata: object) -> None:
        """Unreachable, or TLS failed: paho calls this while it handles the error, so that is the reason."""
        self._failed(f"cannot connect ({sys.exc_info()[1] or 'no reason given'}); retrying")

    def _connected(self, client: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            self._failed(f"refused us ({reason}); retrying")
            return
        self.stats.connected = True
        if not self.said_connected:
            log.info("%s: connected to the MQTT broker %s:%d", self.stream.id, self.settings.host, self.settings.port)
            self.said_connected = True
        if self.events_db is not None:
            client.subscribe(f"{self.base}/acknowledge", qos=1)
        if self.settings.discovery:
            for topic, config in self._discovery().items():
                self._send(topic, json.dumps(config), retain=True)
        self._send(f"{self.base}/availability", "online", retain=True)
        self._send_states()

    def _disconnected(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if self.stats.connected and not self.closing:
            self._failed(f"connection lost ({reason}); holding up to {self.settings.queue} messages")
        self.stats.connected = False

    def _published(self, *args: object) -> None:
        with self.counting:
            self.stats.published += 1
            self.stats.queued -= 1

    def _send(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        with self.counting:  # first: its acknowledgement may come before publish() returns
            self.stats.queued += 1
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            with self.counting:
                self.stats.queued -= 1
                self.stats.overflowed += 1

    def _send_states(self) -> None:
        """The retained states, whole: from the stage's thread and from paho's on a connection, one at
        a time, so that the last sent is the latest."""
        with self.sending_states:
            camera = self.camera_state
            if camera is not None:
                self._send(f"{self.base}/camera", camera.to_json(), retain=True)
                self._send(f"{self.base}/watched", "offline" if camera.state == "down" else "online", retain=True)
                self._send(f"{self.base}/problem", "OFF" if camera.state == "watching" else "ON", retain=True)
            for topic, on in self._violations().items():
                self._send(f"{self.base}/{topic}", "ON" if on else "OFF", retain=True)

    def _violations(self) -> dict[str, bool]:
        """``violation`` and each ``<zone>/violation``: whether an open violation counts there."""
        counted = [zone for zones in list(self.open.values()) for zone in zones]
        return {"violation": bool(self.open), **{f"{zone}/violation": zone in counted for zone in self.zones}}

    def _acknowledge_pressed(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        """Home Assistant's button: the camera's events not yet acknowledged are, on a thread of its own
        (the database may keep it waiting; paho's thread keeps the connection). A retained message is
        an old press, not a new one."""
        if not message.retain:
            threading.Thread(target=self._acknowledge, args=(message.topic,), daemon=True).start()

    def _acknowledge(self, topic: str) -> None:
        assert self.events_db is not None
        try:
            store = EventStore(self.events_db)
            try:
                count = store.acknowledge_stream(self.stream.id)
            finally:
                store.close()
        except sqlite3.Error as error:
            log.warning("%s: acknowledge from MQTT failed: %s: %s", self.stream.id, self.events_db, error)
            return
        log.info("%s: %d event(s) acknowledged from MQTT (%s)", self.stream.id, count, topic)

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        if analysis.seq:  # a frame of the stream, not the stage's idle tick
            counts = {"people": len(analysis.people), "without_vest": sum(p.vest == "no" for p in analysis.people)}
            for name, count in counts.items():
                if count != self.counts[name]:
                    self.counts[name] = count
                    self._send(f"{self.base}/{name}", str(count), retain=True)

    def camera(self, message: CameraMessage) -> None:
        self.camera_state = message
        self._send_states()

    def events(self, events: tuple[EventMessage, ...]) -> None:
        before = self._violations()
        for event in events:
            self._send(f"{self.base}/events", event.to_json())
            if event.phase in EVENT_TYPES:
                self._send(f"{self.base}/event", json.dumps({"event_type": EVENT_TYPES[event.phase], **asdict(event)}))
            if event.phase == "end":
                self.open.pop(event.event_id, None)
            else:
                self.open[event.event_id] = list(event.zones)
            if event.snapshot and event.phase == "start":
                with contextlib.suppress(OSError):  # deleted for disk space meanwhile: the event went out anyway
                    self._send(f"{self.base}/snapshot", Path(event.snapshot).read_bytes(), retain=True)
        if self._violations() != before:
            self._send_states()

    def _device(self, node: str) -> dict[str, object]:
        """Home Assistant's device of this stream: what it is, and where its page is."""
        return {
            "identifiers": [node],
            "name": f"vestwatch {self.site} {self.stream.id}",
            "manufacturer": "vestwatch",
            "model": f"PPE monitor ({source_kind(self.stream.url)} source)",
            "sw_version": _software(),
            **({"configuration_url": self.page} if self.page else {}),
        }

    def _discovery(self) -> dict[str, dict]:
        """Home Assistant MQTT discovery: one device per stream."""
        prefix, node = self.settings.discovery_prefix, f"vestwatch_{self.site}_{self.stream.id}"
        connection = {"topic": f"{self.base}/availability"}
        common = {  # unavailable while the broker lost us or while the camera is down
            "availability": [connection, {"topic": f"{self.base}/watched"}],
            "availability_mode": "all",
            "device": self._device(node),
        }
        configs = {
            f"{prefix}/binary_sensor/{node}/violation/config": {
                "name": "PPE violation",
                "state_topic": f"{self.base}/violation",
            },
            f"{prefix}/sensor/{node}/people/config": {"name": "People", "state_topic": f"{self.base}/people"},
            f"{prefix}/sensor/{node}/without_vest/config": {
                "name": "People without a vest",
                "state_topic": f"{self.base}/without_vest",
            },
            f"{prefix}/image/{node}/snapshot/config": {
                "name": "Last violation",
                "image_topic": f"{self.base}/snapshot",
                "content_type": "image/jpeg",
            },
            f"{prefix}/event/{node}/violation_event/config": {
                "name": "PPE violation event",
                "state_topic": f"{self.base}/event",
                "event_types": list(EVENT_TYPES.values()),
            },
        }
        problem = {  # available whenever we are connected: it is what says that the camera is down
            "name": "Camera problem",
            "state_topic": f"{self.base}/problem",
            "json_attributes_topic": f"{self.base}/camera",
            "availability": [connection],
        }
        configs[f"{prefix}/binary_sensor/{node}/problem/config"] = problem
        if self.events_db is not None:  # available whenever we are connected: ended events can be acknowledged
            configs[f"{prefix}/button/{node}/acknowledge/config"] = {
                "name": "Acknowledge violations",
                "command_topic": f"{self.base}/acknowledge",
                "payload_press": "PRESS",
                "availability": [connection],
            }
        for zone in self.zones:
            configs[f"{prefix}/binary_sensor/{node}/{zone}_violation/config"] = {
                "name": f"PPE violation in {zone}",
                "state_topic": f"{self.base}/{zone}/violation",
            }
        for topic, config in configs.items():
            config.update({**common, **config}, unique_id=f"{node}_{topic.split('/')[-2]}")
            if "/binary_sensor/" in topic:
                config.update(payload_on="ON", payload_off="OFF")
                config.setdefault("device_class", "problem" if config is problem else "safety")
            if "/sensor/" in topic:
                config.update(state_class="measurement")
        return configs

    def close(self) -> None:
        self.closing = True  # a clean stop is no "broker gone"
        self._send(f"{self.base}/availability", "offline", retain=True)
        self.client.disconnect()
        self.client.loop_stop()
