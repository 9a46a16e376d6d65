"""What kind of source a URL names, the one rule that the config, capture and ``vestwatch detect`` share,
and how a URL appears in logs (credentials out).

The standard library only: the supervisor reads this through the config and must not load OpenCV or PyAV.

>>> source_kind("rtsp://10.0.0.9/live"), source_kind("0"), source_kind("site.jpg"), source_kind("demo")
('network', 'camera', 'pictures', 'demo')
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

DEMO_URL = "demo"
LIVE_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".ts", ".mpg", ".mpeg", ".wmv", ".flv"})

SourceKind = Literal["demo", "camera", "network", "pictures", "file"]


def source_kind(url: str) -> SourceKind:
    """``demo``: the built-in slideshow; ``camera``: an index or ``/dev/videoN``; ``network``: anything with
    a scheme (``rtsp://``, ``https://``); ``pictures``: an image or a folder of them; ``file``: the rest, video.

    >>> source_kind("/dev/video0"), source_kind("yard.mp4")
    ('camera', 'file')
    """
    if url == DEMO_URL:
        return "demo"
    if url.isdigit() or url.startswith("/dev/video"):
        return "camera"
    if "://" in url:
        return "network"
    path = Path(url)
    if path.suffix.lower() in IMAGE_SUFFIXES or path.is_dir():
        return "pictures"
    return "file"


def is_live(url: str) -> bool:
    """Read as it comes rather than from start to end: the demo, a camera, or a stream of a ``LIVE_SCHEMES`` scheme."""
    kind = source_kind(url)
    return kind in ("demo", "camera") or (kind == "network" and url.startswith(LIVE_SCHEMES))


def media_kind(path: Path) -> Literal["image", "video"] | None:
    """What ``vestwatch detect`` takes a file for, by its suffix; None: not an image or a video."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(\S*)@")  # greedy: up to the last @ of the word
SECRET_QUERY = re.compile(
    r"([?&;#][^=&;#\s]*(?:token|pass|pw|secret|key|auth|sig|session|credential)[^=&;#\s]*=)[^&;#\s]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` (a URL, or a message quoting one) with passwords and secret query values replaced, for
    logs: ``rtsp://user:***@host/path?channel=1&token=***``. The user part ends at the last ``@``
    of the URL, so passwords holding ``@``, ``/`` or ``:`` are covered whole; a user name without
    a password may be a token and goes too.
    """

    def userinfo(match: re.Match) -> str:
        scheme, credentials = match[1], match[2]
        user, colon, _ = credentials.partition(":")
        if "/" in user:  # an @ in the path of a URL without credentials
            return match[0]
        return f"{scheme}{user}:***@" if colon else f"{scheme}***@"

    return SECRET_QUERY.sub(r"\1***", AUTHORITY.sub(userinfo, text))
