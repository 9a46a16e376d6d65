"""Video files and network streams (RTSP over TCP) through PyAV, with source timestamps."""

from __future__ import annotations

from collections.abc import Iterator

import av

from stages.feeds.base import FeedError, FeedFrame
from stages.settings import redact


class VideoFeed:
    def __init__(self, url: str, live: bool, timeout_s: float = 5.0) -> None:
        self.url = url
        self.live = live
        self.corrupt = 0
        self.from_file = "://" not in url
        options = {"rtsp_transport": "tcp"} if url.startswith("rtsp") else {}
        try:
            self.container = av.open(url, options=options, timeout=(timeout_s, timeout_s) if live else None)
        except (av.error.FFmpegError, OSError) as error:
            raise FeedError(redact(f"{url}: cannot open ({error})")) from None  # FFmpeg repeats the URL
        if not self.container.streams.video:
            self.container.close()
            raise FeedError(redact(f"{url}: no video stream"))
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"

    def frames(self) -> Iterator[FeedFrame]:
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as error:
                raise FeedError(redact(f"{self.url}: read failed ({error})")) from None
            try:
                decoded = packet.decode()
            except (av.error.InvalidDataError, av.error.FFmpegError):
                self.corrupt += 1
                continue
            for frame in decoded:
                pts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
                yield FeedFrame(frame.to_ndarray(format="bgr24"), pts)

    def close(self) -> None:
        self.container.close()
