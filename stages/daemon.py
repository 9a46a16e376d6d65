"""``vestwatch run`` and ``vestwatch subscribe``: the daemon and its simplest client."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline.endpoints import Endpoint
from pipeline.settings import ConfigError, load_settings
from pipeline.subscriber import subscribe
from pipeline.supervisor import Supervisor
from stages.settings import DEFAULT_CONFIG, Settings, redact
from stages.topology import stage_specs

log = logging.getLogger("vestwatch")


def _config_path(args: argparse.Namespace) -> Path | None:
    return args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)


def run_daemon(args: argparse.Namespace) -> int:
    config = _config_path(args)
    try:
        settings = load_settings(Settings, config)
        if not settings.detector.weights.is_file():
            raise ConfigError(f"detector.weights: {settings.detector.weights} not found")
    except ConfigError as error:
        log.error("%s", error)
        return 2
    settings.recordings_dir.mkdir(parents=True, exist_ok=True)
    for stream in settings.streams:
        log.info(
            "stream %s: %s (%s%s)",
            stream.id,
            redact(stream.url),
            "live" if stream.is_realtime else "offline",
            ", recorded" if stream.record else "",
        )
    subscriber = Endpoint.parse(settings.publish).peer("sub").address

    def announce() -> None:
        print(f"vestwatch running: recordings in {settings.recordings_dir.resolve()}", flush=True)
        print(f"subscribe with: vestwatch subscribe --endpoint {subscriber}   (topics det.<stream>)", flush=True)

    supervisor = Supervisor(
        stage_specs(settings),
        settings.runtime_dir,
        config.resolve() if config else None,
        stall_s=settings.pipeline.stall_s,
        on_ready=announce,
    )
    return supervisor.run()


def add_run(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the daemon (capture, preprocess, inference, record)")
    parser.add_argument("-c", "--config", type=Path, help=f"config file (default: {DEFAULT_CONFIG.name})")
    parser.set_defaults(run=run_daemon)


def run_subscribe(args: argparse.Namespace) -> int:
    endpoint = args.endpoint
    if endpoint is None:
        try:
            endpoint = load_settings(Settings, _config_path(args)).publish
        except ConfigError as error:
            log.error("%s", error)
            return 2
    for received, (topic, message) in enumerate(subscribe(endpoint, args.topic or ["det."], args.timeout), 1):
        print(json.dumps({"topic": topic, **message}), flush=True)
        if args.count and received >= args.count:
            break
    return 0


def add_subscribe(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("subscribe", help="print published messages as JSON lines")
    parser.add_argument("--topic", action="append", default=None, help="topic prefix (repeatable; default det.)")
    parser.add_argument("--endpoint", help="publisher address (default: the config's publish endpoint)")
    parser.add_argument("-c", "--config", type=Path, help="config whose publish endpoint to use")
    parser.add_argument("--count", type=int, help="stop after this many messages")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds without a message")
    parser.set_defaults(run=run_subscribe, topic=None)
