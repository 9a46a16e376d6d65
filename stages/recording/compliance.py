"""Compliance figures: each stream's watched time per hour, camera and zone, in the events database.

The ``compliance`` sink adds into hourly rows (``compliance``: the camera's as zone ``''``, and one
per zone; ``footprints``: where violators stood, on a ``GRID`` over the picture); the report reads
them back summed by camera, zone, hour or day, with the events of the same period (violations
started, their durations, the time to comply: the durations of those that ended complied). An event
the reviewer judged a false alarm is counted apart, never as a violation, and its duration moves from
violating to compliant person-seconds (the reviewer saw the PPE worn). The compliance rate is
compliant person-seconds over those compliant or violating: people not seen well enough to tell,
or standing where nothing is required, count as observed only.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any, Literal

from stages.recording.eventstore import EventStore

CAMERA = ""  # the zone of a camera's own rows: everyone it saw, wherever they stood
GRID = (32, 18)  # columns, rows of the footprint grid: 16:9 cells over the picture
Group = Literal["camera", "zone", "hour", "day"]
GROUPS: tuple[Group, ...] = ("camera", "zone", "hour", "day")


@dataclass
class HourFigures:
    """Seconds of one hour of one camera (or one zone of it). ``watched_s`` is the camera's only:
    time results came; the others are person-seconds."""

    watched_s: float = 0.0
    observed_s: float = 0.0
    compliant_s: float = 0.0
    violating_s: float = 0.0
    vest_yes_s: float = 0.0
    vest_no_s: float = 0.0
    vest_unknown_s: float = 0.0
    hardhat_yes_s: float = 0.0
    hardhat_no_s: float = 0.0
    hardhat_unknown_s: float = 0.0
    people: int = 0  # people who came into view there in the hour (a restart counts those in view again)


FIGURES = [f.name for f in fields(HourFigures)]
ROW_FIELDS = [*FIGURES, "compliance", "violations", "false_alarms", "violation_s", "violation_median_s",
              "comply_median_s"]  # fmt: skip
ADD_FIGURES = f"""
INSERT INTO compliance (stream, zone, hour, {", ".join(FIGURES)}) VALUES (?, ?, ?, {", ".join("?" * len(FIGURES))})
ON CONFLICT (stream, zone, hour) DO UPDATE SET {", ".join(f"{n} = {n} + excluded.{n}" for n in FIGURES)}
"""
ADD_CELL = """
INSERT INTO footprints (stream, hour, cell, seconds) VALUES (?, ?, ?, ?)
ON CONFLICT (stream, hour, cell) DO UPDATE SET seconds = seconds + excluded.seconds
"""


def add_figures(
    store: EventStore, stream: str, hours: dict[tuple[float, str], HourFigures], cells: dict[tuple[float, int], float]
) -> None:
    """Add a stream's figures by (hour, zone) and violators' seconds by (hour, cell), in one transaction."""
    store.write(
        [
            (ADD_FIGURES, [(stream, zone, hour, *asdict(f).values()) for (hour, zone), f in hours.items()]),
            (ADD_CELL, [(stream, hour, cell, seconds) for (hour, cell), seconds in cells.items()]),
        ]
    )


def _day(when: float) -> str:
    return datetime.fromtimestamp(when).strftime("%Y-%m-%d")


def _keys(group: Group, stream: str, zones: list[str], when: float) -> list[tuple[Any, ...]]:
    """The rows of a ``group`` report that a row (zone ``CAMERA`` for the camera's) or an event counts in."""
    if group == "zone":
        return [(stream, zone) for zone in zones if zone != CAMERA]
    if CAMERA not in zones:
        return []
    return {"camera": [(stream,)], "hour": [(when - when % 3600,)], "day": [(_day(when),)]}[group]


KEY_NAMES: dict[Group, tuple[str, ...]] = {"camera": ("stream",), "zone": ("stream", "zone"), "hour": ("hour",),
                                           "day": ("day",)}  # fmt: skip


def figures(store: EventStore, since: float, until: float, group: Group, stream: str | None = None) -> dict[str, Any]:
    """The period's figures by ``group``, each row with its compliance rate and violations, and their total."""
    where, args = "hour >= ? AND hour < ?", [since, until]  # an hour counts in the period it starts in
    if stream:
        where, args = f"{where} AND stream = ?", [*args, stream]
    sums: dict[tuple[Any, ...], HourFigures] = {}
    total = HourFigures()
    for row in store.query(f"SELECT * FROM compliance WHERE {where} ORDER BY hour", args):
        counted = [(key, sums.setdefault(key, HourFigures())) for key in _keys(group, row["stream"], [row["zone"]],
                                                                                row["hour"])]  # fmt: skip
        if row["zone"] == CAMERA:
            counted.append(((), total))
        for _, into in counted:
            for name in FIGURES:
                setattr(into, name, getattr(into, name) + row[name])
    durations: dict[tuple[Any, ...], list[dict]] = {}
    where, args = "started >= ? AND started < ?", [since, until]
    if stream:
        where, args = f"{where} AND stream = ?", [*args, stream]
    for event in store.query(f"SELECT stream, zones, started, duration_s, reason, verdict FROM events WHERE {where}",
                             args):  # fmt: skip
        for key in _keys(group, event["stream"], [CAMERA, *json.loads(event["zones"])], event["started"]):
            durations.setdefault(key, []).append(dict(event))
            sums.setdefault(key, HourFigures())  # a row with events but no figures (a stage that died first)
        durations.setdefault((), []).append(dict(event))
    rows = [{**dict(zip(KEY_NAMES[group], key)), **_row(sums[key], durations.get(key, []))} for key in sorted(sums)]
    return {"from": since, "to": until, "group": group, "rows": rows, "total": _row(total, durations.get((), []))}


def _row(summed: HourFigures, events: list[dict]) -> dict[str, Any]:
    """One report row: the summed seconds (rounded), the rate, and what its events say."""
    judged_wrong = sum(e["duration_s"] for e in events if e["verdict"] == "false_alarm")
    moved = min(judged_wrong, summed.violating_s)
    summed = replace(summed, violating_s=summed.violating_s - moved, compliant_s=summed.compliant_s + moved)
    row: dict[str, Any] = {name: round(value, 1) for name, value in asdict(summed).items()}
    judged = summed.compliant_s + summed.violating_s
    row["compliance"] = round(summed.compliant_s / judged, 4) if judged > 0 else None
    violations = [e["duration_s"] for e in events if e["verdict"] != "false_alarm"]
    complied = [e["duration_s"] for e in events if e["verdict"] != "false_alarm" and e["reason"] == "complied"]
    row["violations"] = len(violations)
    row["false_alarms"] = len(events) - len(violations)
    row["violation_s"] = round(sum(violations), 1)
    row["violation_median_s"] = round(statistics.median(violations), 1) if violations else None
    row["comply_median_s"] = round(statistics.median(complied), 1) if complied else None
    return row


def footprints(store: EventStore, since: float, until: float, stream: str) -> dict[str, Any]:
    """Where a camera's violators stood in the period: seconds per cell of ``GRID``, row by row."""
    cells = [0.0] * (GRID[0] * GRID[1])
    for row in store.query("SELECT cell, sum(seconds) AS seconds FROM footprints WHERE stream = ? AND hour >= ? "
                           "AND hour < ? GROUP BY cell", [stream, since, until]):  # fmt: skip
        if 0 <= row["cell"] < len(cells):
            cells[row["cell"]] = round(row["seconds"], 1)
    return {"stream": stream, "grid": list(GRID), "cells": cells}


def _cell(value: Any) -> Any:
    """A value a spreadsheet will not run as a formula (a name may start with ``-``)."""
    return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") else value


def as_csv(report: dict[str, Any]) -> str:
    """A report's rows as CSV, the group's key columns first."""
    out = io.StringIO()
    writer = csv.DictWriter(out, [*KEY_NAMES[report["group"]], *ROW_FIELDS], lineterminator="\n")
    writer.writeheader()
    writer.writerows([{key: _cell(value) for key, value in row.items()} for row in report["rows"]])
    return out.getvalue()
