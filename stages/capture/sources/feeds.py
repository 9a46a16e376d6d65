"""``open_feed``: the feed for a URL, by its kind (``kinds.source_kind``)."""

from __future__ import annotations

from pathlib import Path

from stages.capture.sources.base import Feed, FeedError, FeedFrame
from stages.capture.sources.camera import CameraFeed
from stages.capture.sources.demo import demo_clip
from stages.capture.sources.images import ImageFeed
from stages.capture.sources.kinds import source_kind
from stages.capture.sources.video import CPU, Decoder, VideoFeed

__all__ = ["Decoder", "Feed", "FeedError", "FeedFrame", "open_feed"]


def open_feed(
    url: str, runtime_dir: Path, timeout_s: float = 5.0, decoder: Decoder = CPU, copy_packets: bool = False
) -> Feed:
    """``decoder``: where video (files, network streams, the demo) decodes; cameras give raw frames.
    ``copy_packets``: H.264/HEVC video brings its packets along, to be recorded as they are."""
    kind = source_kind(url)
    if kind == "demo":
        return VideoFeed(str(demo_clip(runtime_dir)), live=True, decoder=decoder, copy_packets=copy_packets)
    if kind == "camera":
        return CameraFeed(url)
    if kind == "network":
        return VideoFeed(url, live=True, timeout_s=timeout_s, decoder=decoder, copy_packets=copy_packets)
    if kind == "pictures":
        return ImageFeed(Path(url))
    return VideoFeed(url, live=False, decoder=decoder, copy_packets=copy_packets)
