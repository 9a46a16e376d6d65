"""``vestwatch report``: a period's compliance report as PDF (the ``/report`` page printed by headless
Chromium), CSV or JSON, from the events database; the daemon need not be running.

For a PDF the command serves the page and the API it reads on a loopback port of its own, with no
password (only this machine's processes reach it, for the seconds the print takes), and has Chromium
print it. ``--out`` names the format by its suffix.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from datetime import date, datetime, timedelta
from pathlib import Path

from pipeline.settings import ConfigError, load_settings
from pipeline.web import Reply, Request, Route, serve
from stages.commands.run import config_path
from stages.config import Settings
from stages.recording.compliance import GROUPS, as_csv, figures
from stages.recording.eventstore import EventStore
from stages.web.compliance import ComplianceApi
from stages.web.review import ReviewApi

log = logging.getLogger(__name__)

CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PRINT_TIMEOUT_S = 180.0
RENDER_BUDGET_MS = 60000  # Chromium's virtual time for the page to fetch and draw everything
NO_CHROMIUM = (
    "headless Chromium not found (looked for {names}): install it (Debian/Ubuntu: apt install chromium), "
    "name it with --chromium, or open http://<vestwatch>/report in a browser and print it to PDF"
)


class Watched:
    """Routes that remember the answers that went wrong: a report printed with part of it missing is refused."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.failed: list[str] = []
        self.lock = threading.Lock()
        self.routes = {path: self._watch(route) for path, route in routes.items()}

    def _watch(self, route: Route) -> Route:
        def watched(request: Request) -> Reply:
            reply = route(request)
            if reply[0] >= 400 and not request.path.endswith(".jpg"):  # a snapshot retention took is no fault
                with self.lock:
                    self.failed.append(f"{request.path}: {reply[0]} {reply[2]!r}"[:300])
            return reply

        return watched


def find_chromium(named: str | None) -> str:
    found = shutil.which(named) if named else next(filter(None, map(shutil.which, CHROMIUMS)), None)
    if not found:
        raise ConfigError(NO_CHROMIUM.format(names=named or ", ".join(CHROMIUMS)))
    return found


def print_pdf(settings: Settings, query: str, out: Path, chromium: str) -> None:
    """The ``/report`` page of ``query`` printed to ``out`` by headless Chromium."""
    # what the page reads and no more: no verdicts or acknowledgements, and faces for nobody (no password here)
    privacy = settings.privacy.model_copy(update={"reviewers_see_faces": False})
    review = ReviewApi(settings.model_copy(update={"privacy": privacy}))
    routes = review.routes() | ComplianceApi(review.store).routes()
    site = Watched({path: route for path, route in routes.items() if not path.startswith("POST ")})
    server = serve("127.0.0.1:0", site.routes)
    url = f"http://127.0.0.1:{server.server_address[1]}/report?{query}"
    try:
        with tempfile.TemporaryDirectory(prefix="vestwatch-report-") as profile:
            printed = out.with_name(f".{out.name}.printing")
            command = [chromium, "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                       "--no-pdf-header-footer", f"--virtual-time-budget={RENDER_BUDGET_MS}",
                       f"--user-data-dir={profile}", f"--print-to-pdf={printed}", url]  # fmt: skip
            if os.geteuid() == 0:
                command.insert(2, "--no-sandbox")  # Chromium refuses root otherwise
            done = subprocess.run(command, capture_output=True, text=True, timeout=PRINT_TIMEOUT_S, check=False)
            if done.returncode != 0 or not printed.is_file() or printed.stat().st_size == 0:
                printed.unlink(missing_ok=True)
                raise ConfigError(f"{chromium} did not print the report: {done.stderr.strip()[-300:]}")
            if site.failed:
                printed.unlink(missing_ok=True)
                raise ConfigError(f"report incomplete: {site.failed[0]}")
            os.replace(printed, out)
    finally:
        server.shutdown()
        review.store.close()


def day(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is no date (YYYY-MM-DD)") from None


def run_report(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(Settings, config_path(args))
        if not settings.events_db.is_file():
            raise ConfigError(f"{settings.events_db}: no events database (has the daemon run with this config?)")
        last = args.to or date.today()
        first = args.since or last - timedelta(days=6)
        if first > last:
            raise ConfigError(f"--from {first} is after --to {last}")
        suffix = args.out.suffix.lower()
        if suffix == ".pdf":
            query = f"from={first}&to={last}" + (f"&stream={args.stream}" if args.stream else "")
            print_pdf(settings, query, args.out, find_chromium(args.chromium))
        elif suffix in (".csv", ".json"):
            since = datetime.combine(first, datetime.min.time()).timestamp()
            until = datetime.combine(last + timedelta(days=1), datetime.min.time()).timestamp()
            store = EventStore(settings.events_db)
            try:
                found = figures(store, since, until, args.group, args.stream)
            finally:
                store.close()
            args.out.write_text(as_csv(found) if suffix == ".csv" else json.dumps(found, indent=1))
        else:
            raise ConfigError(f"--out {args.out}: say .pdf, .csv or .json")
    except (ConfigError, OSError, subprocess.TimeoutExpired) as error:
        log.error("%s", error)
        return 2
    log.info("report of %s to %s written to %s", first, last, args.out)
    return 0


def add_report(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="a period's compliance report: PDF (headless Chromium), CSV or JSON")
    parser.add_argument("-c", "--config", type=Path, help="the daemon's config file (where its recordings are)")
    parser.add_argument("--from", dest="since", type=day, help="first day, YYYY-MM-DD (default: 6 days before --to)")
    parser.add_argument("--to", type=day, help="last day, YYYY-MM-DD, included (default: today)")
    parser.add_argument("--stream", help="one camera (default: all)")
    parser.add_argument("--group", choices=GROUPS, default="day", help="CSV and JSON: rows per (default: day)")
    parser.add_argument("--chromium", help="the Chromium to print with (default: the first found on PATH)")
    parser.add_argument("--out", type=Path, required=True, help="report.pdf, .csv or .json")
    parser.set_defaults(run=run_report)
