"""The ``vestwatch`` command: a thin shell whose subcommands are plugged in by entry points.

``pipeline`` knows no stage, so each subcommand registers itself through the
``vestwatch.commands`` entry-point group (see ``pyproject.toml``): an entry point
is a function ``add(subparsers)`` that adds one subparser and sets its ``run``
default to a function ``run(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points

COMMAND_GROUP = "vestwatch.commands"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vestwatch", description="Safety-vest detection for site cameras.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        entry.load()(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
