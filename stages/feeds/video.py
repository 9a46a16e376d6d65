"""Video files and network streams (RTSP over TCP) through PyAV, with source timestamps."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

from stages.feeds.base import FeedError, FeedFrame
from stages.settings import redact
from stages.video import VideoReader

# a camera's decoder: two threads decode 1080p30 several times over, and a 16-core server's 64
# cameras do not each keep a frame in flight per core (FFmpeg's default: about 12 MiB a thread at 1080p)
DECODE_THREADS = 2


class VideoFeed:
    """A ``VideoReader`` as a feed: its errors become ``FeedError`` with any password redacted
    (FFmpeg repeats the URL in its messages)."""

    def __init__(self, url: str, live: bool, timeout_s: float = 5.0) -> None:
        self.url = url
        self.live = live
        self.from_file = "://" not in url
        options = {"rtsp_transport": "tcp"} if url.startswith("rtsp") else None
        try:
            self.reader = VideoReader(url, options, timeout_s if live else None, threads=DECODE_THREADS)
        except ValueError as error:
            raise FeedError(redact(str(error))) from None

    @property
    def fps(self) -> Fraction:
        return self.reader.fps

    @property
    def corrupt(self) -> int:
        return self.reader.corrupt_packets

    def frames(self) -> Iterator[FeedFrame]:
        try:
            for frame in self.reader.frames():
                yield FeedFrame(frame.image, frame.pts_s)
        except ValueError as error:
            raise FeedError(redact(str(error))) from None

    def close(self) -> None:
        self.reader.close()
