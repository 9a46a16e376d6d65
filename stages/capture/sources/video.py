"""Video files and network streams (RTSP over TCP) through PyAV, with source timestamps."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from av.codec.hwaccel import hwdevices_available

from stages.capture.sources.base import FeedError, FeedFrame
from stages.capture.sources.kinds import redact, source_kind
from stages.media.video import VideoReader
from stages.topology import nvidia_gpu

# a camera's decoder: two threads decode 1080p30 several times over, and a 16-core server's 64
# cameras do not each keep a frame in flight per core (FFmpeg's default: about 12 MiB a thread at 1080p)
DECODE_THREADS = 2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoder:
    """Where a feed decodes: ``device`` an FFmpeg hardware type (``cuda``: NVDEC), None the CPU.
    Unless ``required``, a device that fails to open decodes on the CPU instead, for ``RETRY_DEVICE_S``."""

    device: str | None = None
    required: bool = False


CPU = Decoder()
RETRY_DEVICE_S = 600.0  # a device that failed to open is tried again then: the fault may have been the source's
UNAVAILABLE: dict[str, float] = {}  # device -> monotonic time until which this process decodes on the CPU


def decoder_for(decode: str) -> Decoder:
    """``pipeline.decode`` as a decoder: auto takes NVDEC where an NVIDIA GPU is and PyAV's FFmpeg can
    drive it (the wheel's is built with it), and the CPU should it fail to open."""
    if decode == "auto":
        return Decoder("cuda") if nvidia_gpu() and "cuda" in hwdevices_available() else CPU
    return CPU if decode == "cpu" else Decoder(decode, required=True)


class VideoFeed:
    """A ``VideoReader`` as a feed: its errors become ``FeedError`` with any password redacted
    (FFmpeg repeats the URL in its messages)."""

    def __init__(
        self, url: str, live: bool, timeout_s: float = 5.0, decoder: Decoder = CPU, copy_packets: bool = False
    ) -> None:
        self.url = url
        self.live = live
        self.from_file = source_kind(url) != "network"
        options = {"rtsp_transport": "tcp"} if url.startswith("rtsp") else None
        try:
            self.reader = open_reader(url, options, timeout_s if live else None, decoder, copy_packets)
        except ValueError as error:
            raise FeedError(redact(str(error))) from None
        self.codec = self.reader.copier.codec if self.reader.copier else None

    @property
    def fps(self) -> Fraction:
        return self.reader.fps

    @property
    def corrupt(self) -> int:
        return self.reader.corrupt_packets

    def frames(self) -> Iterator[FeedFrame]:
        try:
            for frame in self.reader.frames():
                yield FeedFrame(frame, frame.pts_s, frame.packets)
        except ValueError as error:
            raise FeedError(redact(str(error))) from None

    def close(self) -> None:
        self.reader.close()


def open_reader(
    url: str, options: dict[str, str] | None, timeout_s: float | None, decoder: Decoder, copy_packets: bool = False
) -> VideoReader:
    """A reader on ``decoder``; when the device fails, a software open tells whose fault it was."""
    device = decoder.device
    on_cpu = {"threads": DECODE_THREADS, "copy_packets": copy_packets}
    if device is None or (time.monotonic() < UNAVAILABLE.get(device, 0.0) and not decoder.required):
        return VideoReader(url, options, timeout_s, **on_cpu)
    try:
        reader = VideoReader(url, options, timeout_s, hardware=device, **on_cpu)
    except ValueError as error:
        reader = VideoReader(url, options, timeout_s, **on_cpu)  # raises if the source is at fault
        if decoder.required:
            reader.close()
            raise ValueError(f"pipeline.decode = {device!r}: {error}") from None
        UNAVAILABLE[device] = time.monotonic() + RETRY_DEVICE_S
        log.warning("%s; decoding on the CPU for %.0f min", redact(str(error)), RETRY_DEVICE_S / 60)
        return reader
    log.info("%s: decoding on %s", redact(url), reader.decoded_on)
    return reader
