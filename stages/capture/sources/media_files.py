"""Expand what the user typed (files, folders, globs) into the media files to process."""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, replace
from pathlib import Path

from stages.capture.sources.kinds import is_live, media_kind, redact, source_kind


@dataclass(frozen=True)
class MediaFile:
    path: Path
    kind: str  # "image", "video" or "live" (a camera or network stream, read until --frames)
    relative: Path  # where its outputs go under the output folder
    url: str | None = None  # live sources: what to open; ``path`` is then a name made from it


def live_name(url: str) -> Path:
    """A file stem for a live source's outputs, no credentials and no dots: ``rtsp-10-0-0-9-554-live``."""
    without_secrets = redact(url).split("?")[0]
    without_user = re.sub(r"//[^/]*@", "//", without_secrets)
    return Path(re.sub(r"[^A-Za-z0-9]+", "-", without_user).strip("-") or "camera")


def expand_sources(arguments: list[str]) -> tuple[list[MediaFile], list[str]]:
    """The media files named by ``arguments`` (folders recursively) and one error line per argument that named none."""
    files: list[MediaFile] = []
    errors: list[str] = []
    for argument in arguments:
        path = Path(argument)
        if is_live(argument) and source_kind(argument) != "demo" and not path.exists():
            name = live_name(argument)
            files.append(MediaFile(name, "live", name, argument))
        elif path.is_dir():
            found = [p for p in sorted(path.rglob("*")) if p.is_file() and media_kind(p)]
            files += [MediaFile(p, media_kind(p), p.relative_to(path)) for p in found]
            if not found:
                errors.append(f"{argument}: folder holds no image or video files")
        elif path.is_file():
            kind = media_kind(path)
            if kind:
                files.append(MediaFile(path, kind, Path(path.name)))
            else:
                errors.append(f"{argument}: not an image or video file type ({path.suffix or 'no suffix'})")
        elif glob.has_magic(argument):
            found = [Path(p) for p in sorted(glob.glob(argument, recursive=True))]
            matched = [MediaFile(p, media_kind(p), Path(p.name)) for p in found if p.is_file() and media_kind(p)]
            files += matched
            if not matched:
                errors.append(f"{argument}: pattern matches no image or video files")
        else:
            errors.append(f"{argument}: no such file or folder")
    return _unique_outputs(files), errors


def _unique_outputs(files: list[MediaFile]) -> list[MediaFile]:
    """Give same-named inputs from different places distinct output names (name, name-2, ...)."""
    seen: dict[Path, int] = {}
    unique = []
    for media in files:
        count = seen.get(media.relative, 0) + 1
        seen[media.relative] = count
        relative = media.relative if count == 1 else media.relative.with_stem(f"{media.relative.stem}-{count}")
        unique.append(replace(media, relative=relative))
    return unique
