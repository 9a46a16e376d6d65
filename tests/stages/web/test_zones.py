"""The zones editor's API on a real config file: saved in place, comments and the rest kept, read back
as drawn, and the daemon told to reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.settings import load_settings
from pipeline.web import Request
from stages.config import Settings
from stages.web.zones import ZonesApi

CONFIG = """\
# the site's cameras: keep this comment
recordings_dir = "{folder}/rec"
runtime_dir = "{folder}/run"

[[streams]]
id = "gate"  # the main gate
url = "demo"
zones = [{{ name = "site" }}]

[[streams]]
id = "yard"
url = "demo"

[events]
dwell_s = 2.0  # site default
"""

SCAFFOLD = {"name": "scaffold", "polygon": [[0.1, 0.4], [0.55, 0.4], [0.55, 1.0], [0.1, 1.0]], "require": ["hardhat"]}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(CONFIG.format(folder=tmp_path))
    path.chmod(0o640)
    return path


def call(api: ZonesApi, method: str, stream: str, body: object = None) -> tuple[int, dict]:
    route = api.routes()["POST /api/zones/" if method == "POST" else "/api/zones/"]
    data = json.dumps(body).encode() if body is not None else b""
    status, _, reply = route(Request(method, f"/api/zones/{stream}", {}, data, "application/json"))
    return status, json.loads(reply)


def test_zones_drawn_on_the_page_are_saved_in_place_read_back_and_reloaded(config: Path) -> None:
    reloads = []
    api = ZonesApi(config, lambda: reloads.append(1))
    status, before = call(api, "GET", "gate")
    assert status == 200 and [z["name"] for z in before["zones"]] == ["site"] and before["zones"][0]["polygon"] is None

    drawn = [{"name": "site", "polygon": None, "require": ["vest"]}, {**SCAFFOLD, "dwell_s": 0.5}]
    status, saved = call(api, "POST", "gate", {"zones": drawn})
    assert status == 200, saved
    assert reloads == [1], "the daemon reloads the new zones"
    (site, scaffold) = saved["zones"]
    assert (
        scaffold["polygon"] == SCAFFOLD["polygon"] and scaffold["require"] == ["hardhat"] and scaffold["dwell_s"] == 0.5
    )
    assert site["polygon"] is None and site["require"] == ["vest"]

    text = config.read_text()
    assert "# the site's cameras: keep this comment" in text and "# the main gate" in text and "# site default" in text
    assert config.stat().st_mode & 0o777 == 0o640, "the file's mode kept"
    settings = load_settings(Settings, config)
    gate, yard = settings.streams
    assert [z.name for z in gate.zones] == ["site", "scaffold"] and gate.zones[1].dwell_s == 0.5
    assert [tuple(p) for p in gate.zones[1].polygon] == [tuple(p) for p in SCAFFOLD["polygon"]], "read back as drawn"
    assert [z.name for z in yard.zones] == ["site"], "the other camera untouched"
    assert settings.events.dwell_s == 2.0


@pytest.mark.parametrize(
    ("zones", "error"),
    [
        (
            [{**SCAFFOLD, "polygon": [[0.1, 0.1], [0.2, 0.2]]}],
            "zone 'scaffold': polygon: List should have at least 3 items",
        ),
        ([{**SCAFFOLD, "polygon": [[0.1, 0.1], [1.5, 0.2], [0.3, 0.9]]}], "fractions must be within 0..1"),
        ([SCAFFOLD, SCAFFOLD], "zone names must be unique"),
        ([{**SCAFFOLD, "require": ["gloves"]}], "zone 'scaffold': require.0: Input should be 'vest' or 'hardhat'"),
        ([{**SCAFFOLD, "name": "a b"}], "zone 'a b': name: String should match pattern"),
    ],
)
def test_a_zone_the_config_would_refuse_is_refused_and_nothing_written(config: Path, zones: list, error: str) -> None:
    before = config.read_text()
    status, reply = call(ZonesApi(config, lambda: None), "POST", "gate", {"zones": zones})
    assert status == 400 and error in reply["error"], reply
    assert config.read_text() == before


def test_without_a_config_file_or_such_a_camera_it_says_so(config: Path) -> None:
    status, reply = call(ZonesApi(None, lambda: None), "GET", "demo")
    assert status == 409 and "built-in defaults" in reply["error"]
    assert call(ZonesApi(config, lambda: None), "GET", "nobody") == (404, {"error": f"no stream 'nobody' in {config}"})
