"""Video files through PyAV (FFmpeg): decode with timestamps, encode annotated H.264, and hand out
the source's own packets for recording without re-encoding.

>>> with VideoReader(Path("site.mp4")) as video:
...     for frame in video.frames():
...         frame.index, frame.pts_s, frame.image.shape
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from itertools import count
from math import gcd
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


GRID_RATE = 120  # recorded frames are timed in steps of 1/120 s: a rate FFmpeg counts as standard
GRID_TICKS = 750  # a step in MPEG's 90 kHz: over the 180 ticks under which FFmpeg ignores a gcd of intervals


class FrameTimes:
    """Timestamps of one file's frames, strictly increasing as FFmpeg reads them, whatever the times
    asked for (equal, jittering, stepping back).

    Why more than ``max(t, last + 1)``: FFmpeg guesses a file's frame rate from the intervals of the
    frames it reads first (``avformat_find_stream_info``: 90 kHz over the gcd of all but the first
    three, or with fewer than 16 the standard rate they all fit) and, transcoding (``ffmpeg -f null``),
    retimes every frame to it: two frames closer than its guess become one instant, "non
    monotonically increasing dts". So every frame here lies on a grid of 1/``GRID_RATE`` s, at least
    a step after the one before, and the second interval is coprime with the first, the fifth with
    the fourth (that frame moved by a step or so where they are not, earlier rather than later, so
    that a clip ending at its time still holds it): either way FFmpeg finds the intervals' gcd a
    step and guesses ``GRID_RATE``, as the H.264 stream declares (FFmpeg's guess where it has too
    few intervals), and no two frames share an instant of it.

    >>> times = FrameTimes()  # 10 fps, 12 steps apart, and a frame twice
    >>> [times.place(t)[1] // GRID_TICKS for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.6)]
    [0, 12, 23, 36, 48, 59, 72, 73]
    """

    COPRIME = (2, 5)  # the intervals made coprime with the one before: FFmpeg's gcd leaves out the first three

    def __init__(self) -> None:
        self.last: int | None = None  # step of the last frame's decoding
        self.own_s: float | None = None  # the last frame's own decode time, seconds
        self.interval = 0  # the last interval, steps
        self.intervals = 0

    def _steps(self, decode_s: float) -> tuple[int, int]:
        """The step of a frame decoded at ``decode_s``, and the step it goes to."""
        own = round(decode_s * GRID_RATE)
        if self.last is None:
            return own, own
        step = max(own, self.last + 1)
        return own, self._coprime_near(step) if self.intervals + 1 in self.COPRIME else step

    def _coprime_near(self, step: int) -> int:
        """The step nearest ``step`` (the earlier of two as near) after the last one whose interval
        from it is coprime with the one before: at worst the very next step, an interval of one."""
        last = self.last or 0
        nearest_first = (candidate for distance in count() for candidate in (step - distance, step + distance))
        return next(c for c in nearest_first if c > last and gcd(self.interval, c - last) == 1)

    def lateness_s(self, decode_s: float) -> float:
        """How much later than ``decode_s`` a frame decoded then would be placed (0: on time; under 0:
        a step or so earlier, for the gcd)."""
        own, step = self._steps(decode_s)
        return (step - own) / GRID_RATE

    def place(self, shown_s: float, decode_s: float | None = None) -> tuple[int, int]:
        """(pts, dts) in 90 kHz ticks of a frame shown at ``shown_s`` and decoded at ``decode_s``
        (the same, without B-frames); a frame moved keeps its reordering delay."""
        decode_s = shown_s if decode_s is None else decode_s
        own, step = self._steps(decode_s)
        if self.last is not None:
            self.interval, self.intervals = step - self.last, self.intervals + 1
        self.last, self.own_s = step, decode_s
        shown = max(round(shown_s * GRID_RATE) + step - own, step)
        return shown * GRID_TICKS, step * GRID_TICKS


# two ticks a frame: the H.264 stream's parameter sets declare GRID_RATE
DECLARE_GRID_RATE = f"h264_metadata=tick_rate={2 * GRID_RATE}"


class DeclaredRate:
    """An H.264 stream's keyframes rewritten so that their parameter sets declare ``GRID_RATE``:
    FFmpeg takes a declared rate over the one the timestamps show where it is lower
    (``av_guess_frame_rate``), and frames come closer than a camera's or x264's declared interval
    (jitter, bursts). Timing only: the pictures are the same, bit for bit. HEVC passes as it is
    (FFmpeg does not take its declared rate so, and decodes an open GOP's leading pictures out of
    order once hevc_metadata has rewritten them), and so do parameter sets the filter cannot read."""

    def __init__(self, stream: av.VideoStream, codec: str, name: str) -> None:
        self.stream, self.name = stream, name  # name: the file, for the log
        self.rewrite = codec == "h264"  # until the filter fails
        self.filter: BitStreamFilterContext | None = None

    def packets(self, packets: Iterable[av.Packet]) -> list[av.Packet]:
        """``packets``, their keyframes rewritten (and bound for the stream)."""
        out: list[av.Packet] = []
        for packet in packets:
            out += self._declared(packet) if packet.is_keyframe and self.rewrite else [packet]
        return out

    def _declared(self, packet: av.Packet) -> list[av.Packet]:
        kept = av.Packet(bytes(packet))  # the filter takes the packet's data, even where it fails
        kept.pts, kept.dts, kept.time_base, kept.is_keyframe = packet.pts, packet.dts, packet.time_base, True
        try:  # made at the first keyframe: an encoder's stream has its parameters once it has encoded
            self.filter = self.filter or BitStreamFilterContext(DECLARE_GRID_RATE, self.stream)
            out = self.filter.filter(packet)
        except av.error.FFmpegError as error:
            log.warning("%s: parameter sets kept as they came (%s)", self.name, error)
            self.rewrite, out = False, [kept]
        for each in out:
            each.stream = self.stream
        return out


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
