"""Entry point of every stage process: ``python -m pipeline.worker KIND NAME``.

The stage class comes from the ``vestwatch.stages`` entry-point group by KIND (so
``pipeline`` imports no stage); it is built with ``create(name, config, heartbeat)``, once
per member for a process that runs several (``capture.cam1+cam2``).
The config path and the endpoints come from the environment the supervisor sets:
``VWSTAGE_CONFIG``, ``VWSTAGE_HEARTBEAT``, ``VWSTAGE_BUS``, ``VWSTAGE_PUBLISH``. Their
prefix is not ``VESTWATCH_`` on purpose: that one overrides config values, and
``VESTWATCH_PUBLISH`` would silently replace the ``publish`` setting in every stage.

A stage process ends with the process that started it (``end_with``), however that dies: the
supervisor (``VWSTAGE_SUPERVISOR``, its pid), or the fork server, which ends with the supervisor.
While it runs it holds ``VWSTAGE_RUNTIME_DIR`` (``pipeline.rundir.hold``), so that no new daemon
starts beside a stage that outlived its own.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path

from pipeline.endpoints import Endpoint
from pipeline.rundir import hold
from pipeline.stage import member_names, run_together

STAGE_GROUP = "vestwatch.stages"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, signal_number: int) -> None:
    """This process gets ``signal_number`` when ``parent``, which started it, dies, even by SIGKILL: Linux's
    PR_SET_PDEATHSIG, set here in the child (a ``preexec_fn`` is unsafe in a parent with threads). The
    kernel watches the thread that forked, not the process: the supervisor and the fork server start
    processes from their main thread only. A parent gone before the call has orphaned this process
    already (its parent is now a reaper): the signal comes at once."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal_number) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os.kill(os.getpid(), signal_number)


def end_with(parent: int) -> None:
    """This stage process ends when ``parent`` does: SIGTERM, on which it stops as it does for the
    supervisor (closes its recordings), and SIGKILL ``VWSTAGE_STOP_GRACE_S`` later if it has not,
    as the supervisor would kill a straggler."""
    die_with_parent(parent, signal.SIGTERM)
    grace_s = float(os.environ["VWSTAGE_STOP_GRACE_S"])
    threading.Thread(target=_kill_orphan, args=(parent, grace_s), name="orphan watchdog", daemon=True).start()


def _kill_orphan(parent: int, grace_s: float) -> None:
    """The watchdog thread: once ``parent`` is gone, ``grace_s`` for the stage to stop on the SIGTERM
    its death sent, then SIGKILL. A hung stage would otherwise never end: no supervisor is left to kill it."""
    while os.getppid() == parent:
        time.sleep(1.0)
    time.sleep(grace_s)
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    kind, name = argv
    logging.basicConfig(level=os.environ.get("VWSTAGE_LOG_LEVEL", "INFO"), format=f"[{name}] {LOG_FORMAT}")
    hold(Path(os.environ["VWSTAGE_RUNTIME_DIR"]))  # until this process exits
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
    end_with(int(os.environ["VWSTAGE_SUPERVISOR"]))
    sys.exit(main(sys.argv[1:]))
