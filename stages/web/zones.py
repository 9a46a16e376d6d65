"""The zones editor behind the review page: a camera's zones read from, and saved to, the config file
the daemon was started with, then reloaded (only that camera's stream stage restarts).

- ``GET /api/zones/<stream>``: ``{"stream", "zones": [{"name", "polygon", "units", "require", "dwell_s"}]}``,
  as the file says now
- ``POST /api/zones/<stream>`` with ``{"zones": [...]}`` (JSON): checked as the config's own zones are,
  written into the stream's ``[[streams]]`` table in place, keeping the file's comments, order and
  other tables (``tomlkit``), atomically (a temporary file renamed over it, its mode kept); the whole
  file is checked as a reload would (it loads; the model sees what the zones require) before it
  replaces the old one, then the daemon reloads.
  400 names what is wrong; 409 when there is no file to write (the built-in defaults).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import ValidationError
from tomlkit import TOMLDocument

from pipeline.settings import ConfigError, load_settings
from pipeline.web import Reply, Request, Route
from stages.config import Settings, StreamSettings, ZoneSettings
from stages.config.editing import rewrite_config
from stages.web.review import json_list, json_reply

API = "/api/zones/"
PLACES = 4  # a polygon's fractions are kept to this many decimals (a tenth of a pixel at 4K)


class ZonesApi:
    def __init__(
        self, config: Path | None, reload: Callable[[], None], check: Callable[[Path, Path], None] | None = None
    ) -> None:
        """``check(config, candidate)``: what a reload checks of the file about to replace ``config``
        (ConfigError); by default that it loads."""
        self.config, self.reload = config, reload
        self.writing = threading.Lock()  # two tabs saving at once: each save starts from the file the last left
        self.check = check or (lambda config, candidate: load_settings(Settings, candidate) and None)

    def routes(self) -> dict[str, Route]:
        return {API: self.read, f"POST {API}": self.save}

    def read(self, request: Request) -> Reply:
        stream = self._stream(request.path.removeprefix(API))
        if isinstance(stream, tuple):
            return stream
        return json_reply(200, {"stream": stream.id, "zones": [_shown(zone) for zone in stream.zones]})

    def save(self, request: Request) -> Reply:
        stream_id = request.path.removeprefix(API)
        stream = self._stream(stream_id)
        if isinstance(stream, tuple):
            return stream
        drawn = json_list(request, "zones", dict, '{"zones": [{"name": ..., "polygon": ..., "require": ...}, ...]}')
        if isinstance(drawn, tuple):
            return drawn
        try:
            zones = StreamSettings.model_validate({**stream.model_dump(), "zones": drawn}).zones
        except ValidationError as error:
            return json_reply(400, {"error": _problem(error, drawn)})
        assert self.config is not None
        try:
            with self.writing:
                self._write(stream_id, zones)
        except ConfigError as error:  # the config would not take them: what a reload would say
            return json_reply(400, {"error": f"zones not saved: {error}"})
        except OSError as error:  # the file or its folder not writable, a full disk
            return json_reply(500, {"error": f"zones not saved: {error}"})
        self.reload()
        return self.read(Request("GET", request.path, {}))

    def _stream(self, stream_id: str) -> StreamSettings | Reply:
        """The stream as the config file says now; or the reply that says why there is none."""
        if self.config is None:
            return json_reply(409, {"error": "the daemon runs on its built-in defaults: start it with a config "
                                    "file (-c) to edit zones"})  # fmt: skip
        try:
            settings = load_settings(Settings, self.config)
        except ConfigError as error:
            return json_reply(500, {"error": f"the config file does not load: {error}"})
        stream = next((s for s in settings.streams if s.id == stream_id), None)
        if stream is None:
            return json_reply(404, {"error": f"no stream {stream_id!r} in {self.config}"})
        return stream

    def _write(self, stream_id: str, zones: list[ZoneSettings]) -> None:
        """The stream's zones replaced in the file, the rest as it was; the new file must load."""
        assert self.config is not None

        def edit(document: TOMLDocument) -> None:
            tables = document.get("streams") or []
            table = next((t for t in tables if t.get("id") == stream_id), None)
            if table is None:  # the built-in demo stream of a file that lists none
                raise ConfigError(f"{self.config} has no [[streams]] table with id = {stream_id!r} to hold them")
            written = tomlkit.aot()
            for zone in zones:
                table_of_zone = _table(_stored(zone))
                table_of_zone.add(tomlkit.nl())  # a blank line before what follows
                written.append(table_of_zone)
            table["zones"] = written

        rewrite_config(self.config, edit, self.check)  # checked as the daemon will read it on its reload


def _problem(error: ValidationError, drawn: list[dict]) -> str:
    """The first thing wrong with the zones sent, naming the zone: ``zone 'scaffold': polygon: ...``."""
    first = error.errors()[0]
    where = [str(part) for part in first["loc"][1:]]  # past "zones"
    message = first["msg"].removeprefix("Value error, ")
    if where and where[0].isdigit():
        name = drawn[int(where[0])].get("name", where[0])
        return f"zone {name!r}: {'.'.join(where[1:]) + ': ' if where[1:] else ''}{message}"
    return f"zones: {message}"


def _table(values: dict[str, Any]) -> tomlkit.items.Table:
    table = tomlkit.table()
    for key, value in values.items():
        table[key] = value
    return table


def _stored(zone: ZoneSettings) -> dict[str, Any]:
    """A zone as the file keeps it: what differs from the defaults, polygons rounded."""
    stored: dict[str, Any] = {"name": zone.name}
    if zone.polygon is not None:
        places = PLACES if zone.units == "fraction" else 1
        stored["polygon"] = [[round(x, places), round(y, places)] for x, y in zone.polygon]
        if zone.units != "fraction":
            stored["units"] = zone.units
    stored["require"] = list(zone.require)
    if zone.dwell_s is not None:
        stored["dwell_s"] = zone.dwell_s
    return stored


def _shown(zone: ZoneSettings) -> dict[str, Any]:
    return {**zone.model_dump(), "polygon": [list(point) for point in zone.polygon] if zone.polygon else None}
