"""The runtime directory (sockets, frame rings): private to its owner and to one daemon.

Anyone who can write there can plant a socket or a symlinked ring, and a second daemon on the
same directory takes over the first one's control socket. So the directory is created 0700,
an existing one must belong to this user and be writable by no one else, and the daemon holds
an exclusive lock on ``<dir>/lock`` (with its pid inside) for as long as it runs.

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
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
