"""``vestwatch run``: the daemon (supervisor, HTTP pages) from a config."""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import tempfile
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline.endpoints import Endpoint
from pipeline.httpauth import Guard
from pipeline.plan import Plan, SupervisorConfig
from pipeline.rundir import claim
from pipeline.settings import ConfigError, load_settings
from pipeline.supervisor import Supervisor
from pipeline.web import serve
from stages.commands.preflight import check_model
from stages.config import DEFAULT_CONFIG, LOOPBACK, Settings, redact
from stages.recording.blurring import note_blurring
from stages.topology import fork_server, frame_files, plan
from stages.web.compliance import ComplianceApi
from stages.web.observe import routes
from stages.web.privacy import REVIEWER
from stages.web.recordings import RecordingsApi
from stages.web.review import ReviewApi
from stages.web.zones import ZonesApi

log = logging.getLogger("vestwatch")


def _unit_interval(value: Any) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{value} is outside [0, 1]")
    return number


SETTABLE = {"conf": _unit_interval, "iou": _unit_interval}  # what vestwatch ctl set may change live


def config_path(args: argparse.Namespace) -> Path | None:
    return args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)


def check_recordings_dir(settings: Settings) -> None:
    """The recordings folder exists (made if need be) and takes files; else one line naming it."""
    folder = settings.recordings_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigError(f"recordings_dir: {folder}: cannot write there ({error.strerror})") from None


def model_inputs(settings: Settings) -> dict:
    """What the model check depends on: the detector (not its live thresholds) and the PPE zones require."""
    return {
        "detector": settings.detector.model_dump(exclude={"conf", "iou"}),
        "require": sorted({item for stream in settings.streams for zone in stream.zones for item in zone.require}),
    }


def run_daemon(args: argparse.Namespace) -> int:
    config = config_path(args)
    try:
        settings = load_settings(Settings, config)
        lock = claim(settings.runtime_dir)  # held until this process exits
        check_recordings_dir(settings)
        if "inference" in settings.pipeline.stages:
            check_model(config)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    note_blurring(settings, time.time())
    log_streams(settings)
    supervisor = Supervisor(supervisor_config(settings, config))
    server = None
    if settings.http:
        try:
            server = serve_pages(settings, supervisor, config)
        except OSError as error:
            log.error("http: cannot listen on %s (%s)", settings.http, error)
            return 2
        scheme = "https" if settings.http_tls_cert else "http"
        log.info("review page on %s://%s/ (also /api/events, /healthz, /metrics)", scheme, settings.http)
    try:
        return supervisor.run()
    finally:
        if server is not None:
            server.shutdown()
        for path in frame_files(settings.runtime_dir):  # every stage has stopped: nothing maps them now
            path.unlink(missing_ok=True)
        os.close(lock)


def log_streams(settings: Settings) -> None:
    """A line per stream at start: what it reads (credentials redacted), live or not, recorded or not."""
    for stream in settings.streams:
        log.info(
            "stream %s: %s (%s%s)",
            stream.id,
            redact(stream.url),
            "live" if stream.is_realtime else "offline",
            ", recorded" if stream.record else "",
        )


def publish_endpoint(settings: Settings) -> Endpoint:
    """Where subscribers read; a warning when that is open to the network without CURVE."""
    publish = Endpoint.parse(settings.publish)
    host = publish.address.removeprefix("tcp://").rpartition(":")[0]
    if publish.address.startswith("tcp://") and host not in LOOPBACK and not settings.publish_keys:
        log.warning("publish: %s is open to the network without publish_keys (CURVE)", publish.address)
    return publish


def check_candidate(config: Path, candidate: Path) -> None:
    """What a reload checks, on a file about to replace ``config`` (the zones editor's): a ConfigError
    names the problem. The model is checked only when what it depends on changed."""
    fresh = load_settings(Settings, candidate)
    check_recordings_dir(fresh)
    if "inference" in fresh.pipeline.stages and model_inputs(fresh) != model_inputs(load_settings(Settings, config)):
        check_model(candidate)


def supervisor_config(settings: Settings, config: Path | None) -> SupervisorConfig:
    """The supervisor's orders from the settings: it says where to subscribe once every stage runs,
    and re-reads ``config`` on reload."""
    publish = publish_endpoint(settings)
    endpoint = publish.peer("sub").address

    def announce() -> None:
        print(f"vestwatch running: recordings in {settings.recordings_dir.resolve()}", flush=True)
        topics = "topics det.<stream>, event.<stream>"
        print(f"subscribe with: vestwatch subscribe --endpoint {endpoint}   ({topics})", flush=True)

    running = [settings]

    def reread() -> Plan:
        """The new config's plan; a ConfigError (a ValueError) refuses the reload, naming the field.
        The model is checked again only when what it depends on changed (seconds of loading)."""
        fresh = load_settings(Settings, config)
        check_recordings_dir(fresh)
        if "inference" in fresh.pipeline.stages and model_inputs(fresh) != model_inputs(running[0]):
            check_model(config)
        running[0] = fresh
        return plan(fresh)

    return SupervisorConfig(
        plan(settings).specs,
        settings.runtime_dir,
        config.resolve() if config else None,
        stall_s=settings.pipeline.stall_s,
        step_timeout_s=settings.pipeline.step_timeout_s,
        start_grace_s=settings.pipeline.start_grace_s,
        on_ready=announce,
        control=settings.control_endpoint,
        control_keys=settings.control_keys,
        publish_keys=settings.publish_keys,
        settable=SETTABLE,
        streams=[s.id for s in settings.streams],
        publish=publish,
        publish_hwm=settings.pipeline.publish_hwm,
        plan=reread,
        forkserver=fork_server(settings),
    )


def serve_pages(settings: Settings, supervisor: Supervisor, config: Path | None) -> ThreadingHTTPServer:
    """The HTTP pages (review, live view, status, metrics, the zones editor saving to ``config``), served
    from a thread; OSError: cannot listen."""
    pages = routes(supervisor.status, settings.pipeline.stall_s, settings.runtime_dir, lambda: supervisor.streams)
    pages.update(review_routes(settings))
    pages.update(ZonesApi(config, supervisor.request_reload, check_candidate).routes())
    reviewers = settings.privacy.reviewer_password_hash
    roles = {REVIEWER: reviewers} if reviewers else {}
    guard = Guard(settings.http_password_hash, roles) if settings.http_password_hash else None
    tls = (settings.http_tls_cert, settings.http_tls_key) if settings.http_tls_cert else None
    return serve(settings.http, pages, guard=guard, tls=tls, hosts=settings.http_hosts)


def review_routes(settings: Settings) -> dict:
    """The review page's API; without its event store (an unwritable folder, a damaged or locked
    database) the page still shows the cameras, and the log says why the events are missing."""
    lacking = [s.id for s in settings.streams if "eventlog" not in s.sinks]
    if lacking:
        log.warning("streams %s have no 'eventlog' sink: their events are not listed on the review page", lacking)
    try:
        review = ReviewApi(settings)
        return review.routes() | RecordingsApi(settings, review.store).routes() | ComplianceApi(review.store).routes()
    except (OSError, sqlite3.Error) as error:
        log.error("review page: events unavailable: %s: %s", settings.events_db, error)
        return {}


def add_run(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the daemon (capture, preprocess, inference, a stage per stream)")
    parser.add_argument("-c", "--config", type=Path, help=f"config file (default: {DEFAULT_CONFIG.name})")
    parser.set_defaults(run=run_daemon)
