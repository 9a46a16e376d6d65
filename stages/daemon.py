"""``vestwatch run``, ``vestwatch subscribe`` and ``vestwatch ctl``: the daemon and its clients."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import zmq

from pipeline.endpoints import Endpoint
from pipeline.httpauth import Guard, hash_secret
from pipeline.messages import ControlReply, ControlRequest, MessageError
from pipeline.rundir import claim
from pipeline.security import create_keys, secure_client
from pipeline.settings import ConfigError, load_settings
from pipeline.subscriber import subscribe
from pipeline.supervisor import Plan, Supervisor
from pipeline.web import serve
from stages.preflight import check_model
from stages.settings import DEFAULT_CONFIG, LOOPBACK, Settings, redact
from stages.topology import fork_server, frame_files, plan
from stages.web.observe import routes
from stages.web.review import ReviewApi

log = logging.getLogger("vestwatch")


def _unit_interval(value: Any) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{value} is outside [0, 1]")
    return number


SETTABLE = {"conf": _unit_interval, "iou": _unit_interval}  # what vestwatch ctl set may change live


def _config_path(args: argparse.Namespace) -> Path | None:
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
    config = _config_path(args)
    try:
        settings = load_settings(Settings, config)
        lock = claim(settings.runtime_dir)  # held until this process exits
        check_recordings_dir(settings)
        if "inference" in settings.pipeline.stages:
            check_model(config)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    for stream in settings.streams:
        log.info(
            "stream %s: %s (%s%s)",
            stream.id,
            redact(stream.url),
            "live" if stream.is_realtime else "offline",
            ", recorded" if stream.record else "",
        )
    publish = Endpoint.parse(settings.publish)
    host = publish.address.removeprefix("tcp://").rpartition(":")[0]
    if publish.address.startswith("tcp://") and host not in LOOPBACK and not settings.publish_keys:
        log.warning("publish: %s is open to the network without publish_keys (CURVE)", publish.address)
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

    supervisor = Supervisor(
        plan(settings).specs,
        settings.runtime_dir,
        config.resolve() if config else None,
        stall_s=settings.pipeline.stall_s,
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
    if settings.http:
        try:
            pages = routes(
                supervisor.status, settings.pipeline.stall_s, settings.runtime_dir, lambda: supervisor.streams
            )
            pages.update(review_routes(settings))
            guard = Guard(settings.http_password_hash) if settings.http_password_hash else None
            tls = (settings.http_tls_cert, settings.http_tls_key) if settings.http_tls_cert else None
            server = serve(settings.http, pages, guard=guard, tls=tls, hosts=settings.http_hosts)
        except OSError as error:
            log.error("http: cannot listen on %s (%s)", settings.http, error)
            return 2
        scheme = "https" if settings.http_tls_cert else "http"
        log.info("review page on %s://%s/ (also /api/events, /healthz, /metrics)", scheme, settings.http)
    try:
        return supervisor.run()
    finally:
        if settings.http:
            server.shutdown()
        for path in frame_files(settings.runtime_dir):  # every stage has stopped: nothing maps them now
            path.unlink(missing_ok=True)
        os.close(lock)


def review_routes(settings: Settings) -> dict:
    """The review page's API; without its event store (an unwritable folder, a damaged or locked
    database) the page still shows the cameras, and the log says why the events are missing."""
    lacking = [s.id for s in settings.streams if "eventlog" not in s.sinks]
    if lacking:
        log.warning("streams %s have no 'eventlog' sink: their events are not listed on the review page", lacking)
    try:
        return ReviewApi(settings).routes()
    except (OSError, sqlite3.Error) as error:
        log.error("review page: events unavailable: %s: %s", settings.events_db, error)
        return {}


def add_run(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the daemon (capture, preprocess, inference, a stage per stream)")
    parser.add_argument("-c", "--config", type=Path, help=f"config file (default: {DEFAULT_CONFIG.name})")
    parser.set_defaults(run=run_daemon)


def run_subscribe(args: argparse.Namespace) -> int:
    endpoint, topics, keys = args.endpoint, args.topic or ["det."], args.keys
    if endpoint is None:
        try:
            settings = load_settings(Settings, _config_path(args))
        except ConfigError as error:
            log.error("%s", error)
            return 2
        endpoint = settings.publish
        keys = keys or settings.publish_keys
    for received, (topic, message) in enumerate(subscribe(endpoint, topics, args.timeout, keys), 1):
        print(json.dumps({"topic": topic, **message}), flush=True)
        if args.count and received >= args.count:
            break
    return 0


def add_subscribe(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("subscribe", help="print published messages as JSON lines")
    parser.add_argument("--topic", action="append", default=None, help="topic prefix (repeatable; default det.)")
    parser.add_argument("--endpoint", help="publisher address (default: the config's publish endpoint)")
    parser.add_argument(
        "--keys", type=Path, help="CURVE keys folder for a daemon with publish_keys (default: the config's)"
    )
    parser.add_argument(
        "-c", "--config", type=Path, help="config whose endpoints to use (det.: pipeline.detections, else publish)"
    )
    parser.add_argument("--count", type=int, help="stop after this many messages")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds without a message")
    parser.set_defaults(run=run_subscribe, topic=None)


def request(
    endpoint: Endpoint, message: ControlRequest, keys: Path | None = None, timeout_s: float = 5.0
) -> ControlReply:
    """One request to the daemon's control channel (CURVE with ``keys``); TimeoutError if it does not answer."""
    context = zmq.Context.instance()
    socket = endpoint.peer("req").open(context, prepare=(lambda s: secure_client(s, keys)) if keys else None)
    try:
        socket.send(message.encode())
        if not socket.poll(int(timeout_s * 1000)):
            raise TimeoutError(f"no answer from {endpoint.address} in {timeout_s:.0f} s (is vestwatch running?)")
        return ControlReply.decode(socket.recv())
    finally:
        socket.close(0)


def run_ctl(args: argparse.Namespace) -> int:
    """Spread the positional words into the request's arguments, send it, print the answer."""
    words = args.target
    expected = {"status": 0, "set": 2, "pause": 1, "resume": 1, "reload": 0}[args.command]
    if len(words) != expected:
        usage = {"set": "set KEY VALUE [--stream S]", "pause": "pause STREAM", "resume": "resume STREAM"}
        log.error("usage: vestwatch ctl %s", usage.get(args.command, "status"))
        return 2
    command_args: dict[str, Any] = {}
    if args.command == "set":
        command_args = {"key": words[0], "value": words[1]}
        if args.stream:
            command_args["stream"] = args.stream
    elif args.command in ("pause", "resume"):
        command_args = {"stream": words[0]}
    try:
        keys = args.keys
        if args.endpoint:
            endpoint = Endpoint.parse(args.endpoint)
        else:
            settings = load_settings(Settings, _config_path(args))
            endpoint, keys = settings.control_endpoint, keys or settings.control_keys
        # a reload loads and checks the model in a child process first: seconds on a busy CPU
        timeout_s = 60.0 if args.command == "reload" else 5.0
        reply = request(endpoint, ControlRequest(args.command, command_args), keys, timeout_s)
    except (ConfigError, TimeoutError, MessageError, ValueError, FileNotFoundError) as error:
        log.error("%s", error)
        return 2
    if not reply.ok:
        log.error("%s", reply.error)
        return 1
    print(json.dumps(reply.result, indent=1))
    return 0


def add_ctl(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ctl", help="steer the running daemon: status, set conf|iou VALUE [--stream S], pause S, resume S, reload"
    )
    parser.add_argument("command", choices=["status", "set", "pause", "resume", "reload"])
    parser.add_argument("target", nargs="*", help="set: KEY VALUE; pause/resume: STREAM")
    parser.add_argument("--stream", help="set: only for this stream")
    parser.add_argument("-c", "--config", type=Path, help="config whose control endpoint to use")
    parser.add_argument("--endpoint", help="control endpoint, e.g. rep+bind:ipc:///run/vestwatch/control.ipc")
    parser.add_argument("--keys", type=Path, help="CURVE keys folder (default: the config's control_keys)")
    parser.set_defaults(run=run_ctl)


def run_keys(args: argparse.Namespace) -> int:
    create_keys(args.folder)
    print(
        f'CURVE keys in {args.folder}: set control_keys, publish_keys or pipeline.link_keys = "{args.folder.resolve()}"'
        " in the daemon's config;"
    )
    print("a client needs client.key_secret and server.key (vestwatch ctl|subscribe --keys FOLDER);")
    print("authorise more clients by copying their public .key files into clients/")
    return 0


def run_http_password(args: argparse.Namespace) -> int:
    """Read the secret (typed twice at a terminal, else one line of stdin) and print its hash."""
    if sys.stdin.isatty():
        secret = getpass.getpass("HTTP password: ")
        if getpass.getpass("again: ") != secret:
            log.error("the two passwords differ")
            return 2
    else:
        secret = sys.stdin.readline().rstrip("\n")
    if len(secret) < 12:
        log.error("use at least 12 characters")
        return 2
    print(f'http_password_hash = "{hash_secret(secret)}"')
    return 0


def add_http_password(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "http-password", help="hash a secret for the HTTP pages (the config line to paste; the secret is not stored)"
    )
    parser.set_defaults(run=run_http_password)


def add_keys(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="create CURVE keys for a tcp:// control endpoint")
    parser.add_argument("folder", type=Path)
    parser.set_defaults(run=run_keys)
