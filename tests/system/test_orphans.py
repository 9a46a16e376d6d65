"""A supervisor killed with SIGKILL takes its stages with it (those started afresh and those forked from
the fork server, and the fork server), and no new daemon starts beside stages that outlive theirs."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from pipeline.rundir import hold
from tests.harness import Daemon
from tests.harness import vestwatch as run_cli

STAGES = ("capture.cam", "stream.cam", "inference")
ORPHANS_STOP_S = 6.0  # on their SIGTERM, before their fallback SIGKILL (stop_grace_s, 8 s) could do it


def stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(root: int) -> set[int]:
    """Every process below ``root`` now: stages, fork server, resource tracker and whatever they started."""
    tree: dict[int, list[int]] = {}
    for pid in (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()):
        with contextlib.suppress(OSError):  # gone meanwhile
            tree.setdefault(int(stat(pid)[1]), []).append(pid)
    found, todo = set(), [root]
    while todo:
        below = tree.get(todo.pop(), [])
        found.update(below)
        todo += below
    return found


def running(pid: int) -> bool:
    """Alive: an orphan that died may stay a zombie until a reaper (pid 1 here) collects it."""
    try:
        return stat(pid)[0] not in ("Z", "X")
    except OSError:
        return False


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Those of ``pids`` still running after ``timeout`` seconds; polled, returns as soon as none is."""
    deadline = time.monotonic() + timeout
    while (left := {pid for pid in pids if running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "fresh"])
def test_stages_die_with_a_killed_supervisor_and_none_runs_beside_a_new_one(
    daemon, make_video, fork_server: bool
) -> None:
    clip = make_video("clip.mp4", seconds=2, fps=10)
    streams = [{"id": "cam", "url": str(clip), "loop": True, "realtime": True}]
    first: Daemon = daemon(streams, pipeline={"fork_server": fork_server})
    first.wait_ready()
    supervisor = first.process.pid
    stages = {first.stage_pid(name) for name in STAGES}
    tree = descendants(supervisor)
    assert stages <= tree
    server = {int(stat(first.stage_pid("capture.cam"))[1])} - {supervisor}
    assert bool(server) == fork_server, "the capture stage is forked from the fork server when there is one"
    try:
        os.kill(supervisor, signal.SIGKILL)
        first.process.wait(10)
        left = wait_gone(tree, timeout=ORPHANS_STOP_S)
        assert not left, f"still running after their supervisor died: {sorted(left)} (stages {sorted(stages)})"
    finally:
        with contextlib.suppress(ProcessLookupError):  # none left behind to record on when it fails
            os.killpg(supervisor, signal.SIGKILL)

    lock = hold(first.runtime_dir)  # as a stage that outlived its supervisor holds it
    try:
        refused = run_cli("run", "-c", first.config, timeout=60)
    finally:
        os.close(lock)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert f"still in use by stages of a vestwatch that is gone (pid {os.getpid()})" in refused.stderr
    second = daemon(streams, pipeline={"fork_server": fork_server})
    second.wait_ready()  # once they are gone, it starts where they were
    assert second.stop()[0] == 0
