"""Changing the config file the daemon was started with, as a person would: the one value changed,
its comments, order and other tables kept (``tomlkit``), written whole (a temporary file, synced to disk,
renamed over it, its mode and owner kept; a link is followed to the file it names), and only once the
new file is checked as the daemon's reload will read it. Two editors at once: the later wins whole."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import tomlkit
from tomlkit import TOMLDocument


def rewrite_config(config: Path, edit: Callable[[TOMLDocument], None], check: Callable[[Path, Path], None]) -> None:
    """``edit`` the parsed file in place, then ``check(config, candidate)`` (raising refuses it) and
    rename the candidate over ``config``."""
    config = config.resolve()  # a link stays a link, to the changed file
    document = tomlkit.parse(config.read_text())
    edit(document)
    handle, temporary = tempfile.mkstemp(prefix=f".{config.name}.", dir=config.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(tomlkit.dumps(document))
            out.flush()
            os.fsync(out.fileno())  # a power cut after the rename leaves the new file, not an empty one
        found = config.stat()
        os.chmod(temporary, found.st_mode & 0o7777)
        if os.geteuid() == 0:  # root editing the service's file: it stays the service's
            os.chown(temporary, found.st_uid, found.st_gid)
        check(config, Path(temporary))
        os.replace(temporary, config)
    finally:
        Path(temporary).unlink(missing_ok=True)
