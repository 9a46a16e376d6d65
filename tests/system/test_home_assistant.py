"""What a Home Assistant integrator sees: a real Home Assistant 2024.1 reading vestwatch's MQTT
discovery from a real Mosquitto, checked through Home Assistant's own REST API after a violation, a
camera going down, and a press of the acknowledge button."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stages.config import MqttSettings, StreamSettings, ZoneSettings
from stages.recording.eventstore import EventFilter, EventStore
from stages.stream.health import CameraHealth
from stages.stream.messages import CameraMessage
from stages.stream.outputs.mqtt import MqttSink
from tests.harness import MOSQUITTO, Mosquitto
from tests.home_assistant import HASS, HomeAssistant
from tests.stages.stream.outputs.test_mqtt import send

pytestmark = [
    pytest.mark.skipif(not HASS.exists(), reason="Home Assistant not installed (deploy/setup.sh --dev: .ha-venv)"),
    pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed (deploy/setup.sh --dev)"),
]

STREAM = StreamSettings(id="gate", url="demo", zones=[ZoneSettings(name="scaffold", require=["vest"])])
DEVICE = "vestwatch_site_a_gate"  # Home Assistant's entity ids: the device's name, then the entity's


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[HomeAssistant, Mosquitto]]:
    broker = Mosquitto(tmp_path / "broker").start()
    assistant = HomeAssistant(tmp_path / "home-assistant")
    try:
        assistant.add_mqtt(broker.port)
        yield assistant, broker
    finally:
        assistant.stop()
        broker.stop()


def test_home_assistant_shows_violations_a_camera_down_and_acknowledges_from_its_button(home, tmp_path) -> None:
    assistant, broker = home
    store = EventStore(tmp_path / "events.sqlite3")
    earlier = {"stream": "gate", "track_id": 3, "zones": ["scaffold"], "missing": ["vest"], "duration_s": 4.0}
    store.record({**earlier, "event_id": "gate-0-3", "phase": "end", "started": 1699999000.0})
    page = "http://site-server:8080/#camera=gate"
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=broker.port), STREAM, "site-a", events_db=store.path, page=page)
    try:
        sink.camera(CameraMessage.of("gate", "site-a", CameraHealth("watching", "", 1.0), ""))
        # Home Assistant subscribes to an entity's topics a moment after it discovered it, and a
        # non-retained event sent before is not for it: the start goes again until it shows (on a
        # site the first violation comes long after the discovery)
        deadline = time.monotonic() + 60
        while True:
            send(sink, 1, "start", people=2)
            try:
                states = assistant.wait_for(lambda s: _fired(s) is not None, "the violation event", timeout=1)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "Home Assistant's event entity never fired"
        assert states[f"binary_sensor.{DEVICE}_ppe_violation"]["state"] == "on"
        fired = states[f"event.{DEVICE}_ppe_violation_event"]["attributes"]
        assert (fired["event_type"], fired["event_id"], fired["zones"]) == ("violation_start", "gate-1-1", ["scaffold"])
        assert states[f"binary_sensor.{DEVICE}_ppe_violation_in_scaffold"]["state"] == "on"
        assert states[f"sensor.{DEVICE}_people_without_a_vest"]["state"] == "2"
        assert states[f"binary_sensor.{DEVICE}_camera_problem"]["state"] == "off"
        device = f"binary_sensor.{DEVICE}_ppe_violation"
        assert assistant.template(f"{{{{ device_attr('{device}', 'configuration_url') }}}}") == page
        assert assistant.template(f"{{{{ device_attr('{device}', 'model') }}}}") == "PPE monitor (demo source)"
        assert assistant.template(f"{{{{ device_attr('{device}', 'sw_version') }}}}") not in ("", "None")

        down = CameraHealth("down", "source lost, reconnecting: connection refused", 2.0)
        sink.camera(CameraMessage.of("gate", "site-a", down, "watching"))
        states = assistant.wait_for(
            lambda s: s[f"binary_sensor.{DEVICE}_camera_problem"]["state"] == "on", "the camera down"
        )
        for entity in ("binary_sensor.{}_ppe_violation", "sensor.{}_people", "event.{}_ppe_violation_event"):
            assert states[entity.format(DEVICE)]["state"] == "unavailable", f"{entity}: never 'Safe' while down"
        assert "connection refused" in states[f"binary_sensor.{DEVICE}_camera_problem"]["attributes"]["reason"]

        button = f"button.{DEVICE}_acknowledge_violations"
        assert states[button]["state"] != "unavailable", "acknowledging stays possible while the camera is down"
        store.record({**earlier, "event_id": "gate-1-1", "track_id": 1, "phase": "start", "started": 1700000000.0})
        assistant.press(button)
        assistant.wait_for(lambda s: s[button]["state"] not in ("unknown", "unavailable"), "the press")
        acknowledged = acknowledged_in(store, 2)  # the press reaches vestwatch through the broker
        assert sorted(e["event_id"] for e in acknowledged) == ["gate-0-3", "gate-1-1"], "the open and the ended"
    finally:
        sink.close()
        store.close()


def _fired(states: dict[str, dict]) -> str | None:
    return states.get(f"event.{DEVICE}_ppe_violation_event", {}).get("attributes", {}).get("event_type")


def acknowledged_in(store: EventStore, count: int, timeout: float = 30) -> list[dict]:
    """The acknowledged events once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while len(found := store.events(EventFilter(acknowledged=True))) < count:
        assert time.monotonic() < deadline, f"only {[e['event_id'] for e in found]} acknowledged"
        time.sleep(0.1)
    return found
