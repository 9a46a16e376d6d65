"""The compliance report: its page at ``/report`` and the figures behind it, from the events database.

- ``GET /api/compliance?from=&to=&group=camera|zone|hour|day&stream=&format=json|csv``: the period's
  figures (``stages.recording.compliance.figures``) by group, with their total; ``from`` and ``to``
  are unix seconds or local dates (``to`` a date: to the end of that day); by default the last 7 days
- ``GET /api/compliance/footprints?stream=&from=&to=``: where that camera's violators stood
- ``GET /report?from=&to=&stream=``: the page (charts drawn in the browser as SVG: nothing from
  outside, sites are offline), printable; ``vestwatch report`` prints it to PDF
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

from pipeline.web import Reply, Request, Route
from stages.recording.compliance import GROUPS, as_csv, figures, footprints
from stages.recording.eventstore import EventStore
from stages.web.review import json_reply, query_number

REPORT_PAGE = Path(__file__).with_name("report.html")
DAY_S = 86400.0
DEFAULT_DAYS = 7
LONGEST_DAYS = 400  # a year's report and some


def moment(query: dict[str, str], key: str, default: float) -> float:
    """``key`` as unix seconds: a number, or a local date (YYYY-MM-DD: its start; for ``to``, its end)."""
    value = query.get(key, "")
    if not value:
        return default
    try:
        day = datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return query_number(query, key)
    try:
        return (day + timedelta(days=1) if key == "to" else day).timestamp()
    except (OverflowError, OSError, ValueError):  # the year 9999 and its end
        raise ValueError(f"{key} {value!r} is out of range") from None


def period(query: dict[str, str]) -> tuple[float, float]:
    """The ``from`` and ``to`` a request asks for; ValueError says what is wrong with them."""
    until = moment(query, "to", time.time())
    since = moment(query, "from", until - DEFAULT_DAYS * DAY_S)
    if not 0 < until - since <= LONGEST_DAYS * DAY_S:
        raise ValueError(f"from must be before to, and at most {LONGEST_DAYS} days before it")
    return since, until


class ComplianceApi:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    def routes(self) -> dict[str, Route]:
        page = REPORT_PAGE.read_bytes()
        return {
            "/report": lambda _: (200, "text/html; charset=utf-8", page),
            "/api/compliance": self.report,
            "/api/compliance/footprints": self.footprints,
        }

    def report(self, request: Request) -> Reply:
        query = request.query
        group = query.get("group") or "camera"
        if group not in GROUPS:
            return json_reply(400, {"error": f"group {group!r} is none of {', '.join(GROUPS)}"})
        if query.get("format", "json") not in ("json", "csv"):
            return json_reply(400, {"error": f"format {query['format']!r} is neither json nor csv"})
        try:
            since, until = period(query)
        except ValueError as error:
            return json_reply(400, {"error": str(error)})
        found = figures(self.store, since, until, group, query.get("stream") or None)  # type: ignore[arg-type]
        if query.get("format") == "csv":
            return 200, "text/csv; charset=utf-8", as_csv(found).encode()
        return json_reply(200, found)

    def footprints(self, request: Request) -> Reply:
        stream = request.query.get("stream", "")
        if not stream:
            return json_reply(400, {"error": "say which camera: ?stream=<id>"})
        try:
            since, until = period(request.query)
        except ValueError as error:
            return json_reply(400, {"error": str(error)})
        return json_reply(200, footprints(self.store, since, until, stream))
