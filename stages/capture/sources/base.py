"""What every feed provides."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np

from stages.media.video import CopiedPacket, VideoCodec, VideoFrame


@dataclass(frozen=True)
class FeedFrame:
    source: np.ndarray | VideoFrame  # a BGR picture, or a decoded frame converted only if looked at
    pts: float | None  # source presentation time, seconds
    packets: tuple[CopiedPacket, ...] = ()  # the source's own packets since the previous frame, when copied

    @property
    def image(self) -> np.ndarray:
        """BGR uint8."""
        return self.source if isinstance(self.source, np.ndarray) else self.source.image


class FeedError(Exception):
    """The source cannot be opened or was lost; the message names it (credentials redacted)."""


class Feed(Protocol):
    live: bool  # a camera or a network stream, as opposed to a file
    from_file: bool  # decodes faster than real time
    corrupt: int  # undecodable packets or images skipped so far
    fps: Fraction  # nominal frame rate, for writing what it yields as video
    codec: VideoCodec | None  # set when frames bring their packets along to be recorded as they are

    def frames(self) -> Iterator[FeedFrame]: ...

    def close(self) -> None: ...
