"""Stage processes forked from one parent that imported their code once.

Every stage process used to start a fresh interpreter and import numpy, OpenCV, PyAV, the
tracker... again: about 80-140 MiB of private memory per process, twice per camera (capture
and stream stage). Here multiprocessing's fork server imports those modules once (``preload``),
freezes them out of the garbage collector (a collection would otherwise write to every object
and unshare its page), and forks each stage from itself: the imported code and data stay
shared copy-on-write, and a camera costs the memory of its own work.

The inference stage is not forked: it is one process, and CUDA must not be initialised in a
parent that forks.

Every stage it forks holds a copy of multiprocessing's "alive" pipe to it, so the fork server,
which stops when that pipe closes, would outlive a supervisor killed with SIGKILL for as long as
its stages do, and they (``pipeline.worker.end_with``) as long as it does. So it ends with the
supervisor on its own (``pipeline.forkserver_frozen``), and its stages end with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys

from pipeline import worker
from pipeline.stage import member_names

PR_SET_NAME = 15
M_ARENA_MAX = -8  # glibc mallopt


class ForkedProcess:
    """The part of ``subprocess.Popen`` the supervisor uses, for a process of the fork server."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self.process = process
        self.pid = process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.process.name, timeout or 0)
        return self.process.exitcode

    def send_signal(self, number: int) -> None:
        if self.process.exitcode is None:
            os.kill(self.pid, number)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """Forks the stages of ``kinds`` from a server that imported ``preload`` (module names)."""

    def __init__(self, kinds: set[str], preload: list[str]) -> None:
        self.kinds = kinds
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload([*preload, "pipeline.forkserver_frozen"])

    def spawn(self, kind: str, name: str, env: dict[str, str]) -> ForkedProcess:
        os.environ["VWSTAGE_SUPERVISOR"] = str(os.getpid())  # the fork server this starts, if any, ends with us
        # daemon: a supervisor that ends for any reason never waits on its stages at exit
        process = self.context.Process(target=_run_stage, args=(kind, name, env), name=name, daemon=True)
        process.start()
        return ForkedProcess(process)


def _run_stage(kind: str, name: str, env: dict[str, str]) -> None:
    """In the forked child: the supervisor's environment for this stage, its end with the fork
    server (which ends with the supervisor), then the stage as ``pipeline.worker`` runs it."""
    server = int(os.environ["VWSTAGE_FORK_SERVER"])  # its pid, which it set: getppid() once it is gone
    os.environ.clear()
    os.environ.update(env, VWSTAGE_TRIM="1")  # and what they free goes back to the system once a second
    worker.end_with(server)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15])  # ps and top show the stage, not the fork server
        # glibc gives each thread that allocates (decoder, encoder, ZeroMQ) its own arena, each
        # keeping freed frames; a stage needs no more than two (several stages of a process, two each)
        libc.mallopt(M_ARENA_MAX, 2 * len(member_names(name)))
    sys.exit(worker.main([kind, name]))
