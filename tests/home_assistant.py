"""A real Home Assistant (2024.1, in ``.ha-venv``, installed by ``deploy/home-assistant.sh``) for the
tests: started on a free port in a folder of its own, onboarded (a user and a token, as the first
visit in a browser does) and joined to an MQTT broker through the MQTT integration's config flow."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.harness import free_port

HASS = Path(__file__).resolve().parents[1] / ".ha-venv" / "bin" / "hass"
CONFIGURATION = """\
homeassistant:
  name: vestwatch test
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
logger:
  default: warning
"""


class HomeAssistant:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        (folder / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port))
        self.log = (folder / "hass.log").open("w")
        # --skip-pip: what the integrations need is installed; a missing one fails loudly, not by a download
        self.process = subprocess.Popen([str(HASS), "-c", str(folder), "--skip-pip"], stdout=self.log, stderr=self.log)
        self.token = ""
        self._onboard()

    def _call(self, method: str, path: str, body: Any = None, form: bool = False) -> Any:
        data = None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if body is not None:
            data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
        request = urllib.request.Request(self.base + path, data, headers, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return json.loads(text) if text.startswith(("{", "[")) else text

    def _onboard(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"Home Assistant exited ({self.process.returncode}); see {self.log.name}")
            try:
                self._call("GET", "/api/onboarding")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Home Assistant did not answer in 120 s; see {self.log.name}") from None
                time.sleep(0.5)
        client = self.base + "/"
        user = {
            "client_id": client,
            "name": "Safety",
            "username": "safety",
            "password": "a-long-passphrase",
            "language": "en",
        }
        code = self._call("POST", "/api/onboarding/users", user)["auth_code"]
        grant = {"grant_type": "authorization_code", "code": code, "client_id": client}
        self.token = self._call("POST", "/auth/token", grant, form=True)["access_token"]

    def add_mqtt(self, port: int) -> None:
        """The MQTT integration, as a user adds it: its config flow, with the broker's address."""
        flow = self._call("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        done = self._call(
            "POST", f"/api/config/config_entries/flow/{flow['flow_id']}", {"broker": "127.0.0.1", "port": port}
        )
        assert done["type"] == "create_entry", done

    def states(self) -> dict[str, dict]:
        return {state["entity_id"]: state for state in self._call("GET", "/api/states")}

    def template(self, text: str) -> str:
        return self._call("POST", "/api/template", {"template": text})

    def press(self, entity_id: str) -> None:
        self._call("POST", "/api/services/button/press", {"entity_id": entity_id})

    def wait_for(self, predicate: Any, what: str, timeout: float = 60) -> dict[str, dict]:
        """The states once ``predicate(states)`` holds (Home Assistant applies MQTT messages as they come)."""
        deadline = time.monotonic() + timeout
        while not predicate(states := self.states()):
            if time.monotonic() > deadline:
                mine = {k: v["state"] for k, v in states.items() if "vestwatch" in k}
                raise TimeoutError(f"Home Assistant never showed {what}: {mine}")
            time.sleep(0.25)
        return states

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()
