"""Video files through PyAV (FFmpeg): decode with timestamps, encode annotated H.264, and hand out
the source's own packets for recording without re-encoding.

>>> with VideoReader(Path("site.mp4")) as video:
...     for frame in video.frames():
...         frame.index, frame.pts_s, frame.image.shape
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import av
import cv2
import numpy as np
from av.bitstream import BitStreamFilterContext
from av.codec.hwaccel import HWAccel

log = logging.getLogger(__name__)


def yuv420p_frame(image: np.ndarray) -> av.VideoFrame:
    """A BGR image with even sides as the yuv420p frame x264 encodes. OpenCV's vectorised conversion
    (BT.601, limited range, as swscale's) takes 2.2 ms of CPU at 1080p against swscale's 4.9: a
    64-camera server records every frame of every camera."""
    return av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")


# codecs MPEG-TS carries that a recording can copy, with the filter that turns MP4's length-prefixed
# units (avcC/hvcC extradata) into the Annex B start-code form TS needs, parameter sets in band
COPYABLE = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}


@dataclass(frozen=True)
class VideoCodec:
    """What a recording of copied packets needs to know of the source's video."""

    name: str  # FFmpeg's codec name: h264 or hevc
    width: int
    height: int


@dataclass(frozen=True)
class CopiedPacket:
    """One compressed frame as the source sent it, in Annex B, timestamps in ``time_base``."""

    data: bytes
    pts: int | None
    dts: int | None
    time_base: Fraction
    keyframe: bool


class PacketCopier:
    """A stream's packets made self-contained for MPEG-TS: every keyframe carries the parameter
    sets a player needs to start there. MP4 (avcC) packets are rewritten to Annex B; a network
    stream whose parameter sets came only out of band (RTSP's SDP) gets them repeated in front
    of each keyframe."""

    def __init__(self, stream: av.VideoStream) -> None:
        context = stream.codec_context
        self.codec = VideoCodec(context.name, context.width, context.height)
        extradata = context.extradata or b""
        if extradata[:1] == b"\x01":
            description = COPYABLE[context.name]
        elif extradata:
            description = "dump_extra=freq=keyframe"
        else:
            description = None  # nothing out of band: the parameter sets are in the stream
        self.filter = BitStreamFilterContext(description, stream) if description else None

    def copy(self, packet: av.Packet) -> list[CopiedPacket]:
        out = self.filter.filter(packet) if self.filter else [packet]
        return [CopiedPacket(bytes(p), p.pts, p.dts, p.time_base, p.is_keyframe) for p in out if p.size]


@dataclass(frozen=True)
class VideoFrame:
    index: int
    pts_s: float | None  # presentation time in seconds, from the container
    decoded: av.VideoFrame
    packets: tuple[CopiedPacket, ...] = ()  # copying: the source's packets since the previous frame

    @cached_property
    def image(self) -> np.ndarray:
        """BGR uint8, converted when first asked for: a frame nobody looks at (over the stream's fps, not
        detected while its packets are recorded) costs no conversion (some 4 ms of CPU at 1080p)."""
        return self.decoded.to_ndarray(format="bgr24")


class VideoReader:
    """Decoded frames of a file's or a URL's first video stream; undecodable packets are skipped and counted."""

    def __init__(
        self,
        path: Path | str,
        options: dict[str, str] | None = None,
        timeout_s: float | None = None,
        threads: int = 0,
        hardware: str | None = None,
        copy_packets: bool = False,
    ) -> None:
        """``threads``: decoder threads, 0 for FFmpeg's choice (about one per core). ``hardware``: an
        FFmpeg device type (``cuda``: NVDEC) that decodes, frames copied back to memory; a codec the
        device lacks decodes in software. ``copy_packets``: each frame brings the source's packets
        along, where its codec can be recorded as it is (``copier`` is None where not)."""
        self.path = path
        self.hardware = hardware
        timeout = (timeout_s, timeout_s) if timeout_s else None
        # the device's primary context: every reader (and reconnect) of a process shares one CUDA
        # context instead of creating its own, each some 100s of MiB of GPU memory
        options = {"primary_ctx": "1"} if hardware == "cuda" else None
        accel = HWAccel(device_type=hardware, allow_software_fallback=True, options=options) if hardware else None
        try:
            self.container = av.open(str(path), options=options or {}, timeout=timeout, hwaccel=accel)
        except (av.error.FFmpegError, OSError) as error:
            on = f" to decode on {hardware}" if hardware else ""
            raise ValueError(f"{path}: cannot open{on} ({error})") from None
        if not self.container.streams.video:
            self.container.close()
            raise ValueError(f"{path}: no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = threads
        self.corrupt_packets = 0
        copyable = copy_packets and self.stream.codec_context.name in COPYABLE
        self.copier = PacketCopier(self.stream) if copyable else None

    @property
    def decoded_on(self) -> str:
        """``cpu``, or the hardware device that decodes."""
        return self.hardware if self.hardware and self.stream.codec_context.is_hwaccel else "cpu"

    @property
    def fps(self) -> Fraction:
        return self.stream.average_rate or self.stream.guessed_rate or Fraction(25)

    @property
    def frame_count(self) -> int | None:
        """As the container declares it (0 or None when it does not know)."""
        return self.stream.frames or None

    def frames(self) -> Iterator[VideoFrame]:
        index = 0
        held: list[CopiedPacket] = []  # copied since the last frame out
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as error:  # a broken container or a lost connection
                raise ValueError(f"{self.path}: read failed after {index} frames ({error})") from None
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:  # a corrupt packet: skip it (recorded all the same, if copied)
                self.corrupt_packets += 1
                decoded = []
            if self.copier is not None and packet.size:  # after decoding: the filter takes the packet's data
                held += self.copier.copy(packet)
            for frame in decoded:
                pts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
                yield VideoFrame(index, pts, frame, tuple(held))
                held.clear()
                index += 1

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """H.264 (yuv420p) in MP4; the frame size is fixed by the first frame written."""

    def __init__(self, path: Path, fps: Fraction, crf: int = 23) -> None:
        self.path = path
        self.fps = fps
        self.crf = crf
        self.container = av.open(str(path), mode="w")
        self.stream: av.VideoStream | None = None

    def write(self, image: np.ndarray) -> None:
        if self.stream is None:
            h, w = image.shape[:2]
            self.stream = self.container.add_stream("libx264", rate=self.fps)
            self.stream.width, self.stream.height = w - w % 2, h - h % 2  # yuv420p needs even sides
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        frame = yuv420p_frame(image[: self.stream.height, : self.stream.width])
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        if self.stream is not None:
            self.container.mux(self.stream.encode(None))
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
