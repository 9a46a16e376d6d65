"""Imported last by the fork server, after the stages' modules.

The fork server ends with the supervisor that started it (``VWSTAGE_SUPERVISOR``), however that
dies: SIGKILL, as it has nothing to close; the stages it forks end with it, checking its pid,
``VWSTAGE_FORK_SERVER``. And every object so far is moved out of the garbage collector's reach,
so that no collection in a forked stage writes to (and so unshares) the pages they live on."""

import gc
import os
import signal

from pipeline.worker import die_with_parent

die_with_parent(int(os.environ["VWSTAGE_SUPERVISOR"]), signal.SIGKILL)
os.environ["VWSTAGE_FORK_SERVER"] = str(os.getpid())
gc.collect()
gc.freeze()
