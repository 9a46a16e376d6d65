"""``vestwatch subscribe``, ``ctl``, ``keys`` and ``http-password``: the clients of a running daemon and
the secrets they use."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from pathlib import Path
from typing import Any

import zmq

from pipeline.endpoints import Endpoint
from pipeline.httpauth import hash_secret
from pipeline.messages import ControlReply, ControlRequest, MessageError
from pipeline.security import create_keys, secure_client
from pipeline.settings import ConfigError, load_settings
from pipeline.subscriber import subscribe
from stages.commands.run import config_path
from stages.config import Settings

log = logging.getLogger("vestwatch")


def run_subscribe(args: argparse.Namespace) -> int:
    endpoint, topics, keys = args.endpoint, args.topic or ["det."], args.keys
    if endpoint is None:
        try:
            settings = load_settings(Settings, config_path(args))
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
            settings = load_settings(Settings, config_path(args))
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
    print(json.dumps(_for_reading(reply.result), indent=1))
    return 0


def _for_reading(result: Any) -> Any:
    """A status as a person reads it: without the stream stages' Prometheus rows (``/metrics`` serves
    them; each figure is in the stage's figures by its own name already)."""
    stages = result.get("stages") if isinstance(result, dict) else None
    for stage in (stages or {}).values():
        if isinstance(stage, dict) and isinstance(stage.get("stats"), dict):
            stage["stats"].pop("metrics", None)
    return result


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
    if args.reviewer:
        print(f'reviewer_password_hash = "{hash_secret(secret)}"  # under [privacy], with reviewers_see_faces = true')
    else:
        print(f'http_password_hash = "{hash_secret(secret)}"')
    return 0


def add_http_password(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "http-password", help="hash a secret for the HTTP pages (the config line to paste; the secret is not stored)"
    )
    parser.add_argument(
        "--reviewer", action="store_true", help="the reviewers' secret, which alone shows faces ([privacy])"
    )
    parser.set_defaults(run=run_http_password)


def add_keys(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="create CURVE keys for a tcp:// control endpoint")
    parser.add_argument("folder", type=Path)
    parser.set_defaults(run=run_keys)
