"""The runtime directory (sockets, frame rings): private to its owner and to one daemon.

Anyone who can write there can plant a socket or a symlinked ring, and a second daemon on the
same directory takes over the first one's control socket. So the directory is created 0700,
an existing one must belong to this user and be writable by no one else, and the daemon holds
an exclusive lock on ``<dir>/lock`` (with its pid inside) for as long as it runs. That lock goes
with the daemon's process; its stages each hold a shared lock on the directory itself (``hold``)
until they exit, so that a daemon is not started beside stages that outlived their own.

>>> lock = claim(Path("/run/vestwatch"))  # ConfigError with one line when it cannot
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from pipeline.settings import ConfigError


def claim(runtime_dir: Path) -> int:
    """Make or check ``runtime_dir`` and lock it; returns the lock's file descriptor, to keep open."""
    try:
        runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(runtime_dir, follow_symlinks=False)
    except OSError as error:
        raise ConfigError(f"runtime_dir: {runtime_dir}: {error.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"runtime_dir: {runtime_dir} is not a directory (a symlink?)")
    if info.st_uid != os.getuid():
        raise ConfigError(f"runtime_dir: {runtime_dir} belongs to uid {info.st_uid}, not to this user")
    if info.st_mode & 0o022:
        raise ConfigError(f"runtime_dir: {runtime_dir} is writable by others (mode {stat.S_IMODE(info.st_mode):o})")
    fd = os.open(runtime_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(f"runtime_dir: {runtime_dir} is in use by another vestwatch (pid {holder})") from None
    try:
        _check_unheld(runtime_dir)
    except ConfigError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def daemon_running(runtime_dir: Path) -> bool:
    """Whether a daemon holds ``runtime_dir`` now (its sockets' files outlive it: they say nothing)."""
    try:
        fd = os.open(runtime_dir / "lock", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # a shared lock taken is released with it
    return False


def hold(runtime_dir: Path) -> int:
    """A stage's shared lock on ``runtime_dir``, held as long as the returned descriptor is open (a stage
    keeps it until it exits): ``claim`` refuses the directory meanwhile."""
    fd = os.open(runtime_dir, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def _check_unheld(runtime_dir: Path) -> None:
    """ConfigError, naming them, while processes ``hold`` ``runtime_dir``: stages of a daemon that is gone
    (the lock file says it is), stopping or hung. The exclusive lock taken to see it is let go at once."""
    fd = os.open(runtime_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pids = ", ".join(map(str, _lockers(fd))) or "?"
        raise ConfigError(
            f"runtime_dir: {runtime_dir} is still in use by stages of a vestwatch that is gone (pid {pids})"
        ) from None
    finally:
        os.close(fd)


def _lockers(fd: int) -> list[int]:
    """The processes that hold a lock on the file ``fd`` is open on, as ``/proc/locks`` lists them."""
    info = os.fstat(fd)
    inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    rows = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
    return sorted({int(row[4]) for row in rows if row[1] == "FLOCK" and row[5] == inode})
