"""Whether a daemon holds a runtime directory: its lock says, its sockets' files do not."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.rundir import claim, daemon_running


def test_a_daemon_runs_while_it_holds_the_lock_and_stale_files_say_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    assert not daemon_running(folder), "no folder yet"
    fd = claim(folder)
    (folder / "control.ipc").touch()  # a socket's file, as a stopped daemon leaves it
    assert daemon_running(folder)
    assert daemon_running(folder), "asking took no lock away"
    os.close(fd)
    assert not daemon_running(folder)
