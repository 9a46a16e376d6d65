"""Entry point of every stage process: ``python -m pipeline.worker KIND NAME``.

The stage class comes from the ``vestwatch.stages`` entry-point group by KIND (so
``pipeline`` imports no stage); it is built with ``create(name, config, heartbeat)``, once
per member for a process that runs several (``capture.cam1+cam2``).
The config path and the endpoints come from the environment the supervisor sets:
``VWSTAGE_CONFIG``, ``VWSTAGE_HEARTBEAT``, ``VWSTAGE_BUS``, ``VWSTAGE_PUBLISH``. Their
prefix is not ``VESTWATCH_`` on purpose: that one overrides config values, and
``VESTWATCH_PUBLISH`` would silently replace the ``publish`` setting in every stage.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from pipeline.endpoints import Endpoint
from pipeline.stage import member_names, run_together

STAGE_GROUP = "vestwatch.stages"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: list[str]) -> int:
    kind, name = argv
    logging.basicConfig(level=os.environ.get("VWSTAGE_LOG_LEVEL", "INFO"), format=f"[{name}] {LOG_FORMAT}")
    (entry,) = [e for e in entry_points(group=STAGE_GROUP) if e.name == kind] or [None]
    if entry is None:
        logging.error("no stage kind %r in the %s entry points", kind, STAGE_GROUP)
        return 2
    config = os.environ.get("VWSTAGE_CONFIG")
    heartbeat = os.environ.get("VWSTAGE_HEARTBEAT")
    create = entry.load()
    stages = [
        create(member, Path(config) if config else None, Endpoint.parse(heartbeat) if heartbeat else None)
        for member in member_names(name)
    ]
    return stages[0].run() if len(stages) == 1 else run_together(stages)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
