"""The MQTT sink against a real Mosquitto broker, read by a real MQTT client."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from pipeline.detections import Detections
from stages.config import MqttSettings, StreamSettings, ZoneSettings
from stages.recording.eventstore import EventFilter, EventStore
from stages.stream.analysis import FrameAnalysis, Person, Violation
from stages.stream.health import CameraHealth
from stages.stream.messages import CameraMessage, EventMessage
from stages.stream.outputs import mqtt
from stages.stream.outputs.mqtt import MqttSink
from tests.harness import MOSQUITTO, Mosquitto, free_port, self_signed

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed (deploy/setup.sh --dev)")

SITE = "site-a"
STREAM = StreamSettings(id="gate", url="demo", zones=[ZoneSettings(name="scaffold", require=["vest"])])


class Watcher:
    """A Home Assistant stand-in: a persistent MQTT session on ``vestwatch/#`` and ``homeassistant/#``."""

    def __init__(self, port: int) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.changed = threading.Condition()
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="watcher", clean_session=False)
        self.client.on_connect = lambda client, *_: client.subscribe([("vestwatch/#", 1), ("homeassistant/#", 1)])
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(host="127.0.0.1", port=port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the watcher never subscribed"

    def _message(self, client: object, userdata: object, message: paho.MQTTMessage) -> None:
        with self.changed:
            self.messages.append(message)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[list[paho.MQTTMessage]], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out; topics seen: {[m.topic for m in self.messages]}"
                self.changed.wait(remaining)

    def events(self) -> list[dict]:
        """Each event phase once: QoS 1 is at least once, so a phase the broker did not acknowledge
        before it went away comes again (a receiver tells them apart by event id and phase)."""
        phases = {}
        for message in self.messages:
            if message.topic == "vestwatch/site-a/gate/events":
                event = json.loads(message.payload)
                phases.setdefault((event["event_id"], event["phase"], event["seq"]), event)
        return list(phases.values())

    def last(self, topic: str) -> bytes | None:
        return next((m.payload for m in reversed(self.messages) if m.topic == topic), None)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Calls:
    """Counts the calls of one of the sink's paho callbacks as they run on paho's thread, for a test to
    wait on them rather than on time."""

    def __init__(self, client: paho.Client, name: str) -> None:
        self.count = 0
        self.changed = threading.Condition()
        inner = getattr(client, name)

        def called(*args: object) -> None:
            inner(*args)
            with self.changed:
                self.count += 1
                self.changed.notify_all()

        setattr(client, name, called)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), f"timed out after {self.count} calls"


def said(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == mqtt.log.name and r.levelno == level]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and its key."""
    return self_signed(tmp_path_factory.mktemp("tls"), "localhost")


@contextlib.contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[int]:
    """A TLS listener that shows ``cert`` and speaks no MQTT: enough for a client to check the certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):  # the listener shut
            while True:
                connection, _ = listener.accept()
                with contextlib.suppress(OSError), connection:  # the client refuses the certificate
                    context.wrap_socket(connection, server_side=True).close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        listener.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "broker").start()
    yield server
    server.stop()


def frame(seq: int, people: int = 1) -> FrameAnalysis:
    analysis = FrameAnalysis("gate", seq, 1700000000.0 + seq, None, 640, 360, Detections([], [], []), [])
    analysis.people = [Person(i + 1, [0, 0, 10, 10], 0.9, vest="no") for i in range(people)]
    return analysis


def send(sink: MqttSink, seq: int, name: str, snapshot: str | None = None, people: int = 1) -> None:
    """A frame with one phase of one event, as the stream stage hands it over: the frame, then its events."""
    analysis = frame(seq, people)
    ended = 1700000005.0 if name == "end" else None
    violation = Violation("gate-1-1", name, 1, ["scaffold"], ["vest"], ["vest"], 1700000000.0, ended, 5.0)
    sink.handle(None, analysis)
    sink.events((EventMessage.from_violation(analysis, violation, [0, 0, 10, 10], {"snapshot": snapshot}),))


def test_events_states_counts_and_discovery_reach_a_subscriber(broker, tmp_path) -> None:
    watcher = Watcher(broker.port)
    page = "http://site:8080/#camera=gate"
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=broker.port), STREAM, SITE, page=page)
    snapshot = tmp_path / "snap.jpg"
    snapshot.write_bytes(b"\xff\xd8 a jpeg")
    send(sink, 1, "start", snapshot=str(snapshot), people=2)
    watcher.wait_for(lambda ms: any(m.topic == "vestwatch/site-a/gate/violation" and m.payload == b"ON" for m in ms))
    send(sink, 2, "end", people=1)
    watcher.wait_for(lambda ms: [e["phase"] for e in watcher.events()] == ["start", "end"])
    watcher.wait_for(lambda ms: watcher.last("vestwatch/site-a/gate/scaffold/violation") == b"OFF")
    assert watcher.last("vestwatch/site-a/gate/violation") == b"OFF"
    assert (
        watcher.last("vestwatch/site-a/gate/people") == b"1"
        and watcher.last("vestwatch/site-a/gate/without_vest") == b"1"
    )
    assert watcher.last("vestwatch/site-a/gate/snapshot") == b"\xff\xd8 a jpeg"
    assert watcher.last("vestwatch/site-a/gate/availability") == b"online"
    start = watcher.events()[0]
    assert start["event_id"] == "gate-1-1" and start["missing"] == ["vest"] and start["zones"] == ["scaffold"]
    config = json.loads(watcher.last("homeassistant/binary_sensor/vestwatch_site-a_gate/scaffold_violation/config"))
    assert config["state_topic"] == "vestwatch/site-a/gate/scaffold/violation" and config["payload_on"] == "ON"
    assert config["device"]["configuration_url"] == page and config["device"]["sw_version"]
    assert config["device"]["model"] == "PPE monitor (demo source)"
    assert json.loads(watcher.last("homeassistant/image/vestwatch_site-a_gate/snapshot/config"))["image_topic"]
    # Home Assistant's event entity: a start and an end, each with the event's fields
    entity = json.loads(watcher.last("homeassistant/event/vestwatch_site-a_gate/violation_event/config"))
    assert entity["state_topic"] == "vestwatch/site-a/gate/event"
    assert entity["event_types"] == ["violation_start", "violation_end"]
    fired = [json.loads(m.payload) for m in watcher.messages if m.topic == "vestwatch/site-a/gate/event"]
    assert [(e["event_type"], e["event_id"], e["zones"]) for e in fired] == [
        ("violation_start", "gate-1-1", ["scaffold"]),
        ("violation_end", "gate-1-1", ["scaffold"]),
    ]
    assert watcher.last("homeassistant/button/vestwatch_site-a_gate/acknowledge/config") is None, "no events db"
    sink.close()
    watcher.wait_for(lambda ms: watcher.last("vestwatch/site-a/gate/availability") == b"offline")
    watcher.close()


def test_the_acknowledge_button_acknowledges_the_cameras_events(broker, tmp_path) -> None:
    """Home Assistant's button: pressing it (a message on its command topic) acknowledges the camera's
    events in the review page's database, open ones included, and no other camera's."""
    store = EventStore(tmp_path / "events.sqlite3")
    base = {"track_id": 1, "zones": ["scaffold"], "require": ["vest"], "missing": ["vest"], "duration_s": 5.0}
    for event_id, stream, phase in (("gate-1", "gate", "end"), ("gate-2", "gate", "start"), ("yard-1", "yard", "end")):
        store.record({**base, "event_id": event_id, "stream": stream, "phase": phase, "started": 1700000000.0})
    watcher = Watcher(broker.port)
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=broker.port), STREAM, SITE, events_db=store.path)
    config = "homeassistant/button/vestwatch_site-a_gate/acknowledge/config"
    watcher.wait_for(lambda ms: watcher.last(config) is not None)
    button = json.loads(watcher.last(config))
    assert button["availability"] == [{"topic": "vestwatch/site-a/gate/availability"}], "pressable while down"
    watcher.client.publish(button["command_topic"], button["payload_press"], qos=1)
    deadline = time.monotonic() + 10
    while len(store.events(EventFilter(acknowledged=True))) < 2:  # done on a thread of the sink's
        assert time.monotonic() < deadline, "the press acknowledged nothing"
        time.sleep(0.05)
    assert sorted(e["event_id"] for e in store.events(EventFilter(acknowledged=True))) == ["gate-1", "gate-2"]
    assert store.event("yard-1")["acknowledged"] is None
    sink.close()
    watcher.close()
    store.close()


def test_a_broker_down_at_start_and_restarted_mid_run_loses_no_event(broker) -> None:
    watcher = Watcher(broker.port)  # a persistent session: the broker keeps its messages while it is away
    broker.stop()
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=broker.port), STREAM, SITE)
    acks = Calls(sink.client, "on_publish")  # the broker is down: none can come before
    send(sink, 1, "start")  # the broker is down: held by the client
    broker.start()
    watcher.wait_for(lambda ms: [e["phase"] for e in watcher.events()] == ["start"])
    broker.stop()
    send(sink, 2, "update")
    send(sink, 3, "end")
    broker.start()
    watcher.wait_for(lambda ms: [e["phase"] for e in watcher.events()] == ["start", "update", "end"])
    assert sink.stats.overflowed == 0
    acks.wait_for(lambda: sink.stats.queued == 0)
    assert sink.stats.published >= 3, "held while away, then acknowledged"
    sink.close()
    watcher.close()


def test_what_does_not_fit_while_the_broker_is_away_is_counted() -> None:
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=free_port(), queue=3), STREAM, SITE)  # nothing listens
    for seq in range(1, 7):
        send(sink, seq, "update")
    assert sink.stats.overflowed >= 3 and not sink.stats.connected
    assert sink.stats.queued == 3, "the queue is full and none of it acknowledged"
    sink.close()


def test_a_camera_that_is_down_makes_its_entities_unavailable_and_its_problem_on(broker) -> None:
    """Home Assistant reads availability: while the camera is down its violation sensor and counts are
    unavailable (never "Safe"), and the problem sensor, available, says why."""
    watcher = Watcher(broker.port)
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=broker.port), STREAM, SITE)
    base = "vestwatch/site-a/gate"
    sink.camera(CameraMessage.of("gate", SITE, CameraHealth("watching", "", 1.0), ""))
    watcher.wait_for(lambda ms: watcher.last(f"{base}/problem") == b"OFF")  # sent after watched
    assert watcher.last(f"{base}/watched") == b"online"
    down = CameraHealth("down", "source lost, reconnecting: connection refused", 2.0)
    sink.camera(CameraMessage.of("gate", SITE, down, "watching"))
    watcher.wait_for(lambda ms: watcher.last(f"{base}/problem") == b"ON")
    assert watcher.last(f"{base}/watched") == b"offline"
    state = json.loads(watcher.last(f"{base}/camera"))
    assert state["event"] == "camera_down" and "connection refused" in state["reason"]
    violation = json.loads(watcher.last("homeassistant/binary_sensor/vestwatch_site-a_gate/violation/config"))
    assert {"topic": f"{base}/watched"} in violation["availability"] and violation["availability_mode"] == "all"
    problem = json.loads(watcher.last("homeassistant/binary_sensor/vestwatch_site-a_gate/problem/config"))
    assert problem["availability"] == [{"topic": f"{base}/availability"}], "the problem sensor must stay available"
    assert problem["device_class"] == "problem" and problem["json_attributes_topic"] == f"{base}/camera"
    sink.close()
    watcher.close()


def test_two_sites_with_the_same_camera_id_share_a_broker(broker) -> None:
    """Client ids, topics and discovery ids carry the site: neither install kicks the other off."""
    watcher = Watcher(broker.port)
    sinks = [MqttSink(MqttSettings(host="127.0.0.1", port=broker.port), STREAM, site) for site in ("north", "south")]
    for seq in range(1, 4):  # a few rounds while both stay connected
        for sink in sinks:
            send(sink, seq, "update")
    for site in ("north", "south"):
        watcher.wait_for(lambda ms, site=site: sum(m.topic == f"vestwatch/{site}/gate/events" for m in ms) >= 3)

    def devices(messages: list[paho.MQTTMessage]) -> set[str]:
        return {json.loads(m.payload)["device"]["identifiers"][0] for m in messages if m.topic.endswith("/config")}

    watcher.wait_for(lambda ms: devices(ms) == {"vestwatch_north_gate", "vestwatch_south_gate"})
    offline = [m.topic for m in watcher.messages if m.topic.endswith("/availability") and m.payload == b"offline"]
    assert offline == [], "an install was kicked off the broker"
    for sink in sinks:
        sink.close()
    watcher.close()


def test_published_counts_only_what_the_broker_acknowledged(tmp_path) -> None:
    """Held while the broker is down is not published: only its PUBACK makes a message count."""
    broker = Mosquitto(tmp_path / "broker")  # its port, nothing on it yet
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=broker.port), STREAM, SITE)
    acks = Calls(sink.client, "on_publish")
    sink.client.reconnect_delay_set(0.05, 0.1)  # to see the broker soon after it starts
    for seq in range(1, 4):
        send(sink, seq, "update")
    held = sink.stats.queued
    assert held >= 3 and sink.stats.published == 0, "handed to paho is not published"
    broker.start()
    try:
        acks.wait_for(lambda: sink.stats.queued == 0)
        assert sink.stats.published > held and acks.count == sink.stats.published, "each counted on its PUBACK"
        sink.close()
    finally:
        broker.stop()


def test_a_ca_file_gone_after_validation_leaves_the_sink_unconnected_without_raising(
    certificate, tmp_path, caplog
) -> None:
    """The stream stage's setup must not fail on the sink: it logs, holds what fits and counts the rest."""
    ca_file = tmp_path / "ca.pem"
    shutil.copy(certificate[0], ca_file)
    port = free_port()
    settings = MqttSettings(host="127.0.0.1", port=port, tls=True, ca_file=ca_file, queue=3)
    ca_file.unlink()
    caplog.set_level(logging.INFO, logger=mqtt.log.name)
    sink = MqttSink(settings, STREAM, SITE)
    warnings = said(caplog, logging.WARNING)
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0] and "TLS cannot start" in warnings[0]
    for seq in range(1, 4):
        send(sink, seq, "update")
    assert not sink.stats.connected and sink.stats.queued == 3 and sink.stats.overflowed >= 3
    sink.close()


def test_a_broker_out_of_reach_is_said_once_and_its_coming_back_once(tmp_path, caplog) -> None:
    """Nothing listens: one warning naming the broker, not one per retry; then Mosquitto starts there."""
    caplog.set_level(logging.INFO, logger=mqtt.log.name)
    broker = Mosquitto(tmp_path / "broker")  # its port, nothing on it yet
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=broker.port), STREAM, SITE)
    tries, connections = Calls(sink.client, "on_connect_fail"), Calls(sink.client, "on_connect")
    sink.client.reconnect_delay_set(0.05, 0.1)  # retries come quickly: the log must not follow them
    tries.wait_for(lambda: tries.count >= 3)
    warnings = said(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert f"127.0.0.1:{broker.port}" in warnings[0] and "Connection refused" in warnings[0]
    broker.start()
    try:
        connections.wait_for(lambda: connections.count >= 1)
        assert said(caplog, logging.WARNING) == warnings
        assert said(caplog, logging.INFO) == [f"gate: connected to the MQTT broker 127.0.0.1:{broker.port}"]
        sink.close()
    finally:
        broker.stop()


def test_tls_with_the_wrong_ca_is_said(certificate, tmp_path, caplog) -> None:
    """The broker's certificate is not signed by ca_file: said once, with the TLS reason, not just
    ``mqtt_connected: false``."""
    caplog.set_level(logging.INFO, logger=mqtt.log.name)
    other_ca, _ = self_signed(tmp_path, "other-ca")
    with tls_server(*certificate) as port:
        sink = MqttSink(MqttSettings(host="127.0.0.1", port=port, tls=True, ca_file=other_ca), STREAM, SITE)
        tries = Calls(sink.client, "on_connect_fail")
        sink.client.reconnect_delay_set(0.05, 0.1)
        tries.wait_for(lambda: tries.count >= 2)
        sink.close()
    warnings = said(caplog, logging.WARNING)
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0] and "certificate verify failed" in warnings[0]
